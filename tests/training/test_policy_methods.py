"""The policy methods called directly (no worker, no database): SFT makes π₀ from a world's
candidate replies, DPO trains against an explicit reference and measures its KL, best-of-n
writes every sample with its scores, ReST runs its rounds.

Models are 1-layer, 32-wide Llamas on a tokenizer trained on the arithmetic world's text, so
each run takes seconds; the snapshot rows are built from the world with its utility as a
perfect annotator.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from django.test import override_settings

from training.methods import best_of_n, dpo, rest, sft
from training.methods.base import ConfigError, ModelRef, NullReporter, RunContext, config_build
from training.methods.common import ensemble_combine, jsonl_read, rows_prompts, sft_examples

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

SMALL = {"kl_prompts": 4, "kl_samples": 2, "max_new_tokens": 12}


def _rows(n_prompts: int, seed: int) -> list[dict]:
    """Two preference pairs per prompt of the arithmetic world, ordered by its utility."""
    from evaluation.worlds import get_world

    world = get_world("arithmetic")
    rng = random.Random(seed)
    rows = []
    for prompt in world.generate_prompts(n_prompts, seed, categories=("addition", "subtraction")):
        candidates = world.candidate_responses(prompt, rng)
        for _ in range(2):
            a, b = rng.sample(candidates, 2)
            if world.utility(prompt, a) < world.utility(prompt, b):
                a, b = b, a
            rows.append({"prompt": prompt.turns, "chosen": [{"role": "assistant", "content": a}],
                         "rejected": [{"role": "assistant", "content": b}],
                         "weight": rng.uniform(0.5, 1.0), "margin": 1.0})
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Rows, a tiny base policy, two reward models (seeds 0 and 1) and the world's r*."""
    from evaluation.corpus import world_corpus
    from evaluation.rewards import world_reward_function
    from training.modeling import model_save, tiny_models_write, tiny_reward_build, tokenizer_load

    root = tmp_path_factory.mktemp("policy_methods")
    sizes = {"hidden": 32, "layers": 1, "heads": 2}
    built = tiny_models_write(world_corpus("arithmetic", n_prompts=60, seed=0), root,
                              name="t", seed=0, vocab_size=512, **sizes)
    base = ModelRef(id=1, path=built["policy"][0], kind="policy")
    rm0 = ModelRef(id=2, path=built["reward"][0], kind="reward")
    tokenizer = tokenizer_load(rm0)
    model_save(tiny_reward_build(tokenizer, seed=1, **sizes), tokenizer, root / "t-reward-1")
    rm1 = ModelRef(id=3, path=str(root / "t-reward-1"), kind="reward")
    return {"rows": _rows(12, 0), "base": base, "rms": [rm0, rm1], "root": root,
            "r_star": world_reward_function("arithmetic")}


def _ctx(module, world, config: dict, out: Path, **kw) -> RunContext:
    fields = {"rows": world["rows"], "base_model": world["base"], "reward_models": world["rms"],
              "true_reward": world["r_star"], "seed": 0, **kw}
    return RunContext(config=config_build(module.Config, config), output_dir=out,
                      reporter=NullReporter(), **fields)


def _named(reporter: NullReporter, name: str) -> list[tuple[int, float]]:
    return [(step, row[name]) for step, row in reporter.rows if name in row]


@pytest.fixture(scope="module")
def sft_run(world):
    """π₀: the base fine-tuned on every candidate reply of the rows (shared by the DPO tests)."""
    ctx = _ctx(sft, world, {"max_steps": 16, "batch_size": 8, "learning_rate": 3e-3,
                            "kl_every": 8, **SMALL}, world["root"] / "sft")
    with override_settings(GAPLAB_RUN_REPORT_EVERY=2, GAPLAB_RUN_CHECKPOINT_EVERY=8):
        result = sft.run(ctx)
    return ctx, result


# --- Pure helpers ------------------------------------------------------------------------------


def test_prompts_and_sft_examples_come_from_the_rows(world):
    """Distinct prompts, seeded order; 'both' learns chosen and rejected replies, 'chosen' only
    the winners, each (prompt, reply) once."""
    rows = world["rows"]
    prompts = rows_prompts(rows)
    assert len(prompts) == 12 and len({json.dumps(p) for p in prompts}) == 12
    assert rows_prompts(rows, limit=5, seed=3) == rows_prompts(rows, limit=5, seed=3)
    both = sft_examples(rows, targets="both")
    chosen = sft_examples(rows, targets="chosen")
    assert len(chosen) <= len(rows) < len(both) <= 2 * len(rows)
    assert all(e["completion"][0]["role"] == "assistant" for e in both)
    assert {json.dumps(e) for e in chosen} <= {json.dumps(e) for e in both}


def test_ensemble_scores_are_mean_minus_k_std_or_the_minimum():
    members = [[1.0, 0.0], [3.0, 0.0]]
    assert ensemble_combine(members) == [2.0, 0.0]
    assert ensemble_combine(members, k=1.0) == [1.0, 0.0]
    assert ensemble_combine(members, rule="min") == [1.0, 0.0]
    assert ensemble_combine([[0.5, -1.0]], k=3.0) == [0.5, -1.0]


