"""ReST: grow a dataset from the policy, keep what the proxy rewards, fine-tune on it, repeat.

Method: Gulcehre et al. 2023, "Reinforced Self-Training (ReST) for Language Modeling" (algorithm
1). Each round: **Grow** samples K replies per prompt from the current policy (its own
distribution); **Improve** keeps the replies whose reward-model score clears a threshold and
fine-tunes the policy on them with the SFT loss (TRL ``SFTTrainer``, completion tokens only).
The threshold is a quantile of the round's scores (``threshold_mode="quantile"``) or a reward
value (``"absolute"``); ``threshold_step`` raises it each round, as the paper's Improve steps
use increasing thresholds τ₁ < τ₂ < .... Each round continues from the previous round's policy
(the paper's choice); ``restart_from_base`` fine-tunes the base every round instead (ReST-EM,
Singh et al. 2023, section 3). Rounds are the pressure knob: KL to π₀ grows with them.

With several reward models the score is their mean minus ``ensemble_k`` standard deviations,
or their minimum (Coste et al. 2023; ``training.methods.common``).

Per round (metrics at the round's last optimizer step): ``kept_fraction``, ``threshold``,
``grow_reward_proxy`` (mean r̂ of the grown samples), and of the round's policy ``kl`` /
``kl_se`` (Monte Carlo, nats, to the run's reference or the base), ``reward_proxy``,
``reward_true`` on a world. The final metrics repeat the last round's and add every round's as
``round<r>_<name>``. Every round's samples with their scores are kept in
``round-<r>/samples.jsonl``.

Resumable: a finished round leaves ``round-<r>/policy`` and ``done.json``; a round's grown data
is written before its training, and the trainer checkpoints under ``round-<r>/checkpoints``. A
killed run skips its finished rounds, reuses the grown data of the unfinished one and resumes
its trainer from the checkpoint the run recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.methods.base import (
    ConfigError,
    MethodResult,
    ModelRef,
    ProducedModel,
    RunContext,
    opt,
)
from training.methods.common import (
    ENSEMBLE_RULES,
    POLICY_SAMPLES_FILE,
    Measure,
    MeasureFields,
    RewardEnsemble,
    TrainerFields,
    ensemble_combine,
    examples_from_texts,
    jsonl_read,
    jsonl_write,
    lora_config,
    lora_merged,
    lora_meta,
    mean_se,
    policy_load,
    policy_measure,
    reference_load,
    resume_checkpoint,
    rows_prompts,
    samples_score,
    trainer_callbacks,
    training_args,
    with_report_artifacts,
)

REQUIRES: frozenset[str] = frozenset({"snapshot", "base_model", "reward_models"})
BASE_KINDS: frozenset[str] = frozenset({"policy"})

ROUND_METRICS = ("kept_fraction", "threshold", "grow_reward_proxy", "grow_reward_true", "kl",
                 "kl_se", "reward_proxy", "reward_true", "reply_words", "train_loss")


@dataclass
class Config(MeasureFields, TrainerFields):
    rounds: int = opt(2, "Grow-improve rounds.", min=1, max=100)
    n_prompts: int = opt(64, "Distinct snapshot prompts grown from (picked with the run's "
                             "seed).", min=1, max=100_000)
    samples_per_prompt: int = opt(8, "Replies K sampled per prompt in each Grow step.",
                                  min=1, max=1024)
    threshold_mode: str = opt("quantile", "'quantile': keep scores at or above that quantile "
                                          "of the round's scores; 'absolute': at or above a "
                                          "reward value.", choices=("quantile", "absolute"))
    threshold: float = opt(0.75, "The first round's threshold: a quantile in [0, 1) or a reward "
                                 "value (reward units).", min=-1e6, max=1e6)
    threshold_step: float = opt(0.0, "Added to the threshold each round (increasing thresholds, "
                                     "Gulcehre et al. section 2; a quantile is capped at 0.99).",
                                min=0.0, max=1e6)
    restart_from_base: bool = opt(False, "Fine-tune the base policy on each round's data "
                                         "(ReST-EM) instead of continuing the last round's.")
    ensemble_rule: str = opt("mean_minus_k_std", "How several reward models make one score: "
                                                 "mean - k·std, or the minimum.",
                             choices=ENSEMBLE_RULES)
    ensemble_k: float = opt(0.0, "k in mean - k·std across reward models (0 = the mean).",
                            min=0.0, max=100.0)
    steps_per_round: int = opt(50, "SFT optimizer steps in each Improve step.", min=1,
                               max=1_000_000)
    batch_size: int = opt(16, "Kept replies per optimizer step.", min=1, max=4096)
    learning_rate: float = opt(1e-4, "Peak AdamW learning rate of each Improve step, linear "
                                     "decay.", min=1e-9, max=1.0)
    max_length: int = opt(256, "Longest tokenized prompt plus reply (tokens).", min=8,
                          max=32_768)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threshold_mode == "quantile" and not 0.0 <= self.threshold < 1.0:
            raise ConfigError({"threshold": ["A quantile threshold lies in [0, 1)."]})


def round_threshold(cfg: Config, round_index: int, scores: list[float]) -> float:
    """The score a grown sample must reach in round ``round_index`` (0-based)."""
    level = cfg.threshold + round_index * cfg.threshold_step
    if cfg.threshold_mode == "absolute":
        return level
    q = min(level, 0.99)
    ordered = sorted(scores)
    pos = q * (len(ordered) - 1)  # linear interpolation between order statistics
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


@with_report_artifacts
def run(ctx: RunContext) -> MethodResult:
    """Run the rounds; produce the last round's policy."""
    cfg: Config = ctx.config
    prompts = rows_prompts(ctx.rows or [], limit=cfg.n_prompts, seed=ctx.seed)
    if not prompts:
        raise ValueError("The snapshot has no prompts.")
    policy, tokenizer = policy_load(ctx)
    reference = reference_load(ctx)
    ensemble = RewardEnsemble(ctx.reward_models)
    if not ensemble:
        raise ValueError("rest needs at least one reward model.")
    measure = Measure.from_config(cfg, ctx)
    total = cfg.rounds * cfg.steps_per_round
    metrics: dict[str, float] = {}
    artifacts: list[Path] = []
    finished: Path | None = None  # the last round an earlier attempt finished, not yet loaded
    for r in range(cfg.rounds):
        folder = ctx.output_dir / f"round-{r + 1}"
        done_file = folder / "done.json"
        if done_file.exists():  # an earlier attempt finished this round
            round_metrics = json.loads(done_file.read_text())
            finished = folder / "policy"  # loaded only if a later round or the end needs it
            ctx.reporter.log(f"rest: round {r + 1} already done")
        else:
            if ctx.reporter.cancelled():
                break
            if cfg.restart_from_base and r > 0:
                policy, tokenizer = policy_load(ctx)
            elif finished is not None:
                policy, tokenizer = _load(finished, ctx)
            finished = None
            kept, round_metrics = _grow(policy, tokenizer, prompts, cfg, r, ensemble, ctx,
                                        folder)
            ctx.reporter.log(f"rest: round {r + 1}: kept {len(kept)} of "
                             f"{len(prompts) * cfg.samples_per_prompt} samples at threshold "
                             f"{round_metrics['threshold']:.4g}")
            policy, train_loss = _improve(policy, tokenizer, kept, cfg, r, total, reference,
                                          measure, ctx, folder)
            if ctx.reporter.cancelled():
                break
            round_metrics["train_loss"] = train_loss
            # The last round's measured replies beside π₀'s: what an eval round judges.
            round_metrics |= policy_measure(
                policy, reference, tokenizer, measure, ensemble=ensemble,
                true_reward=ctx.true_reward,
                samples_path=(ctx.output_dir / POLICY_SAMPLES_FILE
                              if r == cfg.rounds - 1 else None))
            round_metrics = {k: v for k, v in round_metrics.items() if math.isfinite(v)}
            from training.modeling import model_save

            model_save(policy, tokenizer, folder / "policy")
            done_file.write_text(json.dumps(round_metrics))
            ctx.reporter.checkpoint(folder / "policy")
        ctx.reporter.metrics((r + 1) * cfg.steps_per_round,
                             {**{k: round_metrics[k] for k in ROUND_METRICS
                                 if k in round_metrics}, "round": float(r + 1)})
        ctx.reporter.progress((r + 1) * cfg.steps_per_round, total)
        metrics = {**metrics, **{f"round{r + 1}_{k}": v for k, v in round_metrics.items()
                                 if k in ROUND_METRICS}}
        metrics |= {k: v for k, v in round_metrics.items() if k in ROUND_METRICS}
        metrics["rounds"] = float(r + 1)
        artifacts.append(folder / "samples.jsonl")
    else:
        from training.modeling import model_meta

        path = ctx.output_dir / f"round-{cfg.rounds}" / "policy"
        samples = ctx.output_dir / POLICY_SAMPLES_FILE
        return MethodResult(metrics=metrics, artifacts=artifacts + (
            [samples] if samples.exists() else []), models=[ProducedModel(
            name=f"rest {cfg.rounds} rounds" + (f" run #{ctx.run_id}" if ctx.run_id else ""),
            kind="policy", path=path,
            meta={**model_meta(policy), "method": "rest", "rounds": cfg.rounds,
                  **lora_meta(cfg)})])
    return MethodResult(metrics=metrics, artifacts=artifacts)  # cancelled: no model


