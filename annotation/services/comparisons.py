"""Writing prompts, responses and comparisons built by a caller (a world, a generator).

File imports go through ``comparisons_import`` (every pair of a row, one kind per row). Callers
that build richer sets, such as evaluation's world campaigns (regular pairs and calibration items
on one prompt, response features, degraded replies), describe them here and this service writes
them, so no other app writes annotation tables itself (DESIGN section 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction

from annotation.errors import ApplicationError
from annotation.models import Campaign, Choice, Comparison, Prompt, Response


@dataclass(frozen=True)
class ResponseSpec:
    text: str
    source_model: str = ""
    source_version: str = ""
    source_run: str = ""
    # Never shown to annotators: a world's features (length, correctness, utility, ...).
    features: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ComparisonSpec:
    """A pair of the prompt's responses, by index into ``PromptSpec.responses``."""

    a: int
    b: int
    kind: str = Comparison.Kind.REGULAR
    gold_choice: str | None = None
    gold_accepts: tuple[str, ...] = ()
    calibration_type: str = ""


@dataclass(frozen=True)
class PromptSpec:
    turns: list[dict[str, str]]
    responses: list[ResponseSpec]
    comparisons: list[ComparisonSpec]
    category: str = ""
    external_id: str = ""
    source: str = ""


@dataclass(frozen=True)
class BulkResult:
    prompts: int
    responses: int
    comparisons: int
    calibration: int


# Scored against the annotator's own answers, so they carry no gold (see the model's constraint).
_SELF_SCORED = (Comparison.CalibrationType.SWAPPED_RESHOW, Comparison.CalibrationType.TRANSITIVITY)


def _check(index: int, spec: PromptSpec) -> None:
    n = len(spec.responses)
    for c in spec.comparisons:
        if not (0 <= c.a < n and 0 <= c.b < n) or c.a == c.b:
            raise ApplicationError(
                f"Prompt {index}: a comparison needs two distinct responses of the prompt "
                f"(got {c.a}, {c.b} of {n})."
            )
        if c.kind not in Comparison.Kind.values:
            raise ApplicationError(f"Prompt {index}: unknown comparison kind {c.kind!r}.")
        if c.gold_choice is not None and c.gold_choice not in Choice.values:
            raise ApplicationError(f"Prompt {index}: unknown gold choice {c.gold_choice!r}.")
        if c.gold_choice is not None and c.gold_accepts and c.gold_choice not in c.gold_accepts:
            raise ApplicationError(f"Prompt {index}: the gold choice must be among those accepted.")
        if c.kind == Comparison.Kind.CALIBRATION:
            if c.calibration_type not in Comparison.CalibrationType.values:
                raise ApplicationError(f"Prompt {index}: a calibration item needs a known "
                                       f"calibration type (got {c.calibration_type!r}).")
            if c.gold_choice is None and c.calibration_type not in _SELF_SCORED:
                raise ApplicationError(f"Prompt {index}: a {c.calibration_type} item needs gold.")
        elif c.gold_choice is not None or c.gold_accepts or c.calibration_type:
            raise ApplicationError(f"Prompt {index}: gold only on calibration items.")


@transaction.atomic
def comparisons_bulk_create(*, campaign: Campaign, prompts: Sequence[PromptSpec]) -> BulkResult:
    """Write the prompts, their responses and comparisons in one transaction: all or none.

    Comparisons are created in the order given, prompt by prompt. Every spec is checked against
    the model's rules (two distinct responses of the prompt, gold only and always on calibration
    items, known choices) before anything is written; the database constraints back that up.
    Raises ApplicationError naming the prompt's index for a bad spec.
    """
    for index, spec in enumerate(prompts):
        _check(index, spec)
    prompt_rows = Prompt.objects.bulk_create([
        Prompt(campaign=campaign, turns=spec.turns, category=spec.category,
               external_id=spec.external_id, source=spec.source)
        for spec in prompts
    ])
    response_rows = Response.objects.bulk_create(
        [
            Response(prompt=row, text=r.text, source_model=r.source_model,
                     source_version=r.source_version, source_run=r.source_run,
                     features=dict(r.features))
            for row, spec in zip(prompt_rows, prompts, strict=True)
            for r in spec.responses
        ],
        batch_size=2000,
    )
    comparisons: list[Comparison] = []
    offset = 0
    for row, spec in zip(prompt_rows, prompts, strict=True):
        mine = response_rows[offset: offset + len(spec.responses)]
        offset += len(spec.responses)
        for c in spec.comparisons:
            comparison = Comparison(
                campaign=campaign, prompt=row, response_a=mine[c.a], response_b=mine[c.b],
                kind=c.kind, gold_choice=c.gold_choice, gold_accepts=list(c.gold_accepts),
                calibration_type=c.calibration_type,
            )
            comparisons.append(comparison)
    Comparison.objects.bulk_create(comparisons, batch_size=2000)
    return BulkResult(
        prompts=len(prompt_rows), responses=len(response_rows), comparisons=len(comparisons),
        calibration=sum(1 for c in comparisons if c.kind == Comparison.Kind.CALIBRATION),
    )