# --- SFT ---------------------------------------------------------------------------------------


def test_sft_lowers_the_loss_and_produces_a_loadable_policy(world, sft_run):
    from training.modeling import policy_load, sample

    ctx, result = sft_run
    losses = _named(ctx.reporter, "loss")
    assert len(losses) >= 4 and losses[-1][1] < losses[0][1]
    assert [step for step, _ in _named(ctx.reporter, "kl")][:1] == [8]  # during training
    assert {"kl", "kl_se", "reward_proxy", "reward_true"} <= result.metrics.keys()
    assert ctx.reporter.checkpoints  # every GAPLAB_RUN_CHECKPOINT_EVERY steps
    [model] = result.models
    assert model.kind == "policy" and model.meta["parameters"] > 0
    policy, tokenizer = policy_load(ModelRef(id=None, path=str(model.path), kind="policy"))
    texts = sample(policy, tokenizer, rows_prompts(world["rows"], limit=2), n=2,
                   max_new_tokens=8, temperature=1.0, seed=0)
    assert [len(t) for t in texts] == [2, 2]


# --- DPO ---------------------------------------------------------------------------------------


def test_dpo_against_an_explicit_reference_records_a_positive_kl(world, sft_run, tmp_path):
    """π₀ is the SFT policy, passed as the run's reference: KL to it is measured during and
    after training, in nats with a standard error, and is above 0 once the policy moved."""
    pi0 = ModelRef(id=4, path=str(sft_run[1].models[0].path), kind="policy")
    ctx = _ctx(dpo, world, {"max_steps": 6, "batch_size": 8, "learning_rate": 5e-3,
                            "beta": 0.1, "kl_every": 3, **SMALL}, tmp_path,
               base_model=pi0, reference_model=pi0)
    with override_settings(GAPLAB_RUN_REPORT_EVERY=1, GAPLAB_RUN_CHECKPOINT_EVERY=100):
        result = dpo.run(ctx)
    assert [step for step, _ in _named(ctx.reporter, "kl")][0] == 3
    m = result.metrics
    assert m["kl"] > 0 and m["kl_se"] > 0 and math.isfinite(m["kl"])
    assert {"reward_proxy", "reward_true", "rewards/margins"} <= m.keys() | {
        k for _, row in ctx.reporter.rows for k in row}
    assert result.models[0].meta["loss_type"] == "sigmoid"


def test_robust_dpo_takes_the_measured_noise_as_its_flip_rate(world, sft_run, tmp_path):
    pi0 = ModelRef(id=4, path=str(sft_run[1].models[0].path), kind="policy")
    ctx = _ctx(dpo, world, {"loss_type": "robust", "use_weight": True, "max_steps": 2,
                            "batch_size": 4, "kl_every": 0, **SMALL}, tmp_path,
               base_model=pi0, noise_epsilon=0.2, reward_models=[], true_reward=None)
    result = dpo.run(ctx)
    assert result.metrics["label_smoothing"] == pytest.approx(0.2)
    assert "kl" in result.metrics and "reward_proxy" not in result.metrics
    assert result.models[0].meta["label_smoothing"] == pytest.approx(0.2)
    explicit = config_build(dpo.Config, {"loss_type": "robust", "label_smoothing": 0.05})
    assert dpo.label_smoothing_resolve(explicit, 0.2) == 0.05


def test_dpo_config_errors_name_the_field():
    cases = [({"loss_type": "nope"}, "loss_type"),
             ({"label_smoothing": 0.1}, "label_smoothing"),  # sigmoid ignores it
             ({"loss_type": "ipo", "label_smoothing": 0.1}, "label_smoothing"),
             ({"loss_type": "exo_pair", "label_smoothing": 0.0}, "label_smoothing"),
             ({"loss_type": "robust", "label_smoothing": 0.5}, "label_smoothing"),
             ({"beta": 0.0}, "beta")]
    for data, field in cases:
        with pytest.raises(ConfigError) as exc:
            config_build(dpo.Config, data)
        assert field in exc.value.errors, data
    robust = config_build(dpo.Config, {"loss_type": "robust"})
    with pytest.raises(ValueError, match="0.5"):
        dpo.label_smoothing_resolve(robust, 0.6)
    assert dpo.label_smoothing_resolve(robust, None) == 0.0
    assert dpo.label_smoothing_resolve(config_build(dpo.Config, {"loss_type": "exo_pair"}),
                                       None) == dpo.EXO_DEFAULT_SMOOTHING


# --- Best-of-n ---------------------------------------------------------------------------------


BON = {"n": 4, "n_prompts": 6, "prompts_per_batch": 4, "max_new_tokens": 10, "ensemble_k": 1.0}


