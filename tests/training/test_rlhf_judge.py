"""RLHF (RLOO against reward models, KL to π₀) and the AI judge (labels a campaign through the
annotation services as an ``ai_judge`` annotator), each run directly with tiny models."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from annotation.calibration import gold_correct
from annotation.models import AnnotatorProfile, AnnotatorQuality, Campaign, Comparison, Judgment
from training.methods import ai_judge, rlhf
from training.methods.base import ConfigError, ModelRef, NullReporter, RunContext, config_build

# --- RLHF -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharp_reward(tiny_models, tmp_path_factory) -> ModelRef:
    """The tiny reward model with its scalar head scaled ×30: an untrained head scores replies
    within ±0.1, too flat for a few RL steps to follow; scaled, r̂ differs between replies by
    whole units, as a trained reward model's does."""
    import torch

    from training.modeling import model_save, reward_load

    model, _ = reward_load(tiny_models.reward_ref, device="cpu")
    with torch.no_grad():
        model.score.weight.mul_(30.0)
    path = tmp_path_factory.mktemp("sharp") / "reward"
    model_save(model, None, path)
    return ModelRef(id=None, path=str(path), kind="reward", name="sharp",
                    tokenizer_path=tiny_models.tokenizer_path)


def _rlhf(tiny_models, reward: ModelRef, out: Path, **config) -> tuple[dict, NullReporter]:
    cfg = config_build(rlhf.Config, {
        "learning_rate": 3e-3, "max_steps": 4, "num_generations": 4, "batch_size": 8,
        "max_new_tokens": 8, "kl_prompts": 4, "kl_samples": 4, **config})
    reporter = NullReporter()
    result = rlhf.run(RunContext(
        config=cfg, output_dir=out, reporter=reporter, seed=0,
        rows=[{"prompt": p} for p in tiny_models.prompts], base_model=tiny_models.policy_ref,
        reward_models=[reward]))
    return result, reporter


def test_rlhf_records_kl_to_the_reference_and_penalizes_only_with_a_coefficient(
        tiny_models, sharp_reward, tmp_path, settings):
    """RLOO runs, reports the Monte Carlo KL (nats, > 0) with its standard error during training
    and at the end, and produces a saved policy. The KL penalty is in force only with β > 0:
    TRL's per-token KL of the training batches (kept apart as ``kl_per_token``) is logged then.

    Not asserted: that β = 20 ends closer to π₀ than β = 0. Over the 4-6 steps affordable here
    the KL is mostly the random walk of the first updates (measured: 0.52 vs 0.60 nats at seed
    0, 0.61 vs 0.56 at seed 1, standard errors about 0.15)."""
    settings.GAPLAB_RUN_REPORT_EVERY = 2
    free, free_rep = _rlhf(tiny_models, sharp_reward, tmp_path / "free", kl_coef=0.0,
                           kl_every=2)
    tight, tight_rep = _rlhf(tiny_models, sharp_reward, tmp_path / "tight", kl_coef=20.0,
                             kl_every=0, max_steps=2)

    during = [(step, row) for step, row in free_rep.rows if "kl" in row and step == 2]
    assert during and during[0][1]["kl"] > 0 and during[0][1]["kl_se"] > 0
    logged = {name for _, row in free_rep.rows for name in row}
    assert {"loss", "reward", "rewards/reward_proxy/mean"} <= logged
    assert "kl_per_token" not in logged
    assert any("kl_per_token" in row for _, row in tight_rep.rows)
    for result, steps in ((free, 4), (tight, 2)):
        m = result.metrics
        assert m["steps"] == steps and m["kl"] > 0 and m["kl_se"] > 0
        assert "reward_proxy" in m and "reward_true" not in m  # no world utility given
        (policy,) = result.models
        assert policy.kind == "policy" and (policy.path / "config.json").exists()


