"""Every URL and API endpoint against the fixed cast: annotator, admin, researcher, outsider,
and anonymous."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import get_resolver
from rest_framework.authtoken.models import Token

from annotation.models import PreferenceExport
from tests.factories import CampaignFactory, ComparisonFactory

ROLES = ["anonymous", "annotator", "admin", "researcher", "outsider"]
LOGIN = "redirect:/accounts/login/"
ADMIN_LOGIN = "redirect:/admin/login/"

# (method, path template, expected per role in ROLES order). Paths use {c} for a campaign id
# and {e} for an export id (the other keys: the world fixture). "redirect:X" means a 302 to a
# URL starting with X.
MATRIX = [
    ("get", "/", [LOGIN, "redirect:/annotate/", "redirect:/quality/", "redirect:/quality/", 403]),
    # The icon is public: a permanent redirect to the static SVG (tests/test_error_pages.py).
    ("get", "/favicon.ico", [301, 301, 301, 301, 301]),
    ("get", "/annotate/", [LOGIN, 200, 403, 403, 403]),
    ("get", "/annotate/{c}/", [LOGIN, 200, 403, 403, 403]),
    ("post", "/annotate/{c}/start/", [LOGIN, "redirect:/annotate/", 403, 403, 403]),
    ("post", "/annotate/{c}/submit/", [LOGIN, 400, 403, 403, 403]),
    ("post", "/annotate/{c}/skip/", [LOGIN, 400, 403, 403, 403]),
    ("post", "/annotate/{c}/skip/undo/", [LOGIN, 400, 403, 403, 403]),
    ("get", "/accounts/login/", [200, 200, 200, 200, 200]),
    ("post", "/accounts/logout/", ["redirect:/accounts/login/"] * 5),
    ("get", "/admin/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, ADMIN_LOGIN]),
    ("get", "/admin/annotation/campaign/import/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200,
                                                   ADMIN_LOGIN]),
    ("get", "/admin/annotation/judgment/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, ADMIN_LOGIN]),
    # Accounts: admins manage annotators and researchers; groups and tokens are superuser-only.
    ("get", "/admin/auth/user/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 403, ADMIN_LOGIN]),
    ("get", "/admin/auth/group/", [ADMIN_LOGIN, ADMIN_LOGIN, 403, 403, ADMIN_LOGIN]),
    ("get", "/admin/authtoken/tokenproxy/", [ADMIN_LOGIN, ADMIN_LOGIN, 403, 403, ADMIN_LOGIN]),
    ("get", "/api/schema/", [200, 200, 200, 200, 200]),
    ("get", "/api/docs/", [200, 200, 200, 200, 200]),
    ("get", "/api/campaigns/", [401, 200, 200, 200, 403]),
    ("post", "/api/campaigns/{c}/next/", [401, 200, 403, 403, 403]),
    ("post", "/api/judgments/", [401, 400, 403, 403, 403]),
    ("post", "/api/assignments/skip/", [401, 400, 403, 403, 403]),
    ("post", "/api/assignments/skip/undo/", [401, 400, 403, 403, 403]),
    ("get", "/api/campaigns/{c}/judgments/", [401, 403, 200, 200, 403]),
    ("post", "/api/campaigns/{c}/import/", [401, 403, 400, 400, 403]),
    ("post", "/api/campaigns/{c}/exports/", [401, 403, 202, 202, 403]),
    ("get", "/api/exports/{e}/", [401, 403, 200, 200, 403]),
    ("get", "/api/exports/{e}/download/", [401, 403, 200, 200, 403]),
    ("get", "/quality/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/quality/me/", [LOGIN, 200, 403, 403, 403]),
    ("get", "/quality/campaigns/{c}/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/quality/campaigns/{c}/annotators/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/quality/campaigns/{c}/annotators/annotator/", [LOGIN, 403, 200, 200, 403]),
    ("post", "/quality/campaigns/{c}/annotators/nobody/unpause/", [LOGIN, 403, 404, 403, 403]),
    ("post", "/quality/campaigns/{c}/alerts/0/acknowledge/", [LOGIN, 403, 404, 403, 403]),
    # "Recompute now": anyone on the dashboards sees its state; only admins queue one.
    ("get", "/quality/campaigns/{c}/recompute/", [LOGIN, 403, 200, 200, 403]),
    ("post", "/quality/campaigns/{c}/recompute/",
     [LOGIN, 403, "redirect:/quality/campaigns/", 403, 403]),
    # The researcher's data page: snapshots and exports, made and downloaded in the browser.
    ("get", "/data/", [LOGIN, 403, 200, 200, 403]),
    ("post", "/data/snapshots/", [LOGIN, 403, 400, 400, 403]),
    ("get", "/data/snapshots/0/download/", [LOGIN, 403, 404, 404, 403]),
    ("post", "/data/exports/", [LOGIN, 403, 400, 400, 403]),
    ("get", "/data/exports/{e}/row/", [LOGIN, 403, 200, 200, 403]),
    ("post", "/data/exports/{e}/cancel/", [LOGIN, 403, 409, 409, 403]),
    ("get", "/data/exports/{e}/download/", [LOGIN, 403, 200, 200, 403]),
    # Training: researchers and admins; {r} is a run that has ended (so cancel is a 409),
    # {a} one of its artifacts, {s} a sweep.
    ("get", "/admin/training/trainingrun/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, ADMIN_LOGIN]),
    ("get", "/admin/training/trainingrun/add/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200,
                                                 ADMIN_LOGIN]),
    ("get", "/admin/training/registeredmodel/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200,
                                                 ADMIN_LOGIN]),
    ("get", "/training/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/training/runs/{r}/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/training/runs/{r}/metrics/", [LOGIN, 403, 200, 200, 403]),
    ("post", "/training/runs/{r}/cancel/", [LOGIN, 403, 409, 409, 403]),
    ("get", "/training/runs/{r}/artifacts/{a}/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/training/sweeps/{s}/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/api/v1/training/runs/", [401, 403, 200, 200, 403]),
    ("post", "/api/v1/training/runs/", [401, 403, 400, 400, 403]),
    ("get", "/api/v1/training/runs/{r}/", [401, 403, 200, 200, 403]),
    ("get", "/api/v1/training/runs/{r}/metrics/", [401, 403, 200, 200, 403]),
    ("post", "/api/v1/training/runs/{r}/cancel/", [401, 403, 409, 409, 403]),
    ("post", "/api/v1/training/sweeps/", [401, 403, 400, 400, 403]),
    ("get", "/api/v1/training/sweeps/{s}/", [401, 403, 200, 200, 403]),
    # Experiments: researchers and admins; {x} is an experiment that has ended (cancel: 409).
    ("get", "/admin/evaluation/experiment/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, ADMIN_LOGIN]),
    ("get", "/admin/evaluation/experiment/add/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200,
                                                  ADMIN_LOGIN]),
    ("get", "/admin/evaluation/experiment/{x}/change/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200,
                                                         ADMIN_LOGIN]),
    ("get", "/api/v1/experiments/", [401, 403, 200, 200, 403]),
    ("post", "/api/v1/experiments/", [401, 403, 400, 400, 403]),
    ("get", "/api/v1/experiments/{x}/", [401, 403, 200, 200, 403]),
    ("post", "/api/v1/experiments/{x}/cancel/", [401, 403, 409, 409, 403]),
    # Eval rounds: {v} has no judgments yet (compute: 409).
    ("get", "/admin/evaluation/evalround/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, ADMIN_LOGIN]),
    ("get", "/admin/evaluation/evalround/add/", [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200,
                                                 ADMIN_LOGIN]),
    ("get", "/api/v1/eval-rounds/", [401, 403, 200, 200, 403]),
    ("post", "/api/v1/eval-rounds/", [401, 403, 400, 400, 403]),
    ("get", "/api/v1/eval-rounds/{v}/", [401, 403, 200, 200, 403]),
    ("post", "/api/v1/eval-rounds/{v}/compute/", [401, 403, 409, 409, 403]),
    # Gap pages: researchers and admins.
    ("get", "/gap/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/gap/experiments/{x}/", [LOGIN, 403, 200, 200, 403]),
    ("get", "/gap/charts/{n}", [LOGIN, 403, 200, 200, 403]),
]


@pytest.fixture
def world(cast, tmp_path, settings):
    from evaluation.models import Experiment
    from training.models import ModelKind, RegisteredModel, RunArtifact, Sweep, TrainingRun
    from training.services.runs import run_create

    campaign = CampaignFactory()
    ComparisonFactory.create_batch(3, campaign=campaign)
    path = tmp_path / "export.jsonl"
    path.write_text("")
    export = PreferenceExport.objects.create(
        campaign=campaign, status=PreferenceExport.Status.SUCCEEDED, path=str(path)
    )
    reward = tmp_path / "rm"
    reward.mkdir()
    rm = RegisteredModel.objects.create(name="rm", kind=ModelKind.REWARD, path=str(reward))
    run = run_create(method="ai_judge", campaign=campaign, reward_models=[rm])
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path
    (tmp_path / "labels.jsonl").write_text("{}\n")
    artifact = RunArtifact.objects.create(run=run, name="labels.jsonl", size=3, sha256="0",
                                          path=str(tmp_path / "labels.jsonl"))
    sweep = Sweep.objects.create(method="sft", grid={"seed": [0]})
    experiment = Experiment.objects.create(status=Experiment.Status.SUCCEEDED)
    return {"c": campaign.pk, "e": export.pk, "r": run.pk, "a": artifact.pk, "s": sweep.pk,
            "x": experiment.pk, "v": _eval_round().pk, "n": "noise_vs_gap.csv"}


def _eval_round():
    """An eval round opened for people on a finished policy run's samples (nobody judged)."""
    from evaluation.eval_rounds import eval_round_create
    from training.methods.common import POLICY_SAMPLES_FILE
    from training.models import RunArtifact, TrainingRun
    from training.services.runs import file_sha256, run_dir

    policy = TrainingRun.objects.create(method="sft", status=TrainingRun.Status.SUCCEEDED)
    run_dir(policy).mkdir(parents=True)
    file = run_dir(policy) / POLICY_SAMPLES_FILE
    file.write_text("".join(json.dumps({
        "prompt_index": i, "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
        "policy": [f"It is {2 * i}."], "reference": [f"{2 * i + 1}"]}) + "\n" for i in range(2)))
    RunArtifact.objects.create(run=policy, name=POLICY_SAMPLES_FILE, path=str(file),
                               size=file.stat().st_size, sha256=file_sha256(file))
    return eval_round_create(run=policy, n_items=2)


