"""Eval rounds (issue 9 part 7): a real SFT run writes its measured replies beside π₀'s, a round
puts them before a simulated pool through the annotation services, and the policy's win rate
with its interval becomes the run's r*. Bad inputs are field errors that write nothing; the
admin page and the REST twin go through the same service.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.urls import include, path

from annotation.models import Campaign, Choice, Comparison, JobStatus, Judgment, Response
from evaluation.eval_rounds import (
    EvalRoundError,
    eval_round_create,
    eval_round_result,
    win_rate_interval,
)
from evaluation.models import EvalRound
from training.methods.base import RESULT_REWARD_TRUE_WINRATE
from training.methods.common import POLICY_SAMPLES_FILE, jsonl_read
from training.models import RunArtifact, TrainingRun
from training.services.runs import file_sha256, run_create, run_dir, run_execute

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

# The REST twin is mounted by config/urls.py once the lead adds its include; here it is
# mounted by this module (``pytest.mark.urls``) beside the admin.
urlpatterns = [path("admin/", admin.site.urls),
               path("api/v1/eval-rounds/", include("evaluation.urls.eval_rounds"))]

MEASURE = {"kl_prompts": 6, "kl_samples": 2, "max_new_tokens": 12}
KEY = RESULT_REWARD_TRUE_WINRATE


@pytest.fixture(scope="module")
def small_policy(tmp_path_factory) -> str:
    """A 1-layer, 32-wide Llama policy on a tokenizer trained on the arithmetic world's text
    (as in tests/training/test_policy_methods.py): a real run of it takes seconds."""
    from evaluation.corpus import world_corpus
    from training.modeling import tiny_models_write

    built = tiny_models_write(world_corpus("arithmetic", n_prompts=60, seed=0),
                              tmp_path_factory.mktemp("eval_rounds"), name="t", seed=0,
                              vocab_size=512, hidden=32, layers=1, heads=2)
    return built["policy"][0]


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path / "artifacts"
    return settings.GAPLAB_ARTIFACT_ROOT


def _handmade_run(*, method: str = "sft", status: str = JobStatus.SUCCEEDED,
                  n_prompts: int = 4, samples: bool = True) -> TrainingRun:
    """A run row as a finished worker leaves it, with a samples.jsonl in policy_finish's
    format (for checks that need no training; the real one is the first test's)."""
    run = TrainingRun.objects.create(method=method, status=status)
    if samples:
        folder = run_dir(run)
        folder.mkdir(parents=True)
        file = folder / POLICY_SAMPLES_FILE
        file.write_text("".join(json.dumps({
            "prompt_index": i, "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "policy": [f"It is {2 * i}.", "?"], "reference": [f"{2 * i + 1}", "!"]}) + "\n"
            for i in range(n_prompts)))
        RunArtifact.objects.create(run=run, name=POLICY_SAMPLES_FILE, path=str(file),
                                   size=file.stat().st_size, sha256=file_sha256(file))
    return run


def _counts() -> tuple[int, int, int, int]:
    return (Campaign.objects.count(), Comparison.objects.count(), Response.objects.count(),
            EvalRound.objects.count())


def test_a_trained_policy_is_judged_against_its_reference_and_gets_a_win_rate(
        db, artifacts, small_policy):
    from tests.training.support import world_snapshot
    from training.methods.base import ModelRef
    from training.modeling import policy_load, sample
    from training.services.runs import model_register

    snapshot = world_snapshot(name="arith-eval", n_prompts=8, pool="expert:3")
    base = model_register(name="small-policy", kind="policy", path=small_policy)
    run = run_create(method="sft", snapshot=snapshot, base_model=base,
                     config={"max_steps": 4, "batch_size": 8, "learning_rate": 1e-2,
                             **MEASURE}, seed=3)
    run = run_execute(run_id=run.pk)
    assert run.status == JobStatus.SUCCEEDED, run.error

    # samples.jsonl: the run's artifact, one line per measured prompt, both sides' replies.
    artifact = RunArtifact.objects.get(run=run, name=POLICY_SAMPLES_FILE)
    records = jsonl_read(Path(artifact.path))
    assert len(records) == MEASURE["kl_prompts"]
    assert all(len(r["policy"]) == len(r["reference"]) == MEASURE["kl_samples"]
               and r["prompt"][-1]["role"] == "user" for r in records)
    # The reference replies are π₀'s (here the base) drawn with the measurement's settings.
    pi0, tokenizer = policy_load(ModelRef(id=base.pk, path=small_policy, kind="policy"))
    again = sample(pi0, tokenizer, [r["prompt"] for r in records], n=MEASURE["kl_samples"],
                   max_new_tokens=MEASURE["max_new_tokens"], temperature=1.0, seed=run.seed)
    assert again == [r["reference"] for r in records]
    assert any(r["policy"] != r["reference"] for r in records)  # trained: it moved

    eval_round = eval_round_create(run=run, pool="crowd:3", overlap=3, seed=5)
    comparisons = list(Comparison.objects.filter(campaign=eval_round.campaign)
                       .select_related("response_a", "response_b", "prompt"))
    assert eval_round.n_items == len(comparisons) == len(records)
    assert {c.kind for c in comparisons} == {Comparison.Kind.EVAL}
    by_prompt = {json.dumps(r["prompt"], sort_keys=True): r for r in records}
    sides = []
    for c in comparisons:
        record = by_prompt[json.dumps(c.prompt.turns, sort_keys=True)]
        mine = c.response_a if c.response_a.source_version == "policy" else c.response_b
        other = c.response_b if mine is c.response_a else c.response_a
        assert (mine.text, other.text) == (record["policy"][0], record["reference"][0])
        assert other.source_version == "reference"
        assert "utility" in mine.features  # a world's run: r* kept beside, never shown
        sides.append(mine is c.response_a)
    assert 0 < sum(sides) < len(sides)  # seeded sides, both used

    # The pool judged every comparison ``overlap`` times; the rate is their count.
    judgments = list(Judgment.objects.filter(campaign=eval_round.campaign,
                                             superseded_by__isnull=True,
                                             comparison__kind=Comparison.Kind.EVAL)
                     .select_related("comparison__response_a", "comparison__response_b"))
    assert len(judgments) == 3 * len(comparisons) == eval_round.n_judgments
    score = 0.0
    for j in judgments:
        chosen = {Choice.A: j.comparison.response_a,
                  Choice.B: j.comparison.response_b}.get(j.choice)
        score += 0.5 if chosen is None else float(chosen.source_version == "policy")
    assert eval_round.win_rate == pytest.approx(score / len(judgments))
    assert 0.0 <= eval_round.lo <= eval_round.win_rate <= eval_round.hi <= 1.0
    assert eval_round.lo < eval_round.hi and eval_round.computed_at is not None

    run.refresh_from_db()
    assert run.result[KEY] == eval_round.win_rate
    assert (run.result[f"{KEY}_lo"], run.result[f"{KEY}_hi"], run.result[f"{KEY}_n"]) == (
        eval_round.lo, eval_round.hi, float(len(judgments)))
    assert "kl" in run.result  # the run's own result is kept


def test_bad_inputs_are_field_errors_and_write_nothing(db, artifacts):
    queued = _handmade_run(status=JobStatus.QUEUED, samples=False)
    no_samples = _handmade_run(method="reward_model", samples=False)
    good = _handmade_run(n_prompts=4)
    before = _counts()
    cases = [
        ({"run": queued}, {"run"}),
        ({"run": no_samples}, {"run"}),
        ({"run": good, "n_items": 0}, {"n_items"}),
        ({"run": good, "n_items": 5}, {"n_items"}),  # only 4 measured prompts
        ({"run": good, "pool": "crowd"}, {"pool"}),
        ({"run": good, "pool": "crowd:3"}, {"pool"}),  # no world to read the prompts
        ({"run": good, "overlap": 0, "seed": 2**40}, {"overlap", "seed"}),
        ({"run": queued, "n_items": 0, "pool": "nobody:2"}, {"run", "n_items", "pool"}),
    ]
    for kwargs, fields in cases:
        with pytest.raises(EvalRoundError) as caught:
            eval_round_create(**kwargs)
        assert caught.value.errors.keys() == fields, (kwargs, caught.value.errors)
    assert _counts() == before

    # A round for people opens its campaign; computing it before anyone judged says so.
    eval_round = eval_round_create(run=good, n_items=3, seed=1)
    assert eval_round.campaign.is_active and eval_round.n_items == 3
    assert Comparison.objects.filter(campaign=eval_round.campaign).count() == 3
    with pytest.raises(EvalRoundError) as caught:
        eval_round_result(eval_round)
    assert caught.value.errors.keys() == {"campaign"}
    good.refresh_from_db()
    assert KEY not in good.result and eval_round.win_rate is None
    with pytest.raises(EvalRoundError) as caught:  # its name is taken now
        eval_round_create(run=good, seed=1, name=eval_round.campaign.name)
    assert caught.value.errors.keys() == {"name"}


def test_a_best_of_n_run_is_judged_kept_reply_against_a_plain_draw(db, artifacts):
    """best_of_n's samples.jsonl holds every π₀ sample with the kept one marked: the policy
    side is the kept reply, the reference side the prompt's first sample."""
    run = TrainingRun.objects.create(method="best_of_n", status=JobStatus.SUCCEEDED)
    folder = run_dir(run)
    folder.mkdir(parents=True)
    file = folder / POLICY_SAMPLES_FILE
    lines = [{"prompt_index": p, "sample_index": k, "completion": f"p{p} s{k}",
              "prompt": [{"role": "user", "content": f"q{p}"}], "best": k == 2 - p}
             for p in range(3) for k in range(3)]
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    RunArtifact.objects.create(run=run, name=POLICY_SAMPLES_FILE, path=str(file),
                               size=file.stat().st_size, sha256=file_sha256(file))
    eval_round = eval_round_create(run=run, seed=2)
    pairs = set()
    for c in Comparison.objects.filter(campaign=eval_round.campaign).select_related(
            "response_a", "response_b"):
        sides = {c.response_a.source_version: c.response_a.text,
                 c.response_b.source_version: c.response_b.text}
        pairs.add((sides["policy"], sides["reference"]))
    assert pairs == {("p0 s2", "p0 s0"), ("p1 s1", "p1 s0"), ("p2 s0", "p2 s0")}


def test_the_interval_is_over_prompts():
    assert win_rate_interval([[1.0, 1.0], [1.0]], seed=0) == (1.0, 1.0, 1.0)
    assert win_rate_interval([[1.0, 0.0, 0.5]], seed=0) == (0.5, 0.0, 1.0)  # one prompt
    # Agreeing judges on split prompts: as wide as the prompts say, not as 40 judgments would.
    split = [[1.0] * 4] * 5 + [[0.0] * 4] * 5
    rate, lo, hi = win_rate_interval(split, seed=0)
    assert rate == 0.5 and lo < 0.33 and hi > 0.67  # Wilson on 40: [0.37, 0.63]


@pytest.mark.urls(__name__)
def test_admin_add_page_and_rest_twin_go_through_the_service(db, artifacts, client):
    staff = User.objects.create_superuser("boss", password="pw-12345678")
    client.force_login(staff)
    run = _handmade_run(n_prompts=4)
    queued = _handmade_run(status=JobStatus.QUEUED, samples=False)
    assert client.get("/admin/evaluation/evalround/add/").status_code == 200
    resp = client.post("/admin/evaluation/evalround/add/",
                       {"run": run.pk, "n_items": 0, "overlap": 3, "seed": 0})
    assert resp.status_code == 200 and b"errorlist" in resp.content
    assert b"n_items is between 1" in resp.content and not EvalRound.objects.exists()
    resp = client.post("/admin/evaluation/evalround/add/",
                       {"run": queued.pk, "overlap": 3, "seed": 0})
    assert resp.status_code == 200 and b"only a succeeded run" in resp.content
    resp = client.post("/admin/evaluation/evalround/add/",
                       {"run": run.pk, "n_items": 2, "overlap": 2, "seed": 0})
    assert resp.status_code == 302
    eval_round = EvalRound.objects.get()
    assert eval_round.campaign.overlap == 2 and eval_round.requested_by == staff
    assert Comparison.objects.filter(campaign=eval_round.campaign).count() == 2
    listing = client.get("/admin/evaluation/evalround/")
    assert listing.status_code == 200 and eval_round.campaign.name.encode() in listing.content
    action = client.post("/admin/evaluation/evalround/", {
        "action": "compute_win_rate", "_selected_action": [eval_round.pk]}, follow=True)
    assert action.status_code == 200 and b"no judgments yet" in action.content

    api = "/api/v1/eval-rounds/"
    resp = client.post(api, {"run": run.pk, "n_items": 9}, content_type="application/json")
    assert resp.status_code == 400 and set(resp.json()) == {"n_items"}
    resp = client.post(api, {"run": run.pk, "seed": 4}, content_type="application/json")
    assert resp.status_code == 201 and resp.json()["n_items"] == 4
    assert client.get(api).json()["count"] == 2
    compute = client.post(f"{api}{resp.json()['id']}/compute/")
    assert compute.status_code == 409 and "no judgments yet" in compute.json()["detail"]