def _load(path: Path, ctx: RunContext) -> tuple[Any, Any]:
    from training.modeling import device_choice
    from training.modeling import policy_load as load

    base = ctx.base_model
    return load(ModelRef(id=None, path=str(path), kind="policy",
                         tokenizer_path=base.tokenizer_path if base else ""),
                device=device_choice().device)


def _grow(policy: Any, tokenizer: Any, prompts: list, cfg: Config, r: int,
          ensemble: RewardEnsemble, ctx: RunContext,
          folder: Path) -> tuple[list[dict], dict[str, float]]:
    """Sample, score and filter one round's data; reuse an earlier attempt's when it exists
    (the grown data of an interrupted round must not change under its checkpoint)."""
    from training.modeling import sample

    path = folder / "samples.jsonl"
    records = jsonl_read(path)
    if len(records) != len(prompts) * cfg.samples_per_prompt:
        texts = sample(policy, tokenizer, prompts, n=cfg.samples_per_prompt,
                       max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                       seed=ctx.seed + 1000 * (r + 1))
        flat_prompts = [p for p, group in zip(prompts, texts, strict=True) for _ in group]
        flat_texts = [t for group in texts for t in group]
        scored = samples_score(flat_prompts, flat_texts, ensemble=ensemble,
                               true_reward=ctx.true_reward)
        scores = ensemble_combine(scored["per_member"], k=cfg.ensemble_k, rule=cfg.ensemble_rule)
        threshold = round_threshold(cfg, r, scores)
        records = [{"prompt": p, "completion": t, "score": s,
                    "reward_proxy": scored["reward_proxy"][i],
                    "reward_true": scored["reward_true"][i] if "reward_true" in scored else None,
                    "threshold": threshold, "kept": s >= threshold}
                   for i, (p, t, s) in enumerate(zip(flat_prompts, flat_texts, scores,
                                                     strict=True))]
        jsonl_write(path, records)
    kept = [r_ for r_ in records if r_["kept"]]
    out = {"threshold": float(records[0]["threshold"]),
           "kept_fraction": len(kept) / len(records),
           "grow_reward_proxy": mean_se(x["reward_proxy"] for x in records)[0]}
    if records[0]["reward_true"] is not None:
        out["grow_reward_true"] = mean_se(x["reward_true"] for x in records)[0]
    return kept, out


