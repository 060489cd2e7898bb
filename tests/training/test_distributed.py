"""A run on several processes of one machine (``GAPLAB_RUN_PROCESSES``): ``run_execute`` starts
``accelerate launch`` with two gloo ranks on the CPU (the path GPUs take with NCCL), rank 0
reports once for both, the result is recorded as for an in-process run, a cancel stops both
ranks at one step, and a rank that raises fails the run with its traceback.

The ranks are real processes on the test database (committed rows: ``transactional_db``) and
under the test's artifact root; the eager task runs ``run_execute`` inside ``run_create``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from annotation.models import JobStatus
from tests.training.support import world_snapshot
from tests.worker_support import ROOT, worker_database_url, worker_env
from training.methods import method_config_clean
from training.models import ModelKind, RegisteredModel, RunMetric, TrainingRun
from training.services.runs import (
    model_register,
    run_cancel,
    run_create,
    run_dir,
    run_resume,
)

pytestmark = [pytest.mark.slow]

SFT = {"batch_size": 4, "kl_prompts": 4, "kl_samples": 2, "max_new_tokens": 8,
       "learning_rate": 1e-3}


@pytest.fixture
def world(transactional_db, settings, tmp_path, monkeypatch, tiny_registered):
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.GAPLAB_RUN_PROCESSES = "2"
    settings.GAPLAB_RUN_PROCESSES_CPU = True
    settings.GAPLAB_RUN_REPORT_EVERY = 2
    # The ranks read the environment: the test database, no hub.
    monkeypatch.setenv("DATABASE_URL", worker_database_url())
    monkeypatch.setenv("GAPLAB_DATA_DIR", str(settings.DATA_DIR))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return world_snapshot(name="arith-ddp", n_prompts=12), tiny_registered


def _failure(run: TrainingRun) -> str:
    log = run_dir(run) / "launch" / f"attempt-{run.attempts}" / "output.log"
    return (f"status {run.status}, error {run.error[-3000:]}\nlog tail:\n{run.log_tail}\n"
            f"output:\n{log.read_text()[-3000:] if log.exists() else ''}")


def test_an_sft_run_on_two_processes_reports_once_and_registers_its_policy(world):
    snapshot, tiny = world
    private_before = set(Path(tempfile.gettempdir()).glob("gaplab-run*-rank*-*"))
    run = run_create(method="sft", snapshot=snapshot, base_model=tiny["policy"],
                     config={**SFT, "max_steps": 6})
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, _failure(run)
    assert run.result["processes"] == 2  # the world size rank 0 saw
    assert "2 processes (gloo on cpu); rank 0 reports" in run.log_tail
    assert run.step == run.total_steps == 6
    # Progress, metrics and log lines come from rank 0 only: once each, not once per rank.
    rows = list(RunMetric.objects.filter(run=run).values_list("step", "name"))
    assert sorted(s for s, n in rows if n == "loss") == [2, 4, 6]
    assert Counter(n for _, n in rows)["train_runtime"] == 1
    assert run.log_tail.count("sft: ") == 1
    policy = RegisteredModel.objects.get(produced_by=run)
    assert policy.kind == ModelKind.POLICY and run.result["registered_models"] == [policy.pk]
    assert Path(policy.path).is_relative_to(run_dir(run)) and (
        Path(policy.path) / "config.json").exists()
    assert run.artifacts.filter(name__startswith="policy/").exists()
    assert not run.artifacts.filter(name__startswith="launch/").exists()
    # The other rank's private folder, with its own copy of the policy, is gone.
    assert set(Path(tempfile.gettempdir()).glob("gaplab-run*-rank*-*")) <= private_before


def test_a_reward_model_trains_on_two_processes(world):
    """The reward trainer's own loss sees the model wrapped in DDP on every rank."""
    snapshot, tiny = world
    run = run_create(method="reward_model", snapshot=snapshot, base_model=tiny["reward"],
                     config={"max_steps": 4, "batch_size": 4})
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, _failure(run)
    assert run.result["processes"] == 2
    assert RegisteredModel.objects.get(produced_by=run).kind == ModelKind.REWARD


