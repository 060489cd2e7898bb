"""LoRA and TensorBoard reports on the training methods, called directly (no worker, no database).

LoRA: only low-rank adapters train, so every changed weight of the merged, saved model differs
from the base by a matrix of rank at most r, and everything else (embeddings, output head, norms)
is untouched; the saved model loads with ``modeling`` like any other. With π₀ = the base, the KL
is measured against the policy with its adapters disabled, which must agree with the KL of the
saved model against the base loaded on its own. Reports: ``report_to="tensorboard"`` leaves event
files whose scalars are the trainer's losses, listed in ``MethodResult.artifacts``.

Models are the session's tiny 2-layer Llamas (``tiny_models``); a run takes a few seconds.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from django.test import override_settings

from training.methods import dpo, reward_model, rlhf, sft
from training.methods.base import ConfigError, ModelRef, NullReporter, RunContext, config_build
from training.methods.common import Measure, policy_kl

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

SMALL = {"kl_prompts": 4, "kl_samples": 4, "max_new_tokens": 8}
LORA = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}


def _rows(n_prompts: int, seed: int) -> list[dict]:
    """Two preference pairs per arithmetic prompt, ordered by the world's utility."""
    from evaluation.worlds import get_world

    world = get_world("arithmetic")
    rng = random.Random(seed)
    rows = []
    for prompt in world.generate_prompts(n_prompts, seed, categories=("addition",)):
        candidates = world.candidate_responses(prompt, rng)
        for _ in range(2):
            a, b = rng.sample(candidates, 2)
            if world.utility(prompt, a) < world.utility(prompt, b):
                a, b = b, a
            rows.append({"prompt": prompt.turns, "chosen": [{"role": "assistant", "content": a}],
                         "rejected": [{"role": "assistant", "content": b}], "weight": 1.0,
                         "margin": 0.0, "category": "addition"})
    return rows


def _ctx(module, config: dict, out: Path, *, base: ModelRef, **kw) -> RunContext:
    return RunContext(config=config_build(module.Config, config), output_dir=out,
                      reporter=NullReporter(), rows=_rows(10, 0), base_model=base, seed=0, **kw)


def _state(path: str, kind: str) -> dict:
    from training.modeling import policy_load, reward_load

    load = policy_load if kind == "policy" else reward_load
    model, _ = load(ModelRef(id=None, path=path, kind=kind), device="cpu")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _low_rank_changes(before: dict, after: dict, r: int, *, whole: tuple[str, ...] = ()) -> int:
    """Check that each weight either kept its value or moved by a matrix of rank <= r (weights
    named in ``whole`` may change freely); return how many low-rank matrices changed."""
    import torch

    assert before.keys() == after.keys()
    changed = 0
    for name, w0 in before.items():
        delta = (after[name] - w0).double()
        if any(part in name for part in whole) or not delta.abs().max() > 1e-6:
            continue
        assert delta.ndim == 2, f"{name} changed but is not a matrix"
        assert int(torch.linalg.matrix_rank(delta, atol=1e-5)) <= r, name
        changed += 1
    return changed


def test_bad_lora_and_report_values_are_field_errors(monkeypatch):
    for data, field in [({"lora_r": -1}, "lora_r"), ({"report_to": "wandb"}, "report_to"),
                        ({"lora_r": 4, "lora_target_modules": "q proj"}, "lora_target_modules"),
                        ({"lora_dropout": 1.5}, "lora_dropout")]:
        for module in (sft, dpo, rlhf, reward_model):
            with pytest.raises(ConfigError) as exc:
                config_build(module.Config, data)
            assert field in exc.value.errors, (module.__name__, data)
    # A server without the tensorboard package refuses the config when it is made.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError) as exc:
        config_build(dpo.Config, {"report_to": "tensorboard"})
    assert list(exc.value.errors) == ["report_to"]


