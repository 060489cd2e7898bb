"""Exporting a campaign's preferences in TRL's format, as JSONL or a ``datasets.Dataset``.

An export is a job (``services.jobs``): queued through the outbox, run by a worker under a
heartbeat, re-queued or failed by the reaper if the worker dies. Each requester may have a few
exports in flight and a few per hour (429 beyond), and files older than the retention are
deleted by ``preference_exports_purge`` (beat), which keeps the row and marks it purged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotation.errors import GoneError, RateLimitedError
from annotation.models import Campaign, JobStatus, PreferenceExport, Snapshot
from annotation.selectors.sources import SOURCES_ALL
from annotation.services.jobs import (
    job_cancel,
    job_cancelled,
    job_enqueue,
    job_fail,
    job_heartbeat,
    job_owned,
    job_start,
    job_succeed,
)
from annotation.services.snapshots import snapshot_rows_build


def preferences_write(*, campaign: Campaign, out: Path, fmt: str,
                      sources: str = SOURCES_ALL) -> int:
    """Write the campaign's majority-vote preferences to ``out``; return the row count.

    ``sources`` (``all``, ``people``, ``dataset``; see ``snapshot_rows_build``): an export
    takes everything by default, so one made right after importing a ``chosen``/``rejected``
    file holds the file's own preferences.

    An export is a written-out majority snapshot: the rows come from the snapshot builder
    (``snapshot_rows_build``), so the two can never disagree. It may be empty (a snapshot may
    not). The file appears atomically (written beside it, then renamed), so a reader never sees
    half of it.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = snapshot_rows_build(campaign=campaign, method=Snapshot.Method.MAJORITY,
                               sources=sources).rows
    if fmt == PreferenceExport.Format.JSONL:
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    elif fmt == PreferenceExport.Format.DATASET:
        import datasets  # heavy: only in the process that exports

        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return len(rows)


def _files(path: Path) -> list[Path]:
    """The file itself, or a directory's files in order of their relative path."""
    if path.is_dir():
        return sorted((f for f in path.rglob("*") if f.is_file()),
                      key=lambda f: f.relative_to(path).as_posix())
    return [path]


def path_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, or of a directory's files read in order of their
    relative path: what a researcher checks a download against (``sha256sum`` of a JSONL
    export; a dataset export's files concatenated in that order)."""
    digest, size = hashlib.sha256(), 0
    for file in _files(Path(path)):
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def _check_rate(*, requested_by: AbstractBaseUser | None) -> None:
    """At most GAPLAB_EXPORT_MAX_ACTIVE exports in flight and GAPLAB_EXPORT_PER_HOUR an hour
    per requester, so a client (or a fuzzer) cannot fill the disk or the queue."""
    if requested_by is None:
        return
    now = timezone.now()
    mine = PreferenceExport.objects.filter(requested_by=requested_by)
    active = mine.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).count()
    if active >= settings.GAPLAB_EXPORT_MAX_ACTIVE:
        raise RateLimitedError(
            f"You have {active} exports queued or running (the limit is "
            f"{settings.GAPLAB_EXPORT_MAX_ACTIVE}); wait for one to finish.", retry_after=30,
        )
    recent = list(mine.filter(created_at__gte=now - timedelta(hours=1))
                  .order_by("created_at").values_list("created_at", flat=True))
    if len(recent) >= settings.GAPLAB_EXPORT_PER_HOUR:
        wait = recent[0] + timedelta(hours=1) - now
        raise RateLimitedError(
            f"At most {settings.GAPLAB_EXPORT_PER_HOUR} exports an hour; try again later.",
            retry_after=max(1, math.ceil(wait.total_seconds())),
        )


def preference_export_create(
    *, campaign: Campaign, fmt: str, requested_by: AbstractBaseUser | None,
    sources: str = SOURCES_ALL,
) -> PreferenceExport:
    """Queue an export; the worker runs it (``preference_export_run``) after commit.

    Raises RateLimitedError (429) past the requester's limits. The job runs even if the broker
    is down when this returns: its message waits in the outbox.
    """
    with transaction.atomic():
        _check_rate(requested_by=requested_by)
        return job_enqueue(PreferenceExport(campaign=campaign, format=fmt, sources=sources,
                                            requested_by=requested_by))


