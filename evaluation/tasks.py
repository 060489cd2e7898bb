"""Thin Celery tasks of evaluation: ids in, one service call (``evaluation.experiment_jobs``).

``evaluation.experiment_execute`` runs on the ``gpu`` queue (named at each publish by
``Experiment.job_queue`` through the outbox, and in ``CELERY_TASK_ROUTES``): it trains reward
models in-process, so it belongs with the training runs and their ``--pool solo`` worker.
Crash safety lives in the database (``annotation.services.jobs``).
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="evaluation.experiment_execute", acks_late=True, reject_on_worker_lost=True)
def experiment_execute(experiment_id: int) -> str:
    """Execute one experiment (again from the start after a crash: the reaper re-queues it)."""
    from evaluation.experiment_jobs import experiment_execute as execute

    experiment = execute(experiment_id=experiment_id)
    return experiment.status if experiment is not None else "skipped"
