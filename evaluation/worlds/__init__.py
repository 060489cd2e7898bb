"""Worlds: task families whose true utility is computable from text (DESIGN section 5).

A world lets the whole loop (annotation, reward model, policy, gap) run with no human and no hub
model, and makes the gap exactly measurable: the true utility r* of any response, including free
text a trained policy writes, is ``world.utility(prompt, text)``.

Every world is one module ``evaluation/worlds/<name>.py`` that exposes ``WORLD``, an object
satisfying :class:`World`. ``get_world(name)`` imports it on first use, so adding a second world
takes that one module and nothing else. World modules are plain Python: no ORM, no Django.

Feature names shared by every world (others may be added freely):

- ``length``: length of the text in hundreds of characters (the unit of
  ``AnnotatorQuality.length_bias``);
- ``agrees_with_user``: 1.0 when the text endorses a wrong belief the user stated, else 0.0.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["World", "WorldPrompt", "get_world", "world_names"]


@dataclass(frozen=True)
class WorldPrompt:
    """One prompt of a world.

    ``turns`` is the conversation as annotators see it (role/content dicts). ``metadata`` holds
    what the world needs to score answers, e.g. ``answer`` (the correct value) and
    ``user_belief`` (the wrong value the user stated, or None). Everything in ``metadata`` must
    be recoverable from ``turns`` by ``World.parse_prompt``: a simulated annotator knows only
    what is on the screen.
    """

    turns: list[dict[str, str]]
    category: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The last user turn's text."""
        users = [t["content"] for t in self.turns if t.get("role") == "user"]
        return users[-1] if users else ""


@runtime_checkable
class World(Protocol):
    """What every world provides. All methods are deterministic given their inputs."""

    name: str
    #: Every category, in a fixed order.
    categories: tuple[str, ...]
    #: Categories kept out of training data to measure distribution shift (DESIGN section 7, S).
    held_out_categories: frozenset[str]

    def generate_prompts(
        self, n: int, seed: int, *, categories: tuple[str, ...] | list[str] | None = None
    ) -> list[WorldPrompt]:
        """Return ``n`` prompts drawn with ``seed``; ``categories`` restricts them (None: all).

        The same (n, seed, categories) gives the same list. Categories are visited in shuffled
        rounds, so any n >= len(categories) covers every category asked for.
        """
        ...

    def candidate_responses(self, prompt: WorldPrompt, rng: random.Random) -> list[str]:
        """Return candidate replies spanning the world's axes of variation (distinct texts)."""
        ...

    def degraded_responses(
        self, prompt: WorldPrompt, text: str, rng: random.Random
    ) -> dict[str, str]:
        """Return known-worse transforms of ``text`` keyed by transform name.

        DESIGN section 3 (b): e.g. ``truncate``, ``wrong_number``, ``unrelated``. Each value
        scores strictly lower utility than ``text`` when ``text`` is a good reply, and keeps
        ``text``'s length where the transform allows (a truncation cannot), so that length does
        not tell a degraded calibration item from a regular one.
        """
        ...

    def utility(self, prompt: WorldPrompt, text: str) -> float:
        """Return the true utility r* of ``text`` as a reply to ``prompt``, from the text alone."""
        ...

    def features(self, prompt: WorldPrompt, text: str) -> dict[str, float]:
        """Return named features of the text (at least ``length`` and ``agrees_with_user``)."""
        ...

    def parse_prompt(self, turns: list[dict[str, str]]) -> WorldPrompt | None:
        """Recover the prompt, with its checkable answer, from the visible turns.

        This is what a competent annotator does on reading the question. Returns None for
        turns the world cannot read (e.g. a prompt that came from elsewhere).
        """
        ...


_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def world_names() -> list[str]:
    """Names of every world module in this package."""
    return sorted(
        m.name for m in pkgutil.iter_modules(__path__)
        if _NAME_RE.match(m.name) and not m.ispkg
    )


def get_world(name: str) -> World:
    """Return the world called ``name``; raise ValueError naming the known worlds if none is."""
    if not _NAME_RE.match(name or "") or name not in world_names():
        raise ValueError(
            f"Unknown world {name!r}; known worlds: {', '.join(world_names()) or 'none'}."
        )
    module = importlib.import_module(f"{__name__}.{name}")
    world = getattr(module, "WORLD", None)
    if not isinstance(world, World):
        raise ValueError(f"Module {module.__name__} defines no WORLD satisfying World.")
    return world
