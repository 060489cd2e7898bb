"""The choice vocabulary, defined once (pure Python: the math modules import it without Django).

Canonical choices name the comparison's own order (A = ``response_a``); screen choices name what
the annotator saw (left / right). ``annotation.services.judgments.choice_from_screen`` is the one
place that maps a screen choice to a canonical one.
"""

from __future__ import annotations

from typing import Literal

A, B, TIE, BOTH_BAD = "A", "B", "tie", "both_bad"
CHOICES: tuple[str, ...] = (A, B, TIE, BOTH_BAD)
# Integer codes of the numeric frames (quality.py, drift.py): the position in CHOICES.
CHOICE_CODES: dict[str, int] = {choice: code for code, choice in enumerate(CHOICES)}
# What a choice becomes when A and B trade places (swapped re-shows).
SWAPPED: dict[str, str] = {A: B, B: A, TIE: TIE, BOTH_BAD: BOTH_BAD}
DIRECTIONAL: tuple[str, ...] = (A, B)

LEFT, RIGHT = "left", "right"
ScreenChoice = Literal["left", "right", "tie", "both_bad"]
SCREEN_CHOICES: tuple[str, ...] = (LEFT, RIGHT, TIE, BOTH_BAD)
