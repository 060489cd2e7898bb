"""Transformations that make degraded calibration pairs, and the scoring of preference
calibration answers. Pure functions, no ORM.

DESIGN section 3: a degraded pair holds a response and a known-worse transform of it (truncated,
a wrong number, an unrelated answer), so its gold is certain without pretending that
preferences have one right answer. A swapped re-show and a transitivity closer are scored
against the annotator's own earlier answers.
"""

from __future__ import annotations

import random
import re

TRANSFORMS = ("truncate", "wrong_number", "unrelated")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_SWAP = {"A": "B", "B": "A", "tie": "tie", "both_bad": "both_bad"}


class TransformError(ValueError):
    """The transformation does not apply to this text (say, no number to change)."""


def degrade_truncate(text: str) -> str:
    """Cut the text to about 40% of its words, mid-thought."""
    words = text.split()
    if len(words) < 6:
        raise TransformError("too short to truncate meaningfully (fewer than 6 words)")
    return " ".join(words[: max(2, int(len(words) * 0.4))])


def degrade_wrong_number(text: str, rng: random.Random) -> str:
    """Replace the last number in the text with a different, plausible one."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        raise TransformError("the text holds no number to change")
    m = matches[-1]
    value = float(m.group())
    scale = 1 if abs(value) < 100 else max(1, abs(value) // 10)
    wrong = value + rng.choice([-10, -2, -1, 1, 2, 10]) * scale
    decimals = len(m.group().split(".")[1]) if "." in m.group() else 0
    formatted = f"{wrong:.{decimals}f}"
    return text[: m.start()] + formatted + text[m.end():]


def degrade(text: str, transform: str, *, rng: random.Random, unrelated_pool: list[str]) -> str:
    """Return the degraded version of ``text``; raise TransformError when it cannot apply."""
    if transform == "truncate":
        return degrade_truncate(text)
    if transform == "wrong_number":
        return degrade_wrong_number(text, rng)
    if transform == "unrelated":
        others = [t for t in unrelated_pool if t.strip() and t != text]
        if not others:
            raise TransformError("no unrelated response to borrow")
        return rng.choice(others)
    raise TransformError(f"unknown transform {transform!r}; use one of {TRANSFORMS}")


def gold_correct(choice: str, *, gold_choice: str | None, gold_accepts: list[str]) -> bool | None:
    """Whether a choice on a gold item is correct; the tolerance set wins over the single gold."""
    accepted = list(gold_accepts) or ([gold_choice] if gold_choice else [])
    if not accepted:
        return None
    return choice in accepted


def reshow_consistent(reshow_choice: str, original_choice: str) -> bool:
    """A swapped re-show (canonical A and B exchanged) agrees with the original answer."""
    return _SWAP[reshow_choice] == original_choice


def transitive(x_over_y: int, y_over_z: int, x_over_z: int) -> bool:
    """Orientations +1/-1 of three pairwise answers on a triangle; a cycle is intransitive."""
    return not (x_over_y == y_over_z == -x_over_z)