def test_sft_with_lora_trains_adapters_only_and_reports_to_tensorboard(tiny_models, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from training.modeling import policy_load

    base = tiny_models.policy_ref
    ctx = _ctx(sft, {"max_steps": 8, "batch_size": 8, "learning_rate": 1e-2, "kl_every": 4,
                     "report_to": "tensorboard", **LORA, **SMALL}, tmp_path, base=base)
    with override_settings(GAPLAB_RUN_REPORT_EVERY=2, GAPLAB_RUN_CHECKPOINT_EVERY=100):
        result = sft.run(ctx)

    [model] = result.models
    meta = model.meta
    assert meta["lora_r"] == 4
    assert 0 < meta["lora_trainable_parameters"] < 0.1 * meta["parameters"]
    # Only adapters trained: the merged weights moved by rank <= 4 (attention and MLP
    # projections), embeddings, norms and the output head did not move at all.
    assert _low_rank_changes(_state(base.path, "policy"), _state(str(model.path), "policy"),
                             4) >= 7 * 2  # 7 projections per layer, 2 layers
    # KL during training and at the end, against the adapters-off base ...
    assert [step for step, row in ctx.reporter.rows if "kl" in row][:2] == [4, 8]
    kl, kl_se = result.metrics["kl"], result.metrics["kl_se"]
    assert kl > 0 and kl_se > 0
    # ... agrees with the saved (merged) policy measured against the base loaded on its own.
    saved, tokenizer = policy_load(ModelRef(id=None, path=str(model.path), kind="policy",
                                            tokenizer_path=tiny_models.tokenizer_path))
    reference, _ = policy_load(base)
    again, _ = policy_kl(saved, reference, tokenizer, Measure.from_config(ctx.config, ctx))
    assert again == pytest.approx(kl, rel=1e-3, abs=1e-4)

    # TensorBoard: event files under the run's folder, an artifact, holding the SFT loss.
    folder = tmp_path / "tensorboard"
    assert folder in result.artifacts
    events = list(folder.glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(folder))
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [2, 4, 6, 8]
    reported = [row["loss"] for _, row in ctx.reporter.rows if "loss" in row]
    assert [e.value for e in losses] == pytest.approx(reported, rel=1e-5)


def test_reward_model_with_lora_trains_the_score_head_and_scores_like_it_measured(
        tiny_models, tmp_path):
    from training.methods.reward_model import pair_accuracy, pairs_from_rows, split_pairs
    from training.modeling import reward_load

    base = tiny_models.reward_ref
    ctx = _ctx(reward_model, {"max_steps": 12, "batch_size": 8, "learning_rate": 3e-3,
                              "eval_fraction": 0.3, "group_by_length": False, **LORA},
               tmp_path, base=base)
    with override_settings(GAPLAB_RUN_REPORT_EVERY=4, GAPLAB_RUN_CHECKPOINT_EVERY=100):
        result = reward_model.run(ctx)
    [model] = result.models
    assert model.kind == "reward" and model.meta["lora_r"] == 4
    assert math.isfinite(result.metrics["train_loss"])
    before, after = _state(base.path, "reward"), _state(str(model.path), "reward")
    assert not (before["score.weight"] == after["score.weight"]).all()  # head trained whole
    assert _low_rank_changes(before, after, 4, whole=("score.",)) >= 7 * 2
    assert "tensorboard" not in {p.name for p in result.artifacts}
    # The saved, merged model scores the held-out pairs as the trained peft model did.
    loaded, tokenizer = reward_load(ModelRef(id=None, path=str(model.path), kind="reward"))
    _, held_out = split_pairs(pairs_from_rows(ctx.rows), eval_fraction=0.3, seed=0)
    acc = pair_accuracy(loaded, tokenizer, held_out)
    assert acc["accuracy"] == pytest.approx(result.metrics["eval_accuracy"])


def test_dpo_with_lora_and_the_base_as_reference_records_kl(tiny_models, tmp_path):
    base = tiny_models.policy_ref
    ctx = _ctx(dpo, {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-2, "beta": 0.1,
                     "kl_every": 3, **LORA, **SMALL}, tmp_path, base=base)
    with override_settings(GAPLAB_RUN_REPORT_EVERY=1, GAPLAB_RUN_CHECKPOINT_EVERY=100):
        result = dpo.run(ctx)
    m = result.metrics
    assert [step for step, row in ctx.reporter.rows if "kl" in row][:2] == [3, 6]
    assert m["kl"] > 0 and m["kl_se"] > 0
    # DPO's implicit rewards start at exactly 0: TRL's reference (adapters off) is the base.
    first = next(row for _, row in ctx.reporter.rows if "rewards/margins" in row)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    [model] = result.models
    assert model.meta["lora_r"] == 4
    assert _low_rank_changes(_state(base.path, "policy"), _state(str(model.path), "policy"),
                             4) > 0


def test_rlhf_with_lora_refuses_a_reference_other_than_the_base(tiny_models, tmp_path):
    other = ModelRef(id=99, path=tiny_models.reward_path, kind="policy")
    ctx = _ctx(rlhf, {**LORA}, tmp_path, base=tiny_models.policy_ref, reference_model=other,
               reward_models=[tiny_models.reward_ref])
    with pytest.raises(ConfigError) as exc:
        rlhf.run(ctx)
    assert "lora_r" in exc.value.errors


def test_dpo_with_lora_and_another_reference_trains_against_that_reference(tiny_models,
                                                                            tmp_path):
    """A reference other than the base is passed to TRL as its own frozen model (trl 1.16 takes
    ``ref_model`` beside ``peft_config``): the implicit rewards start away from 0, and the KL
    is measured to that reference."""
    from training.modeling import model_save, policy_load, tiny_policy_build

    base = tiny_models.policy_ref
    _, tokenizer = policy_load(base)
    model_save(tiny_policy_build(tokenizer, seed=1), tokenizer, tmp_path / "other")
    other = ModelRef(id=7, path=str(tmp_path / "other"), kind="policy")
    ctx = _ctx(dpo, {"max_steps": 2, "batch_size": 8, "kl_every": 0, **LORA, **SMALL},
               tmp_path / "run", base=base, reference_model=other)
    with override_settings(GAPLAB_RUN_REPORT_EVERY=1, GAPLAB_RUN_CHECKPOINT_EVERY=100):
        result = dpo.run(ctx)
    first = next(row for _, row in ctx.reporter.rows if "rewards/chosen" in row)
    assert abs(first["rewards/chosen"]) > 1e-3
    reference, _ = policy_load(other)
    saved, _ = policy_load(ModelRef(id=None, path=str(result.models[0].path), kind="policy"))
    again, _ = policy_kl(saved, reference, tokenizer, Measure.from_config(ctx.config, ctx))
    assert again == pytest.approx(result.metrics["kl"], rel=1e-3, abs=1e-4)


def test_rlhf_and_rest_with_lora_produce_merged_policies(tiny_models, tmp_path):
    """RLOO with LoRA takes π₀ as the adapters-off base (no reference loaded); ReST merges each
    round's adapters before the next round. Both save plain, loadable policies."""
    from training.methods import rest
    from training.modeling import policy_load

    base, rms = tiny_models.policy_ref, [tiny_models.reward_ref]
    runs = [(rlhf, {"max_steps": 2, "num_generations": 2, "batch_size": 4, "kl_every": 0}),
            (rest, {"rounds": 2, "n_prompts": 4, "samples_per_prompt": 2, "steps_per_round": 2,
                    "batch_size": 4, "kl_every": 0})]
    for module, config in runs:
        ctx = _ctx(module, {**config, **LORA, **SMALL}, tmp_path / module.__name__, base=base,
                   reward_models=rms)
        result = module.run(ctx)
        [model] = result.models
        assert model.meta["lora_r"] == 4 and math.isfinite(result.metrics["kl"])
        loaded, _ = policy_load(ModelRef(id=None, path=str(model.path), kind="policy",
                                         tokenizer_path=tiny_models.tokenizer_path))
        assert not hasattr(loaded, "peft_config")
        assert _low_rank_changes(_state(base.path, "policy"), _state(str(model.path), "policy"),
                                 4 * (2 if module is rest else 1)) > 0