def test_rlhf_builds_its_reference_from_the_reference_folder_scores_r_star_and_resumes(
        tiny_models, sharp_reward, tmp_path, settings):
    """The trap: TRL reloads its reference from ``config._name_or_path``. A run whose reference
    model is another folder than its base gets that folder as π₀ (checked inside the run; the
    base copied elsewhere, so KL stays finite), and a world's utility is reported as
    ``reward_true``. A second attempt resumes from the first one's checkpoint."""
    import shutil

    settings.GAPLAB_RUN_CHECKPOINT_EVERY = 2
    settings.GAPLAB_RUN_REPORT_EVERY = 1
    base_copy = tmp_path / "base-copy"
    shutil.copytree(tiny_models.policy_path, base_copy)
    reference = ModelRef(id=None, path=str(base_copy), kind="policy",
                         tokenizer_path=tiny_models.tokenizer_path)

    def attempt(max_steps: int, resume_from: Path | None) -> tuple[object, NullReporter]:
        cfg = config_build(rlhf.Config, {
            "learning_rate": 1e-3, "max_steps": max_steps, "kl_coef": 0.1,
            "num_generations": 2, "batch_size": 4, "max_new_tokens": 6, "kl_prompts": 4,
            "kl_samples": 2, "kl_every": 0})
        reporter = NullReporter()
        result = rlhf.run(RunContext(
            config=cfg, output_dir=tmp_path / "out", reporter=reporter, seed=1,
            rows=[{"prompt": p} for p in tiny_models.prompts[:4]],
            base_model=tiny_models.policy_ref, reference_model=reference,
            reward_models=[sharp_reward, sharp_reward], resume_from=resume_from,
            true_reward=lambda prompts, completions: [-float(len(c)) for c in completions]))
        return result, reporter

    first, reporter = attempt(2, None)
    assert first.models[0].meta["reference"] == str(base_copy)
    assert "reward_true" in first.metrics and first.metrics["reward_true"] <= 0
    assert reporter.checkpoints and reporter.checkpoints[-1].endswith("checkpoint-2")
    second, reporter = attempt(3, Path(reporter.checkpoints[-1]))
    assert second.metrics["steps"] == 3
    # Only the step after the checkpoint was trained again.
    assert [step for step, row in reporter.rows if "loss" in row] == [3]


def test_rlhf_config_needs_whole_groups_per_step():
    with pytest.raises(ConfigError) as exc:
        config_build(rlhf.Config, {"batch_size": 6, "num_generations": 4})
    assert "batch_size" in exc.value.errors
    with pytest.raises(ConfigError):
        config_build(rlhf.Config, {"kl_coef": -1.0})


# --- AI judge -------------------------------------------------------------------------------


PRINCIPLES = "Give the correct number.\nBe concise.\n"


@pytest.fixture
def world_campaign(db) -> Campaign:
    """An arithmetic campaign (8 prompts, 16 regular items, 5 gold items) that one simulated
    expert has judged in full; overlap 2 leaves one slot per item for the judge."""
    from evaluation.services import simulate_campaign, world_campaign_create

    campaign = world_campaign_create(world_name="arithmetic", name="judge-me", n_prompts=8,
                                     seed=3, overlap=2, calibration_rate=0.3,
                                     accuracy_threshold=0.0)
    Campaign.objects.filter(pk=campaign.pk).update(reshow_rate=0.0, principles=PRINCIPLES)
    campaign.refresh_from_db()
    simulate_campaign(campaign=campaign, pool="expert:1", seed=0)
    return campaign


def _judge(campaign: Campaign, tmp_path: Path, **kw) -> tuple[object, NullReporter]:
    config = kw.pop("config")
    reporter = NullReporter()
    ctx = RunContext(config=config_build(ai_judge.Config, config), output_dir=tmp_path,
                     reporter=reporter, seed=0, campaign_id=campaign.pk, **kw)
    return ai_judge.run(ctx), reporter


def test_reward_model_judge_labels_through_assignments_and_is_scored_like_a_person(
        world_campaign, tiny_models, tmp_path):
    """Its judgments are an ``ai_judge`` annotator's, made through real assignments; it answered
    calibration items at the campaign's rate; the quality recompute gives it a gold accuracy
    (the share of its gold answers that gold accepts) like anyone's."""
    from annotation.services.quality import campaign_quality_recompute

    result, reporter = _judge(world_campaign, tmp_path, reward_models=[tiny_models.reward_ref],
                              config={"backend": "reward_model", "judge_name": "tiny rm"})
    judgments = list(Judgment.objects.filter(
        campaign=world_campaign, annotator__annotator_profile__kind=AnnotatorProfile.Kind.AI_JUDGE
    ).select_related("comparison", "assignment", "annotator"))
    assert judgments and {j.annotator.username for j in judgments} == {"ai-judge-tiny-rm"}
    assert all(j.assignment.annotator_id == j.annotator_id for j in judgments)
    assert all(j.rationale.startswith("reward model") for j in judgments)
    gold = [j for j in judgments if j.comparison.kind == Comparison.Kind.CALIBRATION]
    assert gold, "the judge was issued calibration items"
    m = result.metrics
    assert m["n_judged"] == len(judgments) and m["n_calibration"] == len(gold)
    correct = [gold_correct(j.choice, gold_choice=j.comparison.gold_choice,
                            gold_accepts=j.comparison.gold_accepts) for j in gold]
    assert m["gold_accuracy"] == pytest.approx(sum(correct) / len(correct))
    assert 0 <= m["peer_agreement"] <= 1 and m["seconds"] > 0

    campaign_quality_recompute(campaign=world_campaign)
    row = AnnotatorQuality.objects.get(campaign=world_campaign, annotator=judgments[0].annotator)
    assert row.n_judgments == len(judgments) and row.n_gold == len(gold)
    assert row.gold_accuracy == pytest.approx(sum(correct) / len(correct))
    assert row.position_bias is not None

    # Run again: the same annotator, and nothing left for it (every item was offered once).
    again, _ = _judge(world_campaign, tmp_path, reward_models=[tiny_models.reward_ref],
                      config={"backend": "reward_model", "judge_name": "tiny rm"})
    assert again.metrics["n_judged"] == 0
    assert Judgment.objects.filter(annotator=judgments[0].annotator).count() == len(judgments)


