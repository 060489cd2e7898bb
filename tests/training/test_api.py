"""The training REST API: create a run or a sweep, list, detail, metrics, cancel. A run that
does not validate is a 400 naming each field (config fields under ``config``) and leaves no
run and no outbox message behind."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import JobStatus, OutboxMessage, Snapshot
from annotation.services.jobs import job_start, job_succeed
from tests.factories import CampaignFactory
from training.models import ModelKind, RegisteredModel, Sweep, TrainingRun
from training.services.progress import RunReporter

pytestmark = pytest.mark.django_db
RUNS = "/api/v1/training/runs/"


@pytest.fixture
def api(cast) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=cast['researcher'])}")
    return client


@pytest.fixture
def inputs(tmp_path) -> dict:
    campaign = CampaignFactory()
    snapshot = Snapshot.objects.create(campaign=campaign, method="majority",
                                       content_hash="b" * 64, path=str(tmp_path / "s.jsonl"),
                                       row_count=0)
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    policy = RegisteredModel.objects.create(name="pi0", kind=ModelKind.POLICY,
                                            path=str(tmp_path / "p"))
    reward = RegisteredModel.objects.create(name="rm", kind=ModelKind.REWARD,
                                            path=str(tmp_path / "r"))
    return {"campaign": campaign, "snapshot": snapshot, "policy": policy, "reward": reward}


def _create(api, inputs, **extra):
    body = {"method": "sft", "snapshot": inputs["snapshot"].pk,
            "base_model": inputs["policy"].pk, "reward_models": [inputs["reward"].pk],
            "seed": 7, "name": "api-run", **extra}
    return api.post(RUNS, body, format="json")


def test_create_queues_a_run_on_the_gpu_queue(api, inputs):
    resp = _create(api, inputs)
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    run = TrainingRun.objects.get(pk=body["id"])
    assert body["status"] == "queued" and body["seed"] == 7 and body["method"] == "sft"
    assert body["reward_models"] == [inputs["reward"].pk] and run.requested_by.username == \
        "researcher"
    assert body["config"] == run.config and run.config  # every default filled in
    assert OutboxMessage.objects.filter(task="training.run_execute", args=[run.pk],
                                        queue="gpu").count() == 1


def test_a_bad_config_is_a_400_naming_every_field_and_queues_nothing(api, inputs):
    resp = api.post(RUNS, {"method": "sft", "base_model": inputs["reward"].pk,
                           "config": {"no_such_field": 1, "also_bad": "x"}}, format="json")
    assert resp.status_code == 400
    errors = resp.json()
    assert {"snapshot", "base_model", "config"} <= errors.keys()
    assert {"no_such_field", "also_bad"} <= errors["config"].keys()
    assert all(isinstance(v, list) and v for v in errors["config"].values())
    assert not TrainingRun.objects.exists() and not OutboxMessage.objects.exists()


@pytest.mark.parametrize("body,field", [
    ({"method": "ppo"}, "method"),
    ({"method": "sft", "snapshot": 999999}, "snapshot"),
    ({"method": "sft", "reference_model": "x"}, "reference_model"),
    ({"method": "sft", "config": [1, 2]}, "config"),
])
def test_malformed_input_is_a_400_on_that_field(api, body, field):
    resp = api.post(RUNS, body, format="json")
    assert resp.status_code == 400 and field in resp.json()
    assert not TrainingRun.objects.exists() and not OutboxMessage.objects.exists()


def test_a_reward_model_given_as_reference_is_refused(api, inputs):
    resp = _create(api, inputs, reference_model=inputs["reward"].pk)
    assert resp.status_code == 400 and "reference_model" in resp.json()


def test_list_filters_and_pages(api, inputs):
    ids = [_create(api, inputs, seed=s).json()["id"] for s in range(3)]
    judge = api.post(RUNS, {"method": "ai_judge", "campaign": inputs["campaign"].pk,
                            "reward_models": [inputs["reward"].pk]}, format="json").json()["id"]
    page = api.get(RUNS, {"limit": 2}).json()
    assert page["count"] == 4 and len(page["results"]) == 2
    assert [r["id"] for r in page["results"]] == [judge, ids[2]]  # newest first
    sft = api.get(RUNS, {"method": "sft"}).json()
    assert sorted(r["id"] for r in sft["results"]) == ids
    assert api.get(RUNS, {"status": "running"}).json()["count"] == 0
    assert api.get(RUNS, {"status": "bogus"}).status_code == 400


def test_detail_metrics_and_cancel(api, inputs):
    run_id = _create(api, inputs).json()["id"]
    reporter = RunReporter(job_start(TrainingRun, job_id=run_id))
    for step in (1, 2, 3):
        reporter.metrics(step, {"loss": 2.0 / step, "objective/kl": 0.1 * step})
    reporter.log("step three")
    reporter.progress(3, 12)
    detail = api.get(f"{RUNS}{run_id}/").json()
    assert detail["status"] == "running" and detail["step"] == 3
    assert detail["progress"] == pytest.approx(0.25) and "step three" in detail["log_tail"]

    metrics = api.get(f"{RUNS}{run_id}/metrics/", {"name": "loss"}).json()
    assert [(m["step"], m["value"]) for m in metrics["results"]] == [
        (1, 2.0), (2, 1.0), (3, pytest.approx(2 / 3))]
    newer = api.get(f"{RUNS}{run_id}/metrics/", {"after_step": 1}).json()
    assert {(m["step"], m["name"]) for m in newer["results"]} == {
        (2, "loss"), (3, "loss"), (2, "objective/kl"), (3, "objective/kl")}
    assert api.get(f"{RUNS}{run_id}/metrics/", {"after_step": -1}).status_code == 400

    cancelled = api.post(f"{RUNS}{run_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
    reporter._checked_at = 0.0
    assert reporter.cancelled()
    assert api.get(f"{RUNS}999999/").status_code == 404


def test_cancel_of_an_ended_run_is_a_409(api, inputs):
    run_id = _create(api, inputs).json()["id"]
    started = job_start(TrainingRun, job_id=run_id)
    assert job_succeed(started, result={"loss": 0.1, "registered_models": [5]})
    resp = api.post(f"{RUNS}{run_id}/cancel/")
    assert resp.status_code == 409 and "already ended" in resp.json()["detail"]
    detail = api.get(f"{RUNS}{run_id}/").json()
    assert detail["status"] == "succeeded" and detail["registered_models"] == [5]


def test_a_sweep_queues_one_run_per_point_or_none(api, inputs):
    body = {"method": "sft", "snapshot": inputs["snapshot"].pk,
            "base_model": inputs["policy"].pk, "grid": {"seed": [1, 2, 3]}}
    resp = api.post("/api/v1/training/sweeps/", body, format="json")
    assert resp.status_code == 201, resp.json()
    sweep = resp.json()
    assert [r["point"] for r in sweep["runs"]] == [{"seed": 1}, {"seed": 2}, {"seed": 3}]
    assert all(r["status"] == "queued" for r in sweep["runs"])
    assert OutboxMessage.objects.filter(queue="gpu").count() == 3
    again = api.get(f"/api/v1/training/sweeps/{sweep['id']}/").json()
    assert again["grid"] == {"seed": [1, 2, 3]} and len(again["runs"]) == 3

    bad = api.post("/api/v1/training/sweeps/", {**body, "config": {"nope": 1}}, format="json")
    assert bad.status_code == 400 and "nope" in bad.json()["config"]
    empty = api.post("/api/v1/training/sweeps/", {**body, "grid": {"seed": []}}, format="json")
    assert empty.status_code == 400 and "grid" in empty.json()
    assert Sweep.objects.count() == 1 and TrainingRun.objects.count() == 3
    assert OutboxMessage.objects.count() == 3


def test_annotators_are_refused(cast, inputs):
    client = APIClient()
    client.force_authenticate(cast["annotator"])
    assert client.get(RUNS).status_code == 403
    assert client.post(RUNS, {"method": "sft"}, format="json").status_code == 403
    assert not TrainingRun.objects.exists()


def test_cancel_a_queued_run_through_the_api_ends_it(api, inputs):
    run_id = _create(api, inputs).json()["id"]
    assert api.post(f"{RUNS}{run_id}/cancel/").json()["status"] == JobStatus.CANCELLED
