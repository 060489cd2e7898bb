from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from annotation.importers import ImportRow
from annotation.models import Campaign, Comparison, Prompt, Response


@dataclass(frozen=True)
class ImportResult:
    prompts: int
    responses: int
    comparisons: int
    calibration: int


@transaction.atomic
def comparisons_import(*, campaign: Campaign, rows: list[ImportRow]) -> ImportResult:
    """Write validated rows in one transaction: all of them or, on any error, none.

    A row with n responses becomes n·(n-1)/2 comparisons (every pair), in the file's order.
    """
    prompts = Prompt.objects.bulk_create(
        [
            Prompt(campaign=campaign, turns=row.turns, category=row.category,
                   external_id=row.external_id, source=row.source)
            for row in rows
        ]
    )
    responses = Response.objects.bulk_create(
        [
            Response(prompt=prompt, text=r.text, source_model=r.source_model,
                     source_version=r.source_version, source_run=r.source_run)
            for prompt, row in zip(prompts, rows, strict=True)
            for r in row.responses
        ]
    )
    comparisons = []
    offset = 0
    for prompt, row in zip(prompts, rows, strict=True):
        mine = responses[offset: offset + len(row.responses)]
        offset += len(row.responses)
        for i, j in row.pairs:
            comparisons.append(
                Comparison(
                    campaign=campaign, prompt=prompt, response_a=mine[i], response_b=mine[j],
                    kind=row.kind, gold_choice=row.gold, gold_accepts=list(row.accepts),
                    calibration_type=(
                        Comparison.CalibrationType.KNOWN_ANSWER if row.gold else ""
                    ),
                )
            )
    Comparison.objects.bulk_create(comparisons, batch_size=2000)
    return ImportResult(
        prompts=len(prompts), responses=len(responses), comparisons=len(comparisons),
        calibration=sum(1 for c in comparisons if c.kind == Comparison.Kind.CALIBRATION),
    )