def test_causal_lm_judge_reads_the_principles_and_cancels_position_bias(
        world_campaign, tiny_models, tmp_path):
    """The local LM judges a few items in both orders; its margin for (left, right) is exactly
    minus its margin for (right, left), so a constant preference for a slot drops out."""
    result, _ = _judge(world_campaign, tmp_path, base_model=tiny_models.policy_ref,
                       config={"backend": "causal_lm", "max_items": 3, "judge_name": "tiny lm"})
    assert result.metrics["n_judged"] == 3
    judged = Judgment.objects.filter(annotator__username="ai-judge-tiny-lm")
    assert judged.count() == 3 and all("swapped" in j.rationale for j in judged)

    judge = ai_judge.CausalLMJudge(tiny_models.policy_ref,
                                   config_build(ai_judge.Config, {"backend": "causal_lm"}),
                                   ai_judge.principles_lines(PRINCIPLES))
    turns = tiny_models.prompts[0]
    one = judge.decide(turns, "The answer is 12.", "I think it is 15, maybe.")
    other = judge.decide(turns, "I think it is 15, maybe.", "The answer is 12.")
    assert one.margin == pytest.approx(-other.margin, abs=1e-5)
    assert one.margin != 0


def test_judge_backends_say_what_they_miss(world_campaign, tmp_path, settings):
    settings.GAPLAB_JUDGE_URL = ""
    with pytest.raises(ConfigError, match="GAPLAB_JUDGE_URL"):
        _judge(world_campaign, tmp_path, config={"backend": "endpoint", "endpoint_model": "m"})
    with pytest.raises(ConfigError) as exc:
        config_build(ai_judge.Config, {"backend": "endpoint"})
    assert "endpoint_model" in exc.value.errors
    with pytest.raises(ConfigError, match="reward model"):
        _judge(world_campaign, tmp_path, config={"backend": "reward_model"})
    with pytest.raises(ConfigError, match="base model"):
        _judge(world_campaign, tmp_path, config={"backend": "causal_lm"})
    Campaign.objects.filter(pk=world_campaign.pk).update(principles="")
    with pytest.raises(ConfigError, match="principles"):
        _judge(world_campaign, tmp_path, config={"backend": "causal_lm"})
    assert not Judgment.objects.filter(
        annotator__annotator_profile__kind=AnnotatorProfile.Kind.AI_JUDGE).exists()


class _AlwaysA(BaseHTTPRequestHandler):
    """A chat-completions endpoint on loopback that always answers "A" (pure slot bias)."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _AlwaysA.seen.append({"auth": self.headers.get("Authorization"), "body": body})
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A"}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args):
        pass


def test_endpoint_judge_asks_both_orders_and_a_slot_biased_judge_only_ties(
        world_campaign, tmp_path, settings):
    server = HTTPServer(("127.0.0.1", 0), _AlwaysA)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _AlwaysA.seen = []
    try:
        settings.GAPLAB_JUDGE_URL = f"http://127.0.0.1:{server.server_port}/v1"
        settings.GAPLAB_JUDGE_KEY = "sekrit"
        result, _ = _judge(world_campaign, tmp_path, config={
            "backend": "endpoint", "endpoint_model": "judge-1", "max_items": 2})
    finally:
        server.shutdown()
        server.server_close()
    assert result.metrics["n_judged"] == 2 and result.metrics["n_ties"] == 2
    assert len(_AlwaysA.seen) == 4
    assert {s["auth"] for s in _AlwaysA.seen} == {"Bearer sekrit"}
    assert {s["body"]["model"] for s in _AlwaysA.seen} == {"judge-1"}
    assert "Give the correct number." in _AlwaysA.seen[0]["body"]["messages"][0]["content"]


def test_judge_run_through_the_run_service_names_its_reward_model(world_campaign,
                                                                   tiny_registered):
    """As a queued run: the campaign and the registered reward model reach the method, the
    judge's account is named after the model's id, and the run stores its metrics."""
    from annotation.models import JobStatus
    from training.models import RunMetric
    from training.services.runs import run_create, run_execute

    run = run_create(method="ai_judge", campaign=world_campaign,
                     reward_models=[tiny_registered["reward"]], config={"max_items": 5})
    run = run_execute(run_id=run.pk)
    assert run.status == JobStatus.SUCCEEDED, run.error
    username = f"ai-judge-reward_model-{tiny_registered['reward'].pk}"
    assert Judgment.objects.filter(annotator__username=username).count() == 5
    assert RunMetric.objects.filter(run=run, name="n_judged").latest("id").value == 5
