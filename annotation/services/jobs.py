"""One crash-safety mechanism for every background job (``annotation.models.Job`` subclasses).

The life of a job:

1. ``job_enqueue`` (in the request's transaction): the row is queued and its task goes through
   the outbox, so a committed request always gets its job run, broker or not.
2. ``job_start`` (first thing in the task): takes the row under a lock and decides. A finished
   or cancelled job is left alone; a job running under a live heartbeat belongs to another
   delivery (a redelivered message) and is left alone; otherwise this worker owns the attempt.
3. ``job_heartbeat`` (around the work): a thread stamps ``heartbeat_at`` every
   ``GAPLAB_JOB_HEARTBEAT_SECONDS`` while the process lives.
4. ``job_succeed`` / ``job_fail``: only the owner of the current attempt can finish the job.
5. ``jobs_reap`` (Celery beat, every ``GAPLAB_JOB_REAP_SECONDS``): a running job whose heartbeat
   is older than ``GAPLAB_JOB_STALE_SECONDS`` lost its worker (a SIGKILLed pool child, a dead
   machine): it is re-queued, or failed with the reason once ``max_attempts`` starts are used.
   A queued job whose message never started it (a file broker drops a message fetched by a
   worker that was then killed) is dispatched again after ``GAPLAB_JOB_REDISPATCH_SECONDS``.

Crash safety lives here, in the database, and not in the broker: late acks redeliver only on
Redis and only after the visibility timeout, and a file broker loses a fetched message.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from annotation.errors import ConflictError
from annotation.models import Job, JobStatus
from annotation.services.outbox import outbox_enqueue

log = logging.getLogger(__name__)


def job_models() -> list[type[Job]]:
    """Every concrete job model of every installed app."""
    return [m for m in apps.get_models() if issubclass(m, Job)]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def job_dispatch(job: Job, *, queue: str = "") -> None:
    """Enqueue the job's task through the outbox (inside the caller's transaction), on
    ``queue`` or else the job kind's own ``job_queue``."""
    outbox_enqueue(task=job.job_task, args=[job.pk], queue=queue or job.job_queue)


def job_enqueue(job: Job, *, queue: str = "") -> Job:
    """Save a new job as queued and dispatch it after commit."""
    with transaction.atomic():
        job.status = JobStatus.QUEUED
        job.queued_at = timezone.now()
        job.full_clean()
        job.save()
        job_dispatch(job, queue=queue)
    return job


def _stale_before(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.GAPLAB_JOB_STALE_SECONDS)


def job_start(model: type[Job], *, job_id: int, now: datetime | None = None) -> Job | None:
    """Claim the job for this worker; None when there is nothing for it to do.

    Idempotent under redelivery: a finished job, or one whose heartbeat is live under another
    delivery, is not started again.
    """
    now = now or timezone.now()
    with transaction.atomic():
        job = model.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in Job.TERMINAL:
            return None
        if job.status == JobStatus.RUNNING and (job.heartbeat_at or job.started_at or now) > (
            _stale_before(now)
        ):
            return None  # a live run owns it; if it dies, the reaper notices
        if job.cancel_requested:
            _finish(job, status=JobStatus.CANCELLED, error="Cancelled before it started.",
                    now=now)
            return None
        if job.attempts >= job.max_attempts:
            _finish(job, status=JobStatus.FAILED, now=now,
                    error=f"Gave up after {job.attempts} attempts. {job.error}".strip())
            return None
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.started_at = job.heartbeat_at = now
        job.worker = worker_name()
        job.save(update_fields=["status", "attempts", "started_at", "heartbeat_at", "worker"])
    return job


def _owned(job: Job):
    """The row of this job, as long as this attempt still owns it."""
    return type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts)


def _finish(job: Job, *, status: str, error: str = "", now: datetime | None = None,
            **fields) -> None:
    job.status, job.error, job.finished_at = status, error[:5000], now or timezone.now()
    for name, value in fields.items():
        setattr(job, name, value)
    job.save(update_fields=["status", "error", "finished_at", *fields])


def job_succeed(job: Job, **fields) -> bool:
    """Mark the attempt succeeded, storing ``fields``; False if the attempt lost ownership
    (the reaper re-queued it meanwhile), in which case nothing is written."""
    now = timezone.now()
    updated = _owned(job).update(status=JobStatus.SUCCEEDED, finished_at=now, error="",
                                 heartbeat_at=now, **fields)
    if updated:
        job.status, job.finished_at, job.error = JobStatus.SUCCEEDED, now, ""
        for name, value in fields.items():
            setattr(job, name, value)
    return bool(updated)


def job_fail(job: Job, *, reason: str) -> bool:
    """Mark the attempt failed with a reason (an error in the job itself: not retried)."""
    now = timezone.now()
    updated = _owned(job).update(status=JobStatus.FAILED, finished_at=now, error=reason[:5000])
    if updated:
        job.status, job.finished_at, job.error = JobStatus.FAILED, now, reason[:5000]
    return bool(updated)


