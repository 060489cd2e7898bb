"""Transformations that make degraded calibration pairs, and the scoring of preference
calibration answers. Pure functions, no ORM.

DESIGN section 3: a degraded pair holds a response and a known-worse transform of it (truncated,
a wrong number, an unrelated answer), so its gold is certain without pretending that
preferences have one right answer. A swapped re-show and a transitivity closer are scored
against the annotator's own earlier answers.

A degraded reply must not give its item away by its length (a careful annotator who notices that
the worse reply of some pairs is always shorter learns which pairs are gold). A wrong number keeps
the original's width where a plausible one exists, and an unrelated answer is chosen among those
of similar length. Truncation cannot keep the length: it is shorter by construction, and a
truncated reply ends abruptly; that tell is inherent to the transform.
"""

from __future__ import annotations

import random
import re

from annotation.choices import SWAPPED

TRANSFORMS = ("truncate", "wrong_number", "unrelated")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class TransformError(ValueError):
    """The transformation does not apply to this text (say, no number to change)."""


# An unrelated answer within this relative length of the original counts as length-matched.
UNRELATED_LENGTH_TOLERANCE = 0.2
# When none is that close, the choice is among this many nearest in length.
UNRELATED_NEAREST = 5


def degrade_truncate(text: str) -> str:
    """Cut the text to about 40% of its words, mid-thought (shorter by construction)."""
    words = text.split()
    if len(words) < 6:
        raise TransformError("too short to truncate meaningfully (fewer than 6 words)")
    return " ".join(words[: max(2, int(len(words) * 0.4))])


def degrade_wrong_number(text: str, rng: random.Random) -> str:
    """Replace the last number in the text with a different, plausible one of the same width.

    The wrong value is off by one, two or ten (scaled for large numbers); among those, one
    written with as many characters as the original is chosen whenever one exists (9 -> 8,
    not 9 -> 19), so the degraded reply keeps the original's length.
    """
    matches = list(_NUMBER.finditer(text))
    if not matches:
        raise TransformError("the text holds no number to change")
    m = matches[-1]
    value = float(m.group())
    scale = 1 if abs(value) < 100 else max(1, abs(value) // 10)
    decimals = len(m.group().split(".")[1]) if "." in m.group() else 0
    options = [f"{value + step * scale:.{decimals}f}" for step in (-10, -2, -1, 1, 2, 10)]
    options = [o for o in options if float(o) != value]
    same_width = [o for o in options if len(o) == len(m.group())]
    formatted = rng.choice(same_width or options)
    return text[: m.start()] + formatted + text[m.end():]


def pick_unrelated(text: str, pool: list[str], rng: random.Random) -> str:
    """Choose an unrelated answer for ``text`` from ``pool``, matched to its length.

    Candidates within UNRELATED_LENGTH_TOLERANCE of the text's length are drawn from uniformly;
    when none is, the UNRELATED_NEAREST nearest in length. Raises TransformError on an empty pool.
    """
    others = [t for t in pool if t.strip() and t != text]
    if not others:
        raise TransformError("no unrelated response to borrow")
    target = len(text)
    close = [t for t in others if abs(len(t) - target) <= UNRELATED_LENGTH_TOLERANCE * target]
    if not close:
        close = sorted(others, key=lambda t: abs(len(t) - target))[:UNRELATED_NEAREST]
    return rng.choice(close)


def degrade(text: str, transform: str, *, rng: random.Random, unrelated_pool: list[str]) -> str:
    """Return the degraded version of ``text``; raise TransformError when it cannot apply."""
    if transform == "truncate":
        return degrade_truncate(text)
    if transform == "wrong_number":
        return degrade_wrong_number(text, rng)
    if transform == "unrelated":
        return pick_unrelated(text, unrelated_pool, rng)
    raise TransformError(f"unknown transform {transform!r}; use one of {TRANSFORMS}")


def gold_correct(choice: str, *, gold_choice: str | None, gold_accepts: list[str]) -> bool | None:
    """Whether a choice on a gold item is correct; the tolerance set wins over the single gold."""
    accepted = list(gold_accepts) or ([gold_choice] if gold_choice else [])
    if not accepted:
        return None
    return choice in accepted


def reshow_consistent(reshow_choice: str, original_choice: str) -> bool:
    """A swapped re-show (canonical A and B exchanged) agrees with the original answer."""
    return SWAPPED[reshow_choice] == original_choice


def transitive(x_over_y: int, y_over_z: int, x_over_z: int) -> bool:
    """Orientations +1/-1 of three pairwise answers on a triangle; a cycle is intransitive."""
    return not (x_over_y == y_over_z == -x_over_z)

