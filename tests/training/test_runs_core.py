"""The run machinery without a model: routing to the gpu queue, validation that queues nothing,
sweeps all-or-nothing, cancel, resume, and an attempt that lost its run to the reaper."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import JobStatus, OutboxMessage
from annotation.services.jobs import job_start, jobs_reap
from training.models import ModelKind, RegisteredModel, Sweep, TrainingRun
from training.services.progress import RunReporter
from training.services.runs import (
    RunConfigError,
    run_cancel,
    run_create,
    run_resume,
    sweep_create,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def models(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    policy = RegisteredModel.objects.create(name="pi0", kind=ModelKind.POLICY,
                                            path=str(tmp_path / "p"))
    reward = RegisteredModel.objects.create(name="rm", kind=ModelKind.REWARD,
                                            path=str(tmp_path / "r"))
    return policy, reward


@pytest.fixture
def snapshot():
    from tests.training.support import world_snapshot

    return world_snapshot(n_prompts=12)


def test_training_tasks_route_to_the_gpu_queue(snapshot, models):
    from config.celery import app

    assert app.amqp.router.route({}, "training.run_execute")["queue"].name == "gpu"
    run = run_create(method="best_of_n", snapshot=snapshot, base_model=models[0],
                     reward_models=[models[1]])
    message = OutboxMessage.objects.get(task="training.run_execute", args=[run.pk])
    assert message.queue == "gpu"
    assert run.status == JobStatus.QUEUED and run.code_version


def test_a_bad_config_names_every_field_and_queues_nothing(snapshot, models):
    with pytest.raises(RunConfigError) as exc:
        run_create(method="dpo", snapshot=None, base_model=models[1],
                   config={"no_such_field": 1, "beta": "high"})
    errors = exc.value.errors
    assert {"no_such_field", "beta", "snapshot", "base_model"} <= errors.keys()
    assert exc.value.status_code == 400
    assert not TrainingRun.objects.exists()
    assert not OutboxMessage.objects.filter(task="training.run_execute").exists()


def test_an_ai_judge_without_what_its_backend_needs_is_refused_at_creation(snapshot, models):
    campaign = snapshot.campaign
    with pytest.raises(RunConfigError) as exc:
        run_create(method="ai_judge", campaign=campaign, config={"backend": "reward_model"})
    assert "reward_models" in exc.value.errors
    with pytest.raises(RunConfigError) as exc:
        run_create(method="ai_judge", campaign=campaign, config={"backend": "causal_lm"})
    assert {"base_model", "principles_override"} <= exc.value.errors.keys()
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("seed", ["x", None, 1e20, 2**40, True])
def test_a_bad_seed_is_a_field_error_in_a_run_and_in_a_sweep_grid(snapshot, models, seed):
    with pytest.raises(RunConfigError) as exc:
        run_create(method="dpo", snapshot=snapshot, base_model=models[0], seed=seed)
    assert "seed" in exc.value.errors
    with pytest.raises(RunConfigError) as exc:
        sweep_create(method="dpo", snapshot=snapshot, base_model=models[0],
                     grid={"seed": [1, seed]})
    assert "seed" in exc.value.errors
    assert not TrainingRun.objects.exists() and not Sweep.objects.exists()


def test_an_unknown_method_is_a_field_error():
    with pytest.raises(RunConfigError) as exc:
        run_create(method="ppo")
    assert "method" in exc.value.errors


def test_a_sweep_is_all_or_nothing(snapshot, models):
    with pytest.raises(RunConfigError) as exc:
        sweep_create(method="dpo", snapshot=snapshot, base_model=models[0],
                     grid={"beta": [0.1, -1.0]})
    assert "beta" in exc.value.errors and "grid point" in exc.value.errors["beta"][0]
    assert not Sweep.objects.exists() and not TrainingRun.objects.exists()
    with pytest.raises(RunConfigError) as exc:  # inputs and grid errors come together
        sweep_create(method="dpo", snapshot=None, base_model=models[0], grid={"beta": [-1.0]})
    assert {"snapshot", "beta"} <= exc.value.errors.keys()

    sweep = sweep_create(method="dpo", snapshot=snapshot, base_model=models[0],
                         grid={"beta": [0.05, 0.1, 0.5], "seed": [1, 2]})
    runs = list(sweep.runs.order_by("pk"))
    assert len(runs) == 6
    assert sorted({(r.config["beta"], r.seed) for r in runs}) == sorted(
        (b, s) for b in (0.05, 0.1, 0.5) for s in (1, 2))
    assert OutboxMessage.objects.filter(task="training.run_execute", queue="gpu").count() == 6


def test_cancel_a_queued_run_ends_it_and_a_late_message_does_nothing(snapshot, models):
    run = run_create(method="best_of_n", snapshot=snapshot, base_model=models[0],
                     reward_models=[models[1]])
    run_cancel(run=run)
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED
    assert job_start(TrainingRun, job_id=run.pk) is None
    resumed = run_resume(run=run)
    assert resumed.status == JobStatus.QUEUED and not resumed.cancel_requested


def test_an_attempt_that_lost_its_run_to_the_reaper_stops_and_writes_nothing(snapshot, models):
    run = run_create(method="best_of_n", snapshot=snapshot, base_model=models[0],
                     reward_models=[models[1]])
    started = job_start(TrainingRun, job_id=run.pk)
    reporter = RunReporter(started)
    reporter.progress(3, 10)
    assert TrainingRun.objects.get(pk=run.pk).step == 3
    assert not reporter.cancelled()
    jobs_reap(now=timezone.now() + timedelta(hours=1))  # presumed dead: re-queued
    assert TrainingRun.objects.get(pk=run.pk).status == JobStatus.QUEUED
    reporter.progress(7, 10)
    assert reporter.lost and reporter.cancelled()
    assert TrainingRun.objects.get(pk=run.pk).step == 3


def test_a_running_run_sees_a_cancel(snapshot, models):
    run = run_create(method="best_of_n", snapshot=snapshot, base_model=models[0],
                     reward_models=[models[1]])
    reporter = RunReporter(job_start(TrainingRun, job_id=run.pk))
    assert not reporter.cancelled()
    run_cancel(run=run)
    reporter._checked_at = 0.0  # the reporter reads the flag at most once a second
    assert reporter.cancelled() and reporter.cancel_seen and not reporter.lost