def _client(cast, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(cast[role])
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "template", "expected"), MATRIX,
                         ids=[f"{m} {t}" for m, t, _ in MATRIX])
def test_permission_matrix(cast, world, method, template, expected):
    path = template.format(**world)
    for role, want in zip(ROLES, expected, strict=True):
        resp = getattr(_client(cast, role), method)(path)
        if isinstance(want, str):
            target = want.removeprefix("redirect:")
            assert resp.status_code == 302, (role, path, resp.status_code)
            assert resp["Location"].startswith(target), (role, path, resp["Location"])
        else:
            assert resp.status_code == want, (role, path, resp.status_code)


def test_matrix_covers_every_non_admin_url():
    """A new URL without a row here fails, so no endpoint escapes the permission check."""
    covered = {t.split("{")[0].rstrip("/") for _, t, _ in MATRIX}
    patterns = []

    def walk(resolver, prefix=""):
        for p in resolver.url_patterns:
            route = prefix + str(p.pattern)
            if hasattr(p, "url_patterns"):
                if not route.startswith("admin/"):
                    walk(p, route)
            else:
                patterns.append("/" + route.split("<")[0].rstrip("/"))

    walk(get_resolver())
    missing = [p for p in patterns if p.rstrip("/") not in covered and p != "/"]
    assert not missing, missing