def test_a_cancel_stops_both_ranks_at_one_step_and_both_resume_from_its_checkpoint(
        world, settings):
    snapshot, tiny = world
    settings.GAPLAB_RUN_CHECKPOINT_EVERY = 2
    seen: dict[str, int] = {}

    def cancel_when_training() -> None:
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                run = TrainingRun.objects.filter(method="sft").order_by("-pk").first()
                if run is not None and run.step >= 4:
                    seen["step"] = run.step
                    run_cancel(run=run)
                    return
                time.sleep(0.2)
        finally:
            connection.close()

    thread = threading.Thread(target=cancel_when_training)
    thread.start()
    run = run_create(method="sft", snapshot=snapshot, base_model=tiny["policy"],
                     config={**SFT, "max_steps": 2000})
    thread.join(timeout=10)
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED, _failure(run)
    assert seen["step"] <= run.step < 2000
    # Both ranks left by themselves (no stop from outside): rank 0 wrote its result.
    result = json.loads((run_dir(run) / "launch" / "attempt-1" / "result.json").read_text())
    assert result["cancelled"] and not result["lost"] and not result["models"]
    assert not RegisteredModel.objects.filter(produced_by=run).exists()

    # Resumed, with 4 steps left: rank 0 restarts from the shared checkpoint, the other rank
    # from its private copy of it. Ranks at different steps would fail or hang in the
    # all-reduce once rank 0 is done.
    checkpoint = int(Path(run.last_checkpoint).name.removeprefix("checkpoint-"))
    TrainingRun.objects.filter(pk=run.pk).update(
        config={**run.config, "max_steps": checkpoint + 4})
    run_resume(run=run)  # the eager task runs the second attempt here
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED and run.attempts == 2, _failure(run)
    assert f"resuming from {run_dir(run)}" in run.log_tail
    assert run.step == run.result["steps"] == checkpoint + 4
    assert RegisteredModel.objects.filter(produced_by=run, kind=ModelKind.POLICY).exists()


def test_ranks_whose_worker_was_killed_stop_by_themselves(world, tmp_path):
    """A SIGKILLed worker leaves its launched ranks behind; rank 0 notices at its next report
    that the worker is gone and every rank stops, writing nothing more to the run."""
    import psutil

    snapshot, tiny = world
    run = TrainingRun.objects.create(
        method="sft", config=method_config_clean("sft", {**SFT, "max_steps": 2000}),
        snapshot=snapshot, base_model=tiny["policy"], status=JobStatus.QUEUED,
        queued_at=timezone.now(), max_attempts=1)
    env = worker_env(GAPLAB_RUN_PROCESSES="2", GAPLAB_RUN_PROCESSES_CPU="1",
                     GAPLAB_RUN_REPORT_EVERY="2",
                     GAPLAB_ARTIFACT_ROOT=str(tmp_path / "artifacts"))
    code = ("import django; django.setup(); from training.services.runs import run_execute; "
            f"run_execute(run_id={run.pk})")
    private_before = set(Path(tempfile.gettempdir()).glob("gaplab-run*-rank*-*"))
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launched: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and worker.poll() is None:
            run.refresh_from_db()
            if run.step >= 2:
                break
            time.sleep(0.2)
        assert run.step >= 2, _failure(run)
        launched = psutil.Process(worker.pid).children(recursive=True)
        assert len(launched) >= 3  # the launcher and two ranks
        worker.kill()
        worker.wait(timeout=10)
        _, alive = psutil.wait_procs(launched, timeout=90)
        assert not alive, f"still running: {alive}"
        run.refresh_from_db()
        stopped_at = run.step
        assert run.status == JobStatus.RUNNING and stopped_at < 2000
        assert "processes (gloo on cpu)" in run.log_tail
        assert set(Path(tempfile.gettempdir()).glob("gaplab-run*-rank*-*")) <= private_before
    finally:
        if worker.poll() is None:
            worker.kill()
        for proc in launched:
            if proc.is_running():
                proc.kill()


def test_a_rank_that_raises_fails_the_run_with_its_traceback(world, tmp_path):
    snapshot, tiny = world
    broken = tmp_path / "broken-policy"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    policy = model_register(name="broken", kind="policy", path=broken,
                            tokenizer=tiny["tokenizer"])
    run = run_create(method="sft", snapshot=snapshot, base_model=policy,
                     config={**SFT, "max_steps": 4})
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED, _failure(run)
    assert "The 2 launched processes failed" in run.error
    assert "error-rank" in run.error and "Traceback" in run.error
    assert "is not a valid JSON file" in run.error  # the rank's own exception
    assert "is not a valid JSON file" in run.log_tail.splitlines()[-1]
    assert not RegisteredModel.objects.filter(produced_by=run).exists()
