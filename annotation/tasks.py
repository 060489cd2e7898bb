"""Thin Celery tasks: ids in, one service call. Jobs' crash safety lives in services.jobs.

Job tasks ack late and are rejected back to the queue if their worker dies: redelivery is safe
because every job service starts with ``job_start``, which leaves a finished or live job alone.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="annotation.preference_export_run", acks_late=True, reject_on_worker_lost=True)
def preference_export_run(export_id: int) -> int:
    from annotation.services.exports import preference_export_run as run

    export = run(export_id=export_id)
    return (export.row_count or 0) if export is not None else 0


@shared_task(name="annotation.campaign_quality_recompute", acks_late=True,
             reject_on_worker_lost=True)
def campaign_quality_recompute(job_id: int) -> None:
    from annotation.services.quality import quality_recompute_run

    quality_recompute_run(job_id=job_id)


@shared_task(name="annotation.jobs_reap")
def jobs_reap() -> dict[str, int]:
    """Beat: re-queue or fail jobs whose worker vanished; re-dispatch lost queued jobs."""
    from annotation.services.jobs import jobs_reap as reap

    return reap()


@shared_task(name="annotation.outbox_relay")
def outbox_relay() -> int:
    """Beat: publish outbox messages that could not be published after their commit."""
    from annotation.services.outbox import outbox_relay as relay

    return relay()


@shared_task(name="annotation.housekeeping")
def housekeeping() -> dict[str, int]:
    """Beat, hourly: export retention and old sent outbox messages."""
    from annotation.services.exports import preference_exports_purge
    from annotation.services.outbox import outbox_purge

    return {"exports_purged": preference_exports_purge(), "outbox_purged": outbox_purge()}