def test_best_of_n_writes_every_sample_and_keeps_the_highest_score(world, tmp_path):
    ctx = _ctx(best_of_n, world, BON, tmp_path)
    result = best_of_n.run(ctx)
    [path] = result.artifacts
    records = [json.loads(line) for line in path.read_text().splitlines()]
    by_prompt: dict[int, list[dict]] = {}
    for r in records:
        by_prompt.setdefault(r["prompt_index"], []).append(r)
    assert sorted(by_prompt) == list(range(6))
    for samples in by_prompt.values():
        assert len(samples) == 4 and len(samples[0]["scores"]) == 2
        [best] = [s for s in samples if s["best"]]
        assert best["score"] == max(s["score"] for s in samples)
        assert all(s["reward_true"] is not None for s in samples)
        mean = sum(best["scores"]) / 2
        std = math.sqrt(sum((x - mean) ** 2 for x in best["scores"]) / 2)
        assert best["score"] == pytest.approx(mean - std)  # ensemble_k = 1
    m = result.metrics
    assert m["n"] == 4 and m["kl"] == pytest.approx(math.log(4) - 3 / 4)
    assert m["score"] >= m["score_base"]
    assert {"reward_proxy", "reward_true", "reward_true_base"} <= m.keys()
    assert ctx.reporter.steps[-1] == (2, 2) and not result.models  # two batches, no training


def test_best_of_n_is_seeded_and_a_killed_run_resumes_to_the_same_file(world, tmp_path):
    first = best_of_n.run(_ctx(best_of_n, world, BON, tmp_path / "a"))
    full = first.artifacts[0].read_text()
    again = best_of_n.run(_ctx(best_of_n, world, BON, tmp_path / "b"))
    assert again.artifacts[0].read_text() == full
    assert again.metrics == first.metrics
    other = best_of_n.run(_ctx(best_of_n, world, BON, tmp_path / "c", seed=1))
    assert other.artifacts[0].read_text() != full
    # Killed after the first batch (4 prompts x 4 samples) while writing the second.
    killed = tmp_path / "d" / best_of_n.SAMPLES_FILE
    killed.parent.mkdir()
    lines = full.splitlines(keepends=True)
    killed.write_text("".join(lines[:16 + 3]) + lines[19][:20])
    resumed = best_of_n.run(_ctx(best_of_n, world, BON, killed.parent, resume_from=killed))
    assert killed.read_text() == full and resumed.metrics == first.metrics


# --- ReST --------------------------------------------------------------------------------------


def test_rest_runs_two_rounds_with_metrics_per_round(world, tmp_path):
    config = {"rounds": 2, "n_prompts": 6, "samples_per_prompt": 3, "threshold": 0.5,
              "threshold_step": 0.2, "steps_per_round": 3, "batch_size": 4,
              "learning_rate": 3e-3, "kl_every": 0, **SMALL}
    ctx = _ctx(rest, world, config, tmp_path)
    with override_settings(GAPLAB_RUN_REPORT_EVERY=1, GAPLAB_RUN_CHECKPOINT_EVERY=100):
        result = rest.run(ctx)
    m = result.metrics
    for r in (1, 2):
        assert 0 < m[f"round{r}_kept_fraction"] <= 1
        assert {f"round{r}_kl", f"round{r}_reward_proxy", f"round{r}_reward_true",
                f"round{r}_grow_reward_proxy"} <= m.keys()
    assert m["round2_kept_fraction"] < m["round1_kept_fraction"]  # threshold 0.5, then 0.7
    rounds = [(step, row["round"]) for step, row in ctx.reporter.rows if "round" in row]
    assert rounds == [(3, 1.0), (6, 2.0)]
    assert ctx.reporter.steps[-1] == (6, 6)
    [model] = result.models
    assert model.path == tmp_path / "round-2" / "policy" and (model.path / "config.json").exists()
    # Each round's grown samples, and the last round's measured replies beside π₀'s (what an
    # eval round judges).
    assert all(p.exists() for p in result.artifacts) and len(result.artifacts) == 3
    measured = jsonl_read(tmp_path / "samples.jsonl")
    assert measured and all(r["policy"] and len(r["reference"]) == len(r["policy"])
                            for r in measured)
    # A second attempt finds both rounds done and trains nothing.
    shutil.rmtree(tmp_path / "round-2" / "checkpoints", ignore_errors=True)
    again = rest.run(_ctx(rest, world, config, tmp_path))
    assert again.metrics == m


def test_a_killed_sft_run_resumes_from_its_checkpoint(world, tmp_path):
    """The second attempt starts at the recorded checkpoint's step, not at 0."""
    config = {"max_steps": 2, "batch_size": 4, "kl_every": 0, **SMALL, "kl_prompts": 2}
    with override_settings(GAPLAB_RUN_REPORT_EVERY=1, GAPLAB_RUN_CHECKPOINT_EVERY=1):
        first = _ctx(sft, world, config, tmp_path)
        sft.run(first)
        checkpoint = Path(first.reporter.checkpoints[0])
        assert checkpoint.name == "checkpoint-1"
        shutil.rmtree(tmp_path / "checkpoints" / "checkpoint-2")  # killed before step 2's save
        second = _ctx(sft, world, config, tmp_path, resume_from=checkpoint)
        result = sft.run(second)
    assert [step for step, _ in _named(second.reporter, "loss")] == [2]
    assert result.metrics["steps"] == 2 and result.models