def _improve(policy: Any, tokenizer: Any, kept: list[dict], cfg: Config, r: int, total: int,
             reference: Any, measure: Measure, ctx: RunContext,
             folder: Path) -> tuple[Any, float]:
    """SFT on the kept samples; returns (policy, mean training loss). No kept sample: the
    policy is returned unchanged (loss NaN)."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    if not kept:
        ctx.reporter.log(f"rest: round {r + 1} kept nothing; the policy is unchanged")
        return policy, math.nan
    checkpoints = folder / "checkpoints"
    args = SFTConfig(**training_args(
        ctx, output_dir=checkpoints, max_steps=cfg.steps_per_round, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, max_length=cfg.max_length, completion_only_loss=True))
    examples = examples_from_texts([k["prompt"] for k in kept], [k["completion"] for k in kept])
    trainer = SFTTrainer(
        model=policy, args=args, processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list(examples),
        peft_config=lora_config(cfg, task_type="CAUSAL_LM"),
        callbacks=trainer_callbacks(ctx, measure=measure, reference=reference,
                                    tokenizer=tokenizer, kl_every=cfg.kl_every,
                                    step_offset=r * cfg.steps_per_round, total=total))
    out = trainer.train(resume_from_checkpoint=resume_checkpoint(ctx, checkpoints))
    # LoRA: the adapters merged, so the next round (or the saved policy) is a plain model.
    return lora_merged(trainer.model), float(out.training_loss)
