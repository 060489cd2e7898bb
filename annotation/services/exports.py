"""Exporting a campaign's preferences in TRL's format, as JSONL or a ``datasets.Dataset``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotation.models import Campaign, PreferenceExport
from annotation.selectors import preference_rows


def preferences_write(*, campaign: Campaign, out: Path, fmt: str) -> int:
    """Write the campaign's majority-vote preferences to ``out``; return the row count.

    The file appears atomically (written beside it, then renamed), so a reader never sees half.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = list(preference_rows(campaign=campaign))
    if fmt == PreferenceExport.Format.JSONL:
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    elif fmt == PreferenceExport.Format.DATASET:
        import datasets  # heavy: only in the process that exports

        datasets.Dataset.from_list(rows).save_to_disk(str(out))
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return len(rows)


def preference_export_create(
    *, campaign: Campaign, fmt: str, requested_by: AbstractBaseUser | None
) -> PreferenceExport:
    """Queue an export; the worker runs it (``preference_export_run``) after commit."""
    from annotation.tasks import preference_export_run as preference_export_run_task

    export = PreferenceExport(campaign=campaign, format=fmt, requested_by=requested_by)
    export.full_clean()
    export.save()
    transaction.on_commit(lambda: preference_export_run_task.delay(export.pk))
    return export


def preference_export_run(*, export_id: int) -> PreferenceExport:
    """Run a queued export; idempotent: a finished export is returned as it is."""
    with transaction.atomic():
        export = PreferenceExport.objects.select_for_update().select_related("campaign").get(
            pk=export_id
        )
        if export.status == PreferenceExport.Status.SUCCEEDED:
            return export
        export.status = PreferenceExport.Status.RUNNING
        export.save(update_fields=["status"])
    suffix = ".jsonl" if export.format == PreferenceExport.Format.JSONL else ""
    out = Path(settings.GAPLAB_EXPORT_DIR) / f"{export.campaign.name}-{export.pk}{suffix}"
    try:
        count = preferences_write(campaign=export.campaign, out=out, fmt=export.format)
    except Exception as exc:
        export.status = PreferenceExport.Status.FAILED
        export.error = f"{type(exc).__name__}: {exc}"[:2000]
        export.finished_at = timezone.now()
        export.save(update_fields=["status", "error", "finished_at"])
        raise
    export.status = PreferenceExport.Status.SUCCEEDED
    export.path = str(out)
    export.row_count = count
    export.finished_at = timezone.now()
    export.save(update_fields=["status", "path", "row_count", "finished_at"])
    return export
