"""Training through a real Celery worker on the ``gpu`` queue (a private redis-server, the solo
pool, tiny models): the whole pipeline, cancel, SIGKILL and resume from a checkpoint, retries
used up, and an exception that fails the run with its traceback.

Job timings are tight (heartbeat 1 s, stale after 4 s) so the drills take seconds; the reaper
is the real ``jobs_reap``, run by the test where a drill needs it at a known moment.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from annotation.models import Job, JobStatus
from annotation.services.jobs import jobs_reap
from tests.training.support import world_snapshot
from tests.worker_support import Worker, worker_env
from training.models import ModelKind, RegisteredModel, RunMetric, TrainingRun
from training.services.runs import file_sha256, run_cancel, run_create, sweep_create

pytestmark = [pytest.mark.worker, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="needs redis-server to start a private broker")]

READY_TIMEOUT_S = 90
FAST = {"GAPLAB_JOB_HEARTBEAT_SECONDS": "1", "GAPLAB_JOB_STALE_SECONDS": "4",
        "GAPLAB_RUN_REPORT_EVERY": "2", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _gpu_worker(broker, tmp_path, **extra) -> Worker:
    env = worker_env(CELERY_BROKER_URL=broker.url,
                     GAPLAB_ARTIFACT_ROOT=str(tmp_path / "artifacts"), **FAST, **extra)
    worker = Worker(env, queues="gpu", pool="solo")
    worker.wait_ready(READY_TIMEOUT_S)
    return worker


def _wait(run: TrainingRun, predicate, *, timeout: float, what: str, workers=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if predicate(run):
            return
        if run.status in Job.TERMINAL and not predicate(run):
            break
        time.sleep(0.25)
    logs = "\n---\n".join(w.output() for w in workers)
    pytest.fail(f"run #{run.pk} {what}: not within {timeout} s (status {run.status}, step "
                f"{run.step}, error {run.error[-2000:]})\nlog tail:\n{run.log_tail}\n{logs}")


def _done(run: TrainingRun, workers, timeout: float = 240) -> TrainingRun:
    _wait(run, lambda r: r.status == JobStatus.SUCCEEDED, timeout=timeout, what="succeeded",
          workers=workers)
    return run


@pytest.fixture
def world(transactional_db, settings, tmp_path, tiny_registered):
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path / "artifacts"
    return world_snapshot(name="arith-worker", n_prompts=30), tiny_registered


def test_the_whole_pipeline_runs_through_the_worker(world, broker, tmp_path):
    snapshot, tiny = world
    worker = _gpu_worker(broker, tmp_path)
    try:
        rm_run = _done(run_create(method="reward_model", snapshot=snapshot,
                                  base_model=tiny["reward"],
                                  config={"max_steps": 40, "batch_size": 8}), [worker])
        sft_run = _done(run_create(method="sft", snapshot=snapshot, base_model=tiny["policy"],
                                   config={"max_steps": 40, "batch_size": 8}), [worker])
        rm = RegisteredModel.objects.get(produced_by=rm_run)
        pi0 = RegisteredModel.objects.get(produced_by=sft_run)
        assert (rm.kind, pi0.kind) == (ModelKind.REWARD, ModelKind.POLICY)
        sweep = sweep_create(method="dpo", snapshot=snapshot, base_model=pi0,
                             config={"max_steps": 10, "batch_size": 8, "kl_samples": 16,
                                     "kl_prompts": 8},
                             grid={"beta": [0.05, 0.2, 1.0]})
        children = list(sweep.runs.order_by("pk"))
        for child in children:
            _done(child, [worker])
        bon = _done(run_create(method="best_of_n", snapshot=snapshot, base_model=pi0,
                               reward_models=[rm], config={"n": 4, "n_prompts": 8}), [worker])
    finally:
        worker.stop()

    for run in [rm_run, sft_run, *children, bon]:
        assert run.attempts == 1 and run.finished_at and run.code_version
        assert run.artifacts.exists(), run
        for artifact in run.artifacts.all()[:5]:
            path = Path(artifact.path)
            assert path.stat().st_size == artifact.size
            assert file_sha256(path) == artifact.sha256
    assert "registered_models" in rm_run.result and rm.pk in rm_run.result["registered_models"]
    assert RunMetric.objects.filter(run=rm_run, name__contains="loss").count() >= 2
    for child in children:
        assert child.result.get("kl") is not None and child.result["kl"] >= -0.05
        assert RegisteredModel.objects.filter(produced_by=child, kind=ModelKind.POLICY).exists()
    assert sorted(c.config["beta"] for c in children) == [0.05, 0.2, 1.0]
    assert bon.result.get("n") == 4


def _long_run(snapshot, tiny, **kw) -> TrainingRun:
    return run_create(method="reward_model", snapshot=snapshot, base_model=tiny["reward"],
                      config={"max_steps": 2000, "batch_size": 4}, **kw)


def test_cancel_stops_a_running_run_within_a_few_steps(world, broker, tmp_path):
    snapshot, tiny = world
    worker = _gpu_worker(broker, tmp_path)
    try:
        run = _long_run(snapshot, tiny)
        _wait(run, lambda r: r.step >= 4, timeout=120, what="training", workers=[worker])
        run_cancel(run=run)
        cancelled_at = run.step
        _wait(run, lambda r: r.status == JobStatus.CANCELLED, timeout=60, what="cancelled",
              workers=[worker])
    finally:
        worker.stop()
    assert run.step < 2000
    print(f"cancel requested at step {cancelled_at}, stopped at step {run.step}")


def test_sigkill_mid_run_resumes_from_the_checkpoint(world, broker, tmp_path):
    snapshot, tiny = world
    victim = _gpu_worker(broker, tmp_path, GAPLAB_RUN_CHECKPOINT_EVERY="10")
    rescuer = None
    try:
        run = run_create(method="reward_model", snapshot=snapshot, base_model=tiny["reward"],
                         config={"max_steps": 60, "batch_size": 4})
        _wait(run, lambda r: bool(r.last_checkpoint) and r.step >= 14, timeout=180,
              what="checkpointed", workers=[victim])
        victim.kill_all()
        checkpoint = run.last_checkpoint
        resumed_at = int(checkpoint.rsplit("-", 1)[1])
        assert resumed_at >= 10
        counts = jobs_reap(now=timezone.now() + timedelta(minutes=5))
        assert counts["requeued"] == 1
        rescuer = _gpu_worker(broker, tmp_path, GAPLAB_RUN_CHECKPOINT_EVERY="10")
        _done(run, [victim, rescuer])
    finally:
        victim.stop()
        if rescuer is not None:
            rescuer.stop()
    assert run.attempts == 2 and run.step == 60
    assert f"resuming from {checkpoint}" in run.log_tail or "resuming from" in run.log_tail
    # Steps up to the checkpoint were trained once: a restart from 0 would log them twice.
    losses = Counter(RunMetric.objects.filter(run=run, name="loss", step__lte=resumed_at)
                     .values_list("step", flat=True))
    assert losses and max(losses.values()) == 1
    assert RunMetric.objects.filter(run=run, name="loss", step__gt=resumed_at).exists()


def test_retries_used_up_fail_the_run_with_the_reason(world, broker, tmp_path):
    snapshot, tiny = world
    victim = _gpu_worker(broker, tmp_path)
    try:
        run = _long_run(snapshot, tiny, max_attempts=1)
        _wait(run, lambda r: r.step >= 2, timeout=120, what="training", workers=[victim])
        victim.kill_all()
    finally:
        victim.stop()
    jobs_reap(now=timezone.now() + timedelta(minutes=5))
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert "lost" in run.error and "Not retried" in run.error


def test_an_exception_fails_the_run_with_its_traceback(world, broker, tmp_path):
    snapshot, tiny = world
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    bad = RegisteredModel.objects.create(name="broken", kind=ModelKind.REWARD, path=str(broken))
    worker = _gpu_worker(broker, tmp_path)
    try:
        run = run_create(method="reward_model", snapshot=snapshot, base_model=bad,
                         config={"max_steps": 5})
        _wait(run, lambda r: r.status == JobStatus.FAILED, timeout=120, what="failed",
              workers=[worker])
    finally:
        worker.stop()
    assert "Traceback" in run.error and run.attempts == 1