@pytest.mark.django_db
def test_api_token_auth_works_without_session(cast, world):
    token = Token.objects.create(user=cast["annotator"])
    client = Client()
    resp = client.post(f"/api/campaigns/{world['c']}/next/",
                       HTTP_AUTHORIZATION=f"Token {token.key}")
    assert resp.status_code == 200
    item = resp.json()
    resp = client.post("/api/judgments/", data=json.dumps({
        "token": item["token"], "choice": "left", "strength": 2,
        "idempotency_key": "api-1", "seconds_spent": 2.5,
    }), content_type="application/json", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert resp.status_code == 201, resp.content
    assert Client().post(f"/api/campaigns/{world['c']}/next/",
                         HTTP_AUTHORIZATION="Token wrong").status_code == 401


@pytest.mark.django_db
def test_annotator_sees_only_their_own_work(cast, world, client_for):
    """Another annotator's token is refused by both the page and the API."""
    from annotation.services import Role, user_create_with_role

    mine = client_for("annotator").post(f"/api/campaigns/{world['c']}/next/").json()
    other = user_create_with_role(username="other", password="pw-12345678", role=Role.ANNOTATOR)
    intruder = Client()
    intruder.force_login(other)
    resp = intruder.post("/api/judgments/", data=json.dumps({
        "token": mine["token"], "choice": "tie", "idempotency_key": "steal",
        "seconds_spent": 1}), content_type="application/json")
    assert resp.status_code == 404 and "not yours" in resp.json()["detail"]
    resp = intruder.post("/api/assignments/skip/", data=json.dumps(
        {"token": mine["token"], "reason": "x"}), content_type="application/json")
    assert resp.status_code == 404


@pytest.mark.django_db
def test_role_groups_carry_admin_permissions(cast):
    assert cast["admin"].has_perm("annotation.change_campaign")
    assert cast["researcher"].has_perm("annotation.add_campaign")
    assert not cast["researcher"].has_perm("annotation.delete_campaign")
    assert not cast["annotator"].has_perm("annotation.view_judgment")
    assert not cast["admin"].has_perm("annotation.change_judgment")
