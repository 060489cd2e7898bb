"""``manage.py train``: queues a run (or a sweep with --grid) through the run services, parses
--set / --grid values as JSON where they parse, refuses a bad config naming the fields, and with
--wait follows the runs to the end and prints one JSON line."""

from __future__ import annotations

import io
import json
import threading

import pytest
from django.core.management import CommandError, call_command

from annotation.models import OutboxMessage, Snapshot
from tests.factories import CampaignFactory
from training.forms import parse_grid, parse_settings
from training.models import ModelKind, RegisteredModel, Sweep, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def inputs(tmp_path) -> dict:
    snapshot = Snapshot.objects.create(campaign=CampaignFactory(), method="majority",
                                       content_hash="c" * 64, path=str(tmp_path / "s.jsonl"),
                                       row_count=0)
    (tmp_path / "p").mkdir()
    policy = RegisteredModel.objects.create(name="pi0", kind=ModelKind.POLICY,
                                            path=str(tmp_path / "p"))
    return {"snapshot": snapshot, "policy": policy}


def _train(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("train", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_values_parse_as_json_where_they_can():
    assert parse_settings(["beta=0.1", "name=abc", "flag=true", "xs=[1, 2]", "k= 3 "]) == {
        "beta": 0.1, "name": "abc", "flag": True, "xs": [1, 2], "k": 3}
    assert parse_grid(["beta=0.05,0.1", "seed=1, 2", "mode=a,b", "xs=[[1],[2]]"]) == {
        "beta": [0.05, 0.1], "seed": [1, 2], "mode": ["a", "b"], "xs": [[1], [2]]}
    for bad in (["novalue"], ["=3"]):
        with pytest.raises(ValueError):
            parse_settings(bad)


def test_train_queues_a_run_and_prints_its_id(inputs):
    out, _ = _train("sft", "--snapshot", str(inputs["snapshot"].pk), "--base",
                    str(inputs["policy"].pk), "--seed", "9")
    first, summary = out.strip().splitlines()
    run = TrainingRun.objects.get()
    assert first == f"run {run.pk}"
    assert run.seed == 9 and run.snapshot == inputs["snapshot"] and run.status == "queued"
    assert OutboxMessage.objects.filter(task="training.run_execute", args=[run.pk]).exists()
    data = json.loads(summary)
    assert data["runs"] == [run.pk] and data["status"] == "queued" and data["sweep"] is None


def test_grid_creates_a_sweep(inputs):
    out, _ = _train("sft", "--snapshot", str(inputs["snapshot"].pk), "--base",
                    str(inputs["policy"].pk), "--grid", "seed=1,2,3")
    sweep = Sweep.objects.get()
    assert out.splitlines()[0] == f"sweep {sweep.pk}"
    assert sorted(sweep.runs.values_list("seed", flat=True)) == [1, 2, 3]
    data = json.loads(out.strip().splitlines()[-1])
    assert data["sweep"] == sweep.pk and len(data["runs"]) == 3


def test_a_bad_set_is_a_command_error_and_queues_nothing(inputs):
    with pytest.raises(CommandError) as exc:
        _train("sft", "--snapshot", str(inputs["snapshot"].pk), "--base",
               str(inputs["policy"].pk), "--set", "no_such_field=1")
    assert "no_such_field" in str(exc.value) and "nothing queued" in str(exc.value)
    with pytest.raises(CommandError, match="key=value"):
        _train("sft", "--set", "oops")
    with pytest.raises(CommandError, match="snapshot"):
        _train("sft", "--base", str(inputs["policy"].pk))
    with pytest.raises(CommandError, match="no such"):
        _train("sft", "--snapshot", "999999")
    assert not TrainingRun.objects.exists() and not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_wait_follows_progress_to_the_end_and_prints_one_json_line(inputs, not_eager):
    """A thread plays the worker: it starts the run, reports steps, and succeeds it, while the
    command polls."""
    from annotation.services.jobs import job_start, job_succeed
    from training.services.progress import RunReporter

    def worker():
        from django.db import connection

        try:
            while not TrainingRun.objects.exists():
                threading.Event().wait(0.05)
            run = TrainingRun.objects.get()
            reporter = RunReporter(job_start(TrainingRun, job_id=run.pk))
            for step in (2, 4):
                reporter.progress(step, 4)
                threading.Event().wait(0.15)
            job_succeed(reporter.run, result={"loss": 0.5, "registered_models": [42]})
        finally:
            connection.close()

    # The command and the thread share the test's data only after a commit: pytest-django's
    # plain db fixture never commits, so this test uses the transactional one.
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        out, err = _train("sft", "--snapshot", str(inputs["snapshot"].pk), "--base",
                          str(inputs["policy"].pk), "--wait", "--poll", "0.05",
                          "--timeout", "30")
    finally:
        thread.join(30)
    data = json.loads(out.strip().splitlines()[-1])
    run = TrainingRun.objects.get()
    assert data["status"] == "succeeded" and data["runs"] == [run.pk]
    assert data["metrics"][str(run.pk)] == {"loss": 0.5} and data["registered_models"] == [42]
    assert "#" * 30 in err and "1/1 ended" in err
