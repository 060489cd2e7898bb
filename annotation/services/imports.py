"""Import comparisons: parse a file, then write all its rows or none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DataError, transaction

from annotation import importers
from annotation.importers import ImportFileError, ImportRow
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


def comparisons_import_file(
    *, campaign: Campaign, source: Path | str | Any, fmt: str | None = None,
) -> ImportResult:
    """Parse ``source`` and import every row into ``campaign``, or nothing.

    ``source`` is a path (a JSONL/CSV file, a .parquet/.arrow file or a ``save_to_disk``
    folder) or an uploaded file (Django ``UploadedFile``); ``fmt`` (jsonl, csv, dataset)
    overrides the guess from the name. The size and row limits are
    ``GAPLAB_IMPORT_MAX_BYTES`` and ``GAPLAB_IMPORT_MAX_ROWS``.

    Raises ImportFileError, naming each bad line (or dataset row) and field, when the file
    cannot be imported; then nothing was written. Every caller (API, admin upload, management
    command, demo seed) goes through here, so all enforce the same limits and checks.
    """
    limits = {"max_bytes": settings.GAPLAB_IMPORT_MAX_BYTES,
              "max_rows": settings.GAPLAB_IMPORT_MAX_ROWS}
    if isinstance(source, str | Path):
        rows = importers.parse_path(Path(source), fmt=fmt, **limits)
    else:
        rows = importers.parse_upload(source, fmt=fmt, **limits)
    try:
        return comparisons_import(campaign=campaign, rows=rows)
    except DataError as exc:
        # Backstop: the parser refuses what PostgreSQL cannot store (NUL, lone surrogates,
        # over-long names), so this means a check is missing. The atomic block has rolled
        # back; answer the client as a bad file, not a 500.
        first = str(exc).strip().splitlines()[:1]
        raise ImportFileError(
            [f"the database refused a row ({first[0] if first else type(exc).__name__})"]
        ) from exc
