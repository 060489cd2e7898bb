"""Experiments as jobs: created through one validating service (field errors, nothing queued),
queued on the gpu queue through the outbox, executed in-process with progress, cancelled; the
REST twin, the admin add page and ``manage.py experiment --queue`` call the same services."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import JobStatus, OutboxMessage
from evaluation.experiment_jobs import (
    ExperimentConfigError,
    experiment_cancel,
    experiment_create,
    experiment_execute,
)
from evaluation.models import Experiment

pytestmark = pytest.mark.django_db
TASK = "evaluation.experiment_execute"
URL = "/api/v1/experiments/"
# r̂ = r* + noise: nothing is trained, so the whole pipeline runs in a few seconds.
SMALL = {"pool": "expert:3", "n_prompts": 4, "n_eval_prompts": 30, "samples_per_prompt": 8,
         "reward": "utility_noise", "n_lambdas": 8, "n_ns": 6, "n_max": 16, "n_boot": 20,
         "seeds": [1]}


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user)}")
    return client


def _queued_messages():
    return OutboxMessage.objects.filter(task=TASK)


def test_a_bad_spec_names_every_field_and_queues_nothing():
    with pytest.raises(ExperimentConfigError) as caught:
        experiment_create(spec={"flip_rate": 0.7, "aggregation": "vote", "no_such": 1},
                          epsilons=[0.1, 0.6], name="bad")
    assert {"flip_rate", "aggregation", "no_such", "epsilons"} <= caught.value.errors.keys()
    assert not Experiment.objects.exists() and not _queued_messages().exists()


def test_create_queues_on_the_gpu_queue_through_the_outbox(cast):
    experiment = experiment_create(spec={"flip_rate": 0.2}, epsilons=None, name="one",
                                   requested_by=cast["researcher"])
    assert experiment.status == JobStatus.QUEUED and experiment.epsilons == [0.2]
    assert experiment.spec["flip_rate"] == 0.2 and experiment.spec["seeds"] == [0]
    assert experiment.code_version
    assert _queued_messages().filter(args=[experiment.pk], queue="gpu").count() == 1
    from config.celery import app

    assert app.amqp.router.route({}, TASK)["queue"].name == "gpu"


def test_execute_runs_the_sweep_and_stores_result_headline_and_progress(settings, tmp_path):
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path
    experiment = experiment_create(spec=SMALL, epsilons=[0.0, 0.2])

    done = experiment_execute(experiment_id=experiment.pk)
    assert done is not None and done.status == JobStatus.SUCCEEDED, done.error
    experiment.refresh_from_db()
    assert experiment.status == JobStatus.SUCCEEDED and experiment.progress == 1.0
    assert experiment.stage == "done" and experiment.attempts == 1
    assert [r["epsilon_injected"] for r in experiment.result] == [0.0, 0.2]
    assert [a["epsilon_injected"] for a in experiment.headline["arms"]] == [0.0, 0.2]
    assert set(experiment.headline["arms"][0]) >= {"tilting", "best_of_n"}
    json.dumps(experiment.result, allow_nan=False)
    # Redelivery of a finished job does nothing.
    assert experiment_execute(experiment_id=experiment.pk) is None


def test_execute_stores_variant_results_baseline_first(settings, tmp_path):
    """MAPS variants flow through the job: one result per (variant, ε), the baseline's first,
    each with its variant and lever; the headline's arms too, a variant's with its change."""
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path
    spec = {**SMALL, "variants": [{"name": "kl1", "lever": "P", "overrides": {"kl_limit": 1.0}}]}
    experiment = experiment_create(spec=spec, epsilons=[0.0, 0.2])
    assert experiment.spec["variants"][0]["name"] == "kl1"
    experiment_execute(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.status == JobStatus.SUCCEEDED, experiment.error
    order = [(r["variant"], r["lever"], r["epsilon_injected"]) for r in experiment.result]
    assert order == [("baseline", "", 0.0), ("baseline", "", 0.2), ("kl1", "P", 0.0),
                     ("kl1", "P", 0.2)]
    arms = experiment.headline["arms"]
    assert [(a["variant"], a["lever"]) for a in arms] == [(v, lever) for v, lever, _ in order]
    assert "slope_change" not in arms[0]["tilting"]
    change = arms[2]["tilting"]["slope_change"]
    assert change["lo"] <= change["value"] <= change["hi"]
    maps = experiment.result[2]["summary"]["maps"]["best_of_n"]
    assert {"slope_change", "intercept_change"} <= maps.keys()


def test_a_bad_variant_names_its_field_and_queues_nothing(cast):
    bad = {"variants": [{"name": "a", "lever": "P", "overrides": {"ensemble_size": 3}},
                        {"name": "b", "lever": "P", "overrides": {"ensemble_size": 99}}]}
    with pytest.raises(ExperimentConfigError) as caught:
        experiment_create(spec=bad, epsilons=[0.0])
    assert "variants[1].overrides.ensemble_size" in caught.value.errors
    resp = _api(cast["researcher"]).post(URL, {"spec": {**bad, "variants": [
        *bad["variants"], {"name": "c", "lever": "X", "overrides": {}}]}}, format="json")
    assert resp.status_code == 400
    assert {"variants[1].overrides.ensemble_size", "variants[2].lever"} <= \
        resp.json()["spec"].keys()
    assert not Experiment.objects.exists() and not _queued_messages().exists()


def test_a_cancel_seen_at_a_progress_report_ends_it_cancelled(settings, tmp_path,
                                                              monkeypatch):
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path
    experiment = experiment_create(spec=SMALL, epsilons=[0.0])
    import evaluation.experiments as experiments

    def sweep(*, spec, epsilons, progress):
        progress("annotating", 0.25)
        Experiment.objects.filter(pk=experiment.pk).update(cancel_requested=True)
        progress("arm", 0.5)
        raise AssertionError("the sweep must stop at the report after the cancel")

    monkeypatch.setattr(experiments, "experiment_noise_sweep", sweep)
    experiment_execute(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.status == JobStatus.CANCELLED and experiment.stage == "arm"
    assert experiment.progress == 0.5 and "arm" in experiment.error


def test_an_exception_fails_it_with_the_traceback(monkeypatch):
    experiment = experiment_create(spec={}, epsilons=[0.0])
    import evaluation.experiments as experiments

    def sweep(**kwargs):
        raise RuntimeError("boom in the sweep")

    monkeypatch.setattr(experiments, "experiment_noise_sweep", sweep)
    experiment_execute(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.status == JobStatus.FAILED and "boom in the sweep" in experiment.error
    assert "Traceback" in experiment.error


def test_cancel_of_a_queued_experiment_is_immediate_and_an_ended_one_conflicts():
    experiment = experiment_cancel(experiment=experiment_create(spec={}, epsilons=[0.1]))
    assert experiment.status == JobStatus.CANCELLED and experiment.cancel_requested
    # The message still goes out; the worker's job_start finds it cancelled and does nothing.
    assert experiment_execute(experiment_id=experiment.pk) is None
    from annotation.errors import ConflictError

    with pytest.raises(ConflictError):
        experiment_cancel(experiment=experiment)


def test_api_create_list_detail_cancel(cast):
    api = _api(cast["researcher"])
    resp = api.post(URL, {"spec": {"pool": "expert:3"}, "epsilons": [0.0, 0.1],
                          "name": "api"}, format="json")
    assert resp.status_code == 202, resp.json()
    body = resp.json()
    experiment = Experiment.objects.get(pk=body["id"])
    assert body["status"] == "queued" and body["epsilons"] == [0.0, 0.1]
    assert body["spec"]["pool"] == "expert:3" and experiment.requested_by == cast["researcher"]
    assert _queued_messages().filter(args=[experiment.pk], queue="gpu").count() == 1

    listed = api.get(URL, {"status": "queued"}).json()
    assert [e["id"] for e in listed["results"]] == [experiment.pk]
    assert "result" not in listed["results"][0]
    detail = api.get(f"{URL}{experiment.pk}/").json()
    assert {"status", "progress", "stage", "headline", "result"} <= detail.keys()

    resp = api.post(f"{URL}{experiment.pk}/cancel/")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert api.post(f"{URL}{experiment.pk}/cancel/").status_code == 409
    assert api.get(f"{URL}999999/").status_code == 404


def test_api_bad_spec_is_a_400_naming_the_field_and_queues_nothing(cast):
    api = _api(cast["admin"])
    resp = api.post(URL, {"spec": {"flip_rate": 0.7, "no_such": 1}, "epsilons": [0.9]},
                    format="json")
    assert resp.status_code == 400
    errors = resp.json()
    assert {"flip_rate", "no_such"} <= errors["spec"].keys() and errors["epsilons"]
    assert api.post(URL, {"epsilons": [0.1]}, format="json").json().keys() == {"spec"}
    assert not Experiment.objects.exists() and not _queued_messages().exists()


def test_annotators_and_outsiders_are_refused(cast):
    for role in ("annotator", "outsider"):
        api = _api(cast[role])
        assert api.get(URL).status_code == 403
        assert api.post(URL, {"spec": {}}, format="json").status_code == 403
    assert not Experiment.objects.exists()


def test_admin_add_page_queues_through_the_service_or_shows_field_errors(cast, client_for):
    client = client_for("researcher")
    page = client.get("/admin/evaluation/experiment/add/")
    assert page.status_code == 200 and b"flip_rate" in page.content  # the spec fields' help
    resp = client.post("/admin/evaluation/experiment/add/",
                       {"name": "bad", "spec": '{"flip_rate": 0.9}', "epsilons": "0.1, 0.7"})
    assert resp.status_code == 400 and b"flip_rate" in resp.content
    assert not Experiment.objects.exists()
    resp = client.post("/admin/evaluation/experiment/add/",
                       {"name": "ok", "spec": '{"pool": "expert:3"}', "epsilons": "0, 0.2"})
    assert resp.status_code == 302
    experiment = Experiment.objects.get()
    assert experiment.epsilons == [0.0, 0.2] and experiment.status == JobStatus.QUEUED
    changelist = client.post("/admin/evaluation/experiment/", {
        "action": "cancel_experiments", "_selected_action": [experiment.pk]})
    assert changelist.status_code == 302
    experiment.refresh_from_db()
    assert experiment.status == JobStatus.CANCELLED
    assert client.get("/admin/evaluation/experiment/").status_code == 200


def test_command_queue_creates_a_job_and_ends_with_one_json_line():
    out = StringIO()
    call_command("experiment", "--queue", "--pool", "expert:3", "--epsilon", "0",
                 "--epsilon", "0.2", "--name", "cli", stdout=out)
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    experiment = Experiment.objects.get(pk=line["experiment_id"])
    assert line["queue"] == "gpu" and line["status"] == "queued"
    assert experiment.epsilons == [0.0, 0.2] and experiment.name == "cli"
    assert _queued_messages().filter(args=[experiment.pk]).count() == 1