def job_cancelled(job: Job, *, reason: str = "Cancelled while running.", **fields) -> bool:
    """Mark the attempt cancelled (it obeyed a cancel request), storing ``fields``."""
    now = timezone.now()
    updated = _owned(job).update(status=JobStatus.CANCELLED, finished_at=now,
                                 error=reason[:5000], **fields)
    if updated:
        job.status, job.finished_at, job.error = JobStatus.CANCELLED, now, reason[:5000]
    return bool(updated)


def job_cancel(model: type[Job], *, job_id: int, what: str = "Job") -> Job:
    """Ask a job to stop: a queued one is cancelled at once, a running one ends cancelled when
    its worker next looks at ``cancel_requested`` (within a few steps). A job that already ended
    cannot be cancelled (``ConflictError``)."""
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=job_id)
        if job.status in Job.TERMINAL:
            raise ConflictError(f"{what} #{job.pk} already ended ({job.status}).")
        job.cancel_requested = True
        fields = ["cancel_requested"]
        if job.status == JobStatus.QUEUED:
            job.status, job.finished_at = JobStatus.CANCELLED, timezone.now()
            job.error = "Cancelled before it started."
            fields += ["status", "finished_at", "error"]
        job.save(update_fields=fields)
    return job


def job_owned(job: Job):
    """The job's row as long as this attempt owns it: an update through it that touches no
    row means the reaper gave the job to another attempt, and this one must stop."""
    return _owned(job)


@contextmanager
def job_heartbeat(job: Job, *, interval: float | None = None) -> Iterator[None]:
    """Stamp the job's heartbeat from a thread while the body runs.

    The thread has its own database connection (Django's are per thread) and closes it. The
    first beat comes after one interval, so a short job never writes from the thread.
    """
    interval = interval or settings.GAPLAB_JOB_HEARTBEAT_SECONDS
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    _owned(job).update(heartbeat_at=timezone.now())
                except Exception:  # a lost connection must not kill the job; the next beat retries
                    log.exception("heartbeat of %s failed", job)
                    close_old_connections()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{job}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


def _requeue(job: Job, *, why: str, now: datetime) -> bool:
    """Put a lost job back in the queue; False when a job kind allows one queued job per key
    (e.g. one quality recompute per campaign) and another already waits, which then stands in
    for it: the lost one is cancelled with the reason."""
    try:
        with transaction.atomic():  # a savepoint: the unique conflict must not end the reap
            type(job).objects.filter(pk=job.pk).update(
                status=JobStatus.QUEUED, queued_at=now, error=why + " Re-queued.")
    except IntegrityError:
        _finish(job, status=JobStatus.CANCELLED, now=now,
                error=why + " A job queued since then does its work.")
        return False
    job.status, job.queued_at, job.error = JobStatus.QUEUED, now, why + " Re-queued."
    job_dispatch(job)
    return True


def jobs_reap(*, now: datetime | None = None) -> dict[str, int]:
    """Re-queue or fail every job whose worker vanished; re-dispatch lost queued jobs.

    Returns counts: ``requeued``, ``failed`` (failed or cancelled), ``redispatched``. Safe to
    run concurrently: rows are taken with SKIP LOCKED.
    """
    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0, "redispatched": 0}
    stale = _stale_before(now)
    redispatch_before = now - timedelta(seconds=settings.GAPLAB_JOB_REDISPATCH_SECONDS)
    for model in job_models():
        with transaction.atomic():
            lost = model.objects.select_for_update(skip_locked=True).filter(
                Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale),
                status=JobStatus.RUNNING,
            )
            for job in lost:
                seen = job.heartbeat_at or job.started_at
                why = (f"Worker {job.worker or '?'} lost: no heartbeat since "
                       f"{seen:%Y-%m-%d %H:%M:%S} UTC (attempt {job.attempts} of "
                       f"{job.max_attempts}).")
                if job.cancel_requested:
                    _finish(job, status=JobStatus.CANCELLED, error=why, now=now)
                    counts["failed"] += 1
                elif job.attempts >= job.max_attempts:
                    _finish(job, status=JobStatus.FAILED, error=why + " Not retried.", now=now)
                    counts["failed"] += 1
                elif _requeue(job, why=why, now=now):
                    counts["requeued"] += 1
                else:
                    counts["failed"] += 1
            waiting = model.objects.select_for_update(skip_locked=True).filter(
                status=JobStatus.QUEUED, queued_at__lt=redispatch_before
            )
            for job in waiting:
                job.queued_at = now
                job.save(update_fields=["queued_at"])
                job_dispatch(job)
                counts["redispatched"] += 1
    if any(counts.values()):
        log.warning("jobs_reap: %s", counts)
    return counts
