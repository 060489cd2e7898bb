"""The training pages: who may see and act, a run's live page (progress, log, cancel) and its
polling that stops when the run ends, the chart JSON, artifact downloads that never leave the
artifact folder, the sweep table, and the admin's add page and actions, which queue through
the run services (or say what is wrong and queue nothing).

Runs are created through ``run_create`` and stay queued (no worker here: the test transaction
never commits, so the outbox never publishes); running and ended states come from the real
job services (``job_start``, ``RunReporter``, ``job_succeed``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from annotation.models import JobStatus, OutboxMessage, Snapshot
from annotation.services.jobs import job_start, job_succeed
from tests.factories import CampaignFactory
from training.models import ModelKind, RegisteredModel, RunArtifact, Sweep, TrainingRun
from training.services.progress import RunReporter
from training.services.runs import run_create, sweep_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def artifact_root(settings, tmp_path) -> Path:
    root = tmp_path / "artifacts"
    root.mkdir()
    settings.GAPLAB_ARTIFACT_ROOT = root
    return root


@pytest.fixture
def inputs(tmp_path) -> dict:
    campaign = CampaignFactory()
    snapshot = Snapshot.objects.create(campaign=campaign, method="majority",
                                       content_hash="a" * 64, path=str(tmp_path / "s.jsonl"),
                                       row_count=0)
    for name in ("policy", "reward"):
        (tmp_path / name).mkdir()
    policy = RegisteredModel.objects.create(name="pi0", kind=ModelKind.POLICY,
                                            path=str(tmp_path / "policy"))
    reward = RegisteredModel.objects.create(name="rm", kind=ModelKind.REWARD,
                                            path=str(tmp_path / "reward"))
    return {"campaign": campaign, "snapshot": snapshot, "policy": policy, "reward": reward}


@pytest.fixture
def run(inputs) -> TrainingRun:
    return run_create(method="sft", snapshot=inputs["snapshot"], base_model=inputs["policy"],
                      name="page-run")


def _running(run: TrainingRun) -> RunReporter:
    started = job_start(TrainingRun, job_id=run.pk)
    assert started is not None
    return RunReporter(started)


# --- Permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize("role,code", [("annotator", 403), ("outsider", 403),
                                       ("admin", 200), ("researcher", 200)])
def test_annotators_and_outsiders_get_403_staff_see_the_pages(client_for, run, role, code):
    client = client_for(role)
    for url in ("/training/", f"/training/runs/{run.pk}/",
                f"/training/runs/{run.pk}/metrics/"):
        assert client.get(url).status_code == code, (role, url)


def test_an_annotator_cannot_cancel(client_for, run):
    assert client_for("annotator").post(f"/training/runs/{run.pk}/cancel/").status_code == 403
    assert TrainingRun.objects.get(pk=run.pk).status == JobStatus.QUEUED


def test_anonymous_is_sent_to_log_in(client_for, run):
    resp = client_for(None).get(f"/training/runs/{run.pk}/")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")


# --- The run list -----------------------------------------------------------------------------


def test_run_list_filters_by_method_and_status(client_for, inputs, run):
    other = run_create(method="ai_judge", campaign=inputs["campaign"], name="judge-run",
                       reward_models=[inputs["reward"]])
    client = client_for("researcher")
    page = client.get("/training/").content.decode()
    assert f'data-run="{run.pk}"' in page and f'data-run="{other.pk}"' in page
    page = client.get("/training/", {"method": "sft"}).content.decode()
    assert f'data-run="{run.pk}"' in page and f'data-run="{other.pk}"' not in page
    page = client.get("/training/", {"status": "running"}).content.decode()
    assert "data-run=" not in page
    # An htmx filter gets only the table; a bad filter value means "all".
    frag = client.get("/training/", {"method": "nope"}, HTTP_HX_REQUEST="true").content.decode()
    assert frag.lstrip().startswith('<div id="run-table"') and f'data-run="{other.pk}"' in frag


# --- The run page -----------------------------------------------------------------------------


def test_a_queued_run_page_polls_and_offers_cancel(client_for, run):
    page = client_for("admin").get(f"/training/runs/{run.pk}/").content.decode()
    status = re.search(r'<section class="card" id="run-status".*?>', page, re.S).group(0)
    assert 'hx-trigger="every 2s"' in status
    assert f'action="/training/runs/{run.pk}/cancel/"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert f'data-url="/training/runs/{run.pk}/metrics/"' in page
    assert "js/training.js" in page and "vendor/chart.umd.min.js" in page


def test_a_running_run_shows_progress_and_log_and_a_poll_returns_only_the_status(client_for,
                                                                                run):
    reporter = _running(run)
    reporter.log("epoch 1 begins")
    reporter.progress(30, 120)
    client = client_for("researcher")
    page = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert 'data-status="running"' in page and "step 30 of 120 (25%)" in page
    assert 'value="0.2500"' in page and "epoch 1 begins" in page
    frag = client.get(f"/training/runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert frag.lstrip().startswith('<section class="card" id="run-status"')
    assert 'hx-trigger="every 2s"' in frag and "<h1>" not in frag


def test_polling_stops_once_the_run_has_ended(client_for, run):
    reporter = _running(run)
    reporter.progress(10, 10)
    assert job_succeed(reporter.run, result={"loss": 0.25, "registered_models": []})
    frag = client_for("admin").get(f"/training/runs/{run.pk}/",
                                   HTTP_HX_REQUEST="true").content.decode()
    assert 'data-status="succeeded"' in frag
    assert "hx-trigger" not in frag and "hx-get" not in frag
    assert "Cancel run" not in frag
    assert re.search(r"<dt>loss</dt><dd>0\.2500</dd>", frag)


def test_cancel_from_the_page_ends_a_queued_run_and_stops_polling(client_for, run):
    client = client_for("researcher")
    frag = client.post(f"/training/runs/{run.pk}/cancel/", HTTP_HX_REQUEST="true")
    assert frag.status_code == 200
    html = frag.content.decode()
    assert 'data-status="cancelled"' in html and "hx-trigger" not in html
    assert TrainingRun.objects.get(pk=run.pk).status == JobStatus.CANCELLED
    # Once ended, a second cancel is refused: 409 without htmx, said in the fragment with it.
    assert client.post(f"/training/runs/{run.pk}/cancel/").status_code == 409
    again = client.post(f"/training/runs/{run.pk}/cancel/", HTTP_HX_REQUEST="true")
    assert 'id="run-cancel-error"' in again.content.decode()


def test_cancel_of_a_running_run_is_requested_and_the_reporter_sees_it(client_for, run):
    reporter = _running(run)
    resp = client_for("admin").post(f"/training/runs/{run.pk}/cancel/")
    assert resp.status_code == 302 and resp["Location"] == f"/training/runs/{run.pk}/"
    reporter._checked_at = 0.0  # it reads the flag at most once a second
    assert reporter.cancelled() and reporter.cancel_seen
    assert TrainingRun.objects.get(pk=run.pk).cancel_requested


def test_cancel_needs_post(client_for, run):
    assert client_for("admin").get(f"/training/runs/{run.pk}/cancel/").status_code == 405


# --- Chart data -------------------------------------------------------------------------------


def test_chart_json_groups_metrics_and_returns_only_newer_steps(client_for, run):
    reporter = _running(run)
    for step in (1, 2, 3):
        reporter.metrics(step, {"loss": 1.0 / step, "rewards/chosen": 0.1 * step,
                                "objective/kl": 0.01 * step, "learning_rate": 1e-4})
    reporter.progress(3, 10)
    client = client_for("researcher")
    data = client.get(f"/training/runs/{run.pk}/metrics/").json()
    assert data["series"]["loss"] == [[1, 1.0], [2, 0.5], [3, 1.0 / 3]]
    assert data["groups"] == {"loss": "loss", "rewards/chosen": "reward", "objective/kl": "kl",
                              "learning_rate": "other"}
    assert data["last_step"] == 3 and data["terminal"] is False and data["step"] == 3
    newer = client.get(f"/training/runs/{run.pk}/metrics/", {"after_step": 2}).json()
    assert newer["series"]["loss"] == [[3, 1.0 / 3]]
    none = client.get(f"/training/runs/{run.pk}/metrics/", {"after_step": 3}).json()
    assert none["series"] == {} and none["last_step"] == 3
    assert client.get(f"/training/runs/{run.pk}/metrics/",
                      {"after_step": "-1"}).status_code == 400


# --- Artifacts --------------------------------------------------------------------------------


def _artifact(run: TrainingRun, path: Path, name: str) -> RunArtifact:
    return RunArtifact.objects.create(run=run, name=name, path=str(path), size=0, sha256="0")


def test_an_artifact_downloads_for_staff_only(client_for, run, artifact_root):
    folder = artifact_root / "runs" / str(run.pk) / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden": 128}')
    artifact = _artifact(run, folder / "config.json", "model/config.json")
    url = f"/training/runs/{run.pk}/artifacts/{artifact.pk}/"
    resp = client_for("researcher").get(url)
    assert resp.status_code == 200
    assert b"".join(resp.streaming_content) == b'{"hidden": 128}'
    assert 'filename="config.json"' in resp["Content-Disposition"]
    assert client_for("annotator").get(url).status_code == 403
    # The artifact must belong to the run in the URL.
    other = run_create(method="sft", snapshot=run.snapshot, base_model=run.base_model)
    assert client_for("admin").get(
        f"/training/runs/{other.pk}/artifacts/{artifact.pk}/").status_code == 404


def test_an_artifact_path_outside_the_root_is_refused(client_for, run, artifact_root, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (artifact_root / "runs").mkdir()
    link = artifact_root / "runs" / "link.txt"
    link.symlink_to(secret)
    traversal = artifact_root / "runs" / ".." / ".." / "secret.txt"
    client = client_for("admin")
    for path in (secret, link, traversal, Path(settings.BASE_DIR) / "manage.py",
                 artifact_root / "runs"):
        artifact = _artifact(run, path, f"x{path.name}{len(str(path))}")
        resp = client.get(f"/training/runs/{run.pk}/artifacts/{artifact.pk}/")
        assert resp.status_code == 404, path


# --- Sweeps -----------------------------------------------------------------------------------


def test_the_sweep_page_has_one_line_per_child_with_kl_and_proxy_reward(client_for, inputs):
    sweep = sweep_create(method="sft", snapshot=inputs["snapshot"], base_model=inputs["policy"],
                         grid={"seed": [3, 5]})
    first, second = sweep.runs.order_by("pk")
    reporter = _running(first)
    assert job_succeed(reporter.run, result={"kl": 0.42, "reward_proxy": 1.5,
                                             "registered_models": []})
    client = client_for("researcher")
    page = client.get(f"/training/sweeps/{sweep.pk}/").content.decode()
    rows = re.findall(r'<tr data-run="(\d+)" data-status="(\w+)">(.*?)</tr>', page, re.S)
    assert [(int(r), s) for r, s, _ in rows] == [(first.pk, "succeeded"), (second.pk, "queued")]
    assert '<td class="num" data-key="seed" data-label="seed">3</td>' in rows[0][2]
    assert '<td class="num" data-col="kl" data-label="KL">0.4200</td>' in rows[0][2]
    assert ('<td class="num" data-col="proxy_reward" data-label="Proxy reward">1.5000</td>'
            in rows[0][2])
    assert '<td class="num" data-col="kl" data-label="KL">—</td>' in rows[1][2]
    # A child still queued keeps the table polling; with all ended it stops.
    assert 'hx-trigger="every 2s"' in page
    from training.services.runs import run_cancel

    run_cancel(run=second)
    frag = client.get(f"/training/sweeps/{sweep.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert frag.lstrip().startswith('<div id="sweep-table"') and "hx-trigger" not in frag
    assert client_for("annotator").get(f"/training/sweeps/{sweep.pk}/").status_code == 403


# --- Admin ------------------------------------------------------------------------------------


def test_admin_add_run_queues_through_run_create(client_for, inputs):
    client = client_for("researcher")
    assert client.get("/admin/training/trainingrun/add/").status_code == 200
    resp = client.post("/admin/training/trainingrun/add/", {
        "method": "sft", "snapshot": inputs["snapshot"].pk, "base_model": inputs["policy"].pk,
        "seed": 4, "config": "{}", "name": "from-admin"})
    run = TrainingRun.objects.get(name="from-admin")
    assert resp.status_code == 302 and resp["Location"] == f"/training/runs/{run.pk}/"
    assert run.status == JobStatus.QUEUED and run.seed == 4 and run.config  # defaults filled
    assert OutboxMessage.objects.filter(task="training.run_execute", args=[run.pk],
                                        queue="gpu").exists()


def test_admin_add_run_with_bad_config_names_the_fields_and_queues_nothing(client_for, inputs):
    resp = client_for("admin").post("/admin/training/trainingrun/add/", {
        "method": "sft", "base_model": inputs["reward"].pk, "seed": 0,
        "config": '{"no_such_field": 1}'})
    assert resp.status_code == 400
    form = resp.context["form"]
    assert "snapshot" in form.errors and "base_model" in form.errors
    assert any("no_such_field" in e for e in form.errors["config"])
    assert not TrainingRun.objects.exists() and not OutboxMessage.objects.exists()


def test_a_run_is_view_only_in_the_admin(client_for, run):
    client = client_for("admin")
    page = client.get(f"/admin/training/trainingrun/{run.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    resp = client.post(f"/admin/training/trainingrun/{run.pk}/change/", {"status": "succeeded"})
    assert resp.status_code == 403
    assert TrainingRun.objects.get(pk=run.pk).status == JobStatus.QUEUED


def test_admin_cancel_action(client_for, run):
    resp = client_for("admin").post("/admin/training/trainingrun/", {
        "action": "cancel_runs", "_selected_action": [run.pk]})
    assert resp.status_code == 302
    assert TrainingRun.objects.get(pk=run.pk).status == JobStatus.CANCELLED


def test_snapshot_action_trains_a_reward_model_ensemble_as_a_seed_sweep(client_for, inputs,
                                                                       tmp_path):
    (tmp_path / "encoder").mkdir()
    encoder = RegisteredModel.objects.create(name="enc", kind=ModelKind.REWARD,
                                             path=str(tmp_path / "encoder"))
    client = client_for("researcher")
    url = "/admin/annotation/snapshot/"
    base = {"action": "train_reward_ensemble", "_selected_action": [inputs["snapshot"].pk]}
    page = client.post(url, base)
    assert page.status_code == 200 and 'name="seeds"' in page.content.decode()
    resp = client.post(url, {**base, "apply": "1", "seeds": "0, 1, 2", "seed": 0,
                             "base_model": encoder.pk, "config": ""})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    sweep = Sweep.objects.get()
    assert sweep.grid == {"seed": [0, 1, 2]} and sweep.snapshot == inputs["snapshot"]
    assert sorted(sweep.runs.values_list("seed", flat=True)) == [0, 1, 2]


def test_an_action_with_a_bad_grid_shows_errors_and_queues_nothing(client_for, inputs):
    client = client_for("admin")
    url = "/admin/training/registeredmodel/"
    base = {"action": "dpo_beta_sweep", "_selected_action": [inputs["reward"].pk]}
    resp = client.post(url, {**base, "apply": "1", "grid_field": "seed",
                             "grid_values": "1, 2", "seed": 0, "config": '{"bogus": 1}'})
    assert resp.status_code == 400
    assert any("bogus" in e for e in resp.context["form"].errors["config"])
    # A valid config without the inputs DPO needs: the first child is refused, the sweep with it.
    resp = client.post(url, {**base, "apply": "1", "grid_field": "seed",
                             "grid_values": "1, 2", "seed": 0, "config": ""})
    assert resp.status_code == 400
    assert {"snapshot", "base_model"} <= resp.context["form"].errors.keys()
    assert not Sweep.objects.exists() and not TrainingRun.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_a_reward_model_action_queues_a_sweep_over_the_chosen_field(client_for, inputs):
    from training.forms import numeric_config_fields

    field = "beta" if "beta" in numeric_config_fields("dpo") else "seed"
    client = client_for("researcher")
    url = "/admin/training/registeredmodel/"
    base = {"action": "dpo_beta_sweep", "_selected_action": [inputs["reward"].pk]}
    page = client.post(url, base).content.decode()
    assert 'name="grid_values"' in page and 'name="snapshot"' in page
    resp = client.post(url, {**base, "apply": "1", "grid_field": field,
                             "grid_values": "0.1, 0.5" if field == "beta" else "1, 2",
                             "snapshot": inputs["snapshot"].pk,
                             "base_model": inputs["policy"].pk, "seed": 0, "config": ""})
    assert resp.status_code == 302
    sweep = Sweep.objects.get()
    assert sweep.method == "dpo" and len(sweep.grid[field]) == 2
    for child in sweep.runs.all():
        assert list(child.reward_models.all()) == [inputs["reward"]]
        assert child.base_model == inputs["policy"]


def test_campaign_action_creates_a_snapshot_with_the_chosen_method(client_for, inputs):
    from annotation.services import assignment_issue_next
    from annotation.services.judgments import judgment_submit_from_screen
    from tests.factories import ComparisonFactory, make_users

    campaign = CampaignFactory(overlap=2)
    ComparisonFactory.create_batch(2, campaign=campaign)
    for n, rater in enumerate(make_users(2, prefix="snap")):
        for i in range(2):
            a = assignment_issue_next(campaign=campaign, annotator=rater)
            judgment_submit_from_screen(token=a.token, annotator=rater,
                                        choice="left" if a.a_on_left else "right", strength=2,
                                        idempotency_key=f"s{n}{i}", seconds_spent=1.0)
    client = client_for("admin")
    base = {"action": "create_snapshot", "_selected_action": [campaign.pk]}
    assert 'name="method"' in client.post("/admin/annotation/campaign/", base).content.decode()
    resp = client.post("/admin/annotation/campaign/", {**base, "apply": "1",
                                                       "method": "majority", "sources": "all"})
    assert resp.status_code == 302
    snapshot = Snapshot.objects.get(campaign=campaign)
    assert snapshot.method == "majority" and snapshot.row_count == 2