def _fault_delay() -> None:
    # Fault drills only (tests/annotation/test_job_crash.py): keep the export running long enough
    # to kill its worker mid-run. Unset in production.
    delay = float(os.environ.get("GAPLAB_FAULT_EXPORT_DELAY_SECONDS", "0") or 0)
    if delay > 0:
        import time

        time.sleep(delay)


def preference_export_run(*, export_id: int) -> PreferenceExport | None:
    """Run a queued export; idempotent: a finished export, or one a live worker is running, is
    left alone (returns None). An error in the export fails it with the reason."""
    export = job_start(PreferenceExport, job_id=export_id)
    if export is None:
        return None
    suffix = ".jsonl" if export.format == PreferenceExport.Format.JSONL else ""
    out = Path(settings.GAPLAB_EXPORT_DIR) / f"{export.campaign.name}-{export.pk}{suffix}"
    with job_heartbeat(export):
        try:
            _fault_delay()
            count = preferences_write(campaign=export.campaign, out=out, fmt=export.format,
                                      sources=export.sources)
            content_hash, size = path_digest(out)
        except Exception as exc:
            job_fail(export, reason=f"{type(exc).__name__}: {exc}")
            raise
    # Under the row's lock, which job_cancel takes too: a cancel lands before this (the export
    # ends cancelled) or after it (refused: the export already ended), never in between.
    with transaction.atomic():
        cancelled = job_owned(export).select_for_update().filter(cancel_requested=True).exists()
        if not cancelled:
            job_succeed(export, path=str(out), row_count=count, content_hash=content_hash,
                        size_bytes=size)
    if cancelled:
        # Cancelled while it was writing: the file is not what anyone still wants.
        _remove(out)
        job_cancelled(export, reason="Cancelled while running; the file was deleted.")
    return export


def preference_export_cancel(*, export: PreferenceExport) -> PreferenceExport:
    """Cancel a queued export at once, or ask a running one to stop (it ends cancelled and its
    file is deleted). Raises ConflictError (409) when the export already ended."""
    return job_cancel(PreferenceExport, job_id=export.pk, what="Export")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def preference_export_file(*, export: PreferenceExport) -> Path:
    """The finished export's file (or directory) on disk.

    Raises GoneError (410) when retention purged it or it is missing: the row stays, the bytes
    do not, and exporting again is the remedy.
    """
    path = Path(export.path)
    if export.purged_at is not None:
        raise GoneError(f"Export #{export.pk}'s file was deleted by the retention policy "
                        f"({settings.GAPLAB_EXPORT_RETENTION_DAYS} days); export again.")
    if not export.path or not path.exists():
        raise GoneError(f"Export #{export.pk}'s file is missing on the server; export again.")
    return path


def directory_zip(path: Path) -> BinaryIO:
    """A dataset export's directory as a zip (an anonymous temporary file, at offset 0).

    Stored, not deflated: Arrow files hardly compress, and the download should start soon.
    """
    fh = tempfile.TemporaryFile()  # handed to the response, which closes it
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in _files(path):
            archive.write(file, arcname=f"{path.name}/{file.relative_to(path).as_posix()}")
    fh.seek(0)
    return fh


def preference_exports_purge(*, now=None) -> int:
    """Delete export files older than GAPLAB_EXPORT_RETENTION_DAYS; keep the rows, marked."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.GAPLAB_EXPORT_RETENTION_DAYS)
    purged = 0
    for export in PreferenceExport.objects.filter(
        status=JobStatus.SUCCEEDED, finished_at__lt=cutoff, purged_at__isnull=True
    ):
        _remove(Path(export.path))
        export.purged_at = now
        export.save(update_fields=["purged_at"])
        purged += 1
    return purged
