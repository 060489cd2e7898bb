"""Thin Celery tasks on the ``gpu`` queue: ids in, one service call (training.services.runs).

The queue is named at each publish (``TrainingRun.job_queue``, through the outbox) as well as
in ``CELERY_TASK_ROUTES`` (Celery 5.5 deprecates a task's own ``queue``); the worker that consumes
``gpu`` must not fork after torch work (ML-STACK): run it with ``--pool solo`` (``make demo``
and ``docker/`` do). Crash safety lives in the database (``annotation.services.jobs``).
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="training.run_execute", acks_late=True, reject_on_worker_lost=True)
def run_execute(run_id: int) -> str:
    """Execute (or, after a crash, resume from its last checkpoint) one training run."""
    from training.services.runs import run_execute as execute

    run = execute(run_id=run_id)
    return run.status if run is not None else "skipped"
