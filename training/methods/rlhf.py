"""RLHF: optimize the policy online against the proxy reward r̂ with a KL penalty to π₀.

Method: the KL-regularized objective of RLHF (Ziegler et al. 2019, "Fine-tuning language models
from human preferences", eq. 2; Ouyang et al. 2022, §3.5):

    max_π  E_{x, y~π}[ r̂(x, y) ]  -  β · KL(π(·|x) ‖ π₀(·|x)),

optimized with RLOO, REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, "Back to
Basics: Revisiting REINFORCE-style optimization for learning from human feedback", §3.2): for
each prompt ``num_generations`` replies are sampled from π, each reply's reward is
r̂(x, y) - β · Σ_t [log π(y_t|·) - log π₀(y_t|·)] (the sequence's log-ratio, whose mean over
samples is the KL), and its advantage is that reward minus the mean of the other replies' to
the same prompt. β is ``kl_coef``; per DESIGN §2 the pressure is λ = 1/β and is measured as
d = √KL.

Why ``trl.RLOOTrainer`` rather than ``GRPOTrainer`` (both in trl 1.16, PPO is gone): RLOO puts
the KL into the reward before the baseline, which is exactly the objective above, so β has its
RLHF meaning. GRPO's ``beta`` defaults to 0 (no KL term at all); with beta > 0 it adds a
per-token k3 KL estimate to the loss beside a group-standardized advantage (rewards divided by
their std within the group), which rescales r̂ per prompt and so changes what a given β trades
off: its β is not the β of the objective. RLOO also needs no value model (PPO's critic), the
reason Ahmadian et al. give for it at LLM scale.

Reward: the run's reward models as one Python reward function (TRL 1.16 calls it with
``prompts``, ``completions`` and extra columns as keywords), so each reward model reads the text
with its own tokenizer and chat format (``modeling.reward_score``), not the policy's. Several
reward models form an ensemble scored as mean - k·std (Coste et al. 2023, §3; ``ensemble_k``);
the reported r̂ is the plain mean.

Reference model (ML-STACK "reference-model trap"): ``RLOOTrainer`` takes no ``ref_model``; with
β > 0 it always builds the reference by reloading ``model.config._name_or_path`` from disk. Here
that path is pointed, for the trainer's construction only, at the run's reference folder (the
reference model, else the base), and the built reference is checked to come from there; it is
the same copy the KL measurements use. On resume the policy's weights come from the checkpoint
and the reference is still π₀. With LoRA (``lora_r`` > 0) RLOO's reference is the policy with
its adapters disabled, i.e. the base: a run with LoRA and another reference model is refused.

Measured (``training.methods.common``): Monte Carlo KL(π ‖ π₀) in nats per reply with its
standard error every ``kl_every`` steps and at the end (``kl``, ``kl_se``), and at the end the
mean r̂ (``reward_proxy``) and, on a world, the mean true utility r* (``reward_true``) of fresh
samples. TRL's own per-token first-order KL of the training batches is kept as
``kl_per_token`` so that ``kl`` means one thing on the dashboards.

``max_new_tokens`` and ``temperature`` are the same in training (TRL's
``max_completion_length`` and ``temperature``) and in the measurements: the KL penalized and the
KL measured are of the same length-limited, tempered process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from training.methods.base import ConfigError, MethodResult, RunContext, opt
from training.methods.common import MeasureFields, TrainerFields, with_report_artifacts

REQUIRES: frozenset[str] = frozenset({"snapshot", "base_model", "reward_models"})
BASE_KINDS: frozenset[str] = frozenset({"policy"})


@dataclass
class Config(MeasureFields, TrainerFields):
    """Settings of an RLOO run; stored as JSON on TrainingRun.config."""

    kl_coef: float = opt(0.05, "β: weight of the KL penalty in the reward, r̂ - β·KL (reward "
                               "units per nat). Smaller = more optimization pressure "
                               "(λ = 1/β); 0 = no penalty.", min=0.0, max=100.0)
    learning_rate: float = opt(1e-5, "Peak AdamW learning rate, linear decay (a pretrained "
                                     "policy wants ~1e-6-1e-5, a tiny one from scratch ~1e-3).",
                               min=1e-9, max=1.0)
    max_steps: int = opt(200, "Optimizer steps.", min=1, max=1_000_000)
    num_generations: int = opt(4, "Replies sampled per prompt; the leave-one-out baseline of "
                                  "each is the mean reward of the others.", min=2, max=256)
    batch_size: int = opt(8, "Replies per device per optimizer step (prompts × generations); "
                             "times gradient_accumulation_steps it must be a multiple of "
                             "num_generations.", min=1, max=4096)
    gradient_accumulation_steps: int = opt(1, "Micro-batches per optimizer step.", min=1,
                                           max=1024)
    ensemble_k: float = opt(0.0, "With several reward models: train on mean - k·std of their "
                                 "scores (pessimism; reward units per std). 0 = the mean.",
                            min=0.0, max=10.0)
    max_new_tokens: int = opt(48, "Longest reply in tokens, when training (TRL's "
                                  "max_completion_length) and when measuring.", min=1, max=4096)
    temperature: float = opt(1.0, "Sampling temperature when training and measuring (1 = the "
                                  "policy's own distribution; otherwise the KL is that of the "
                                  "tempered policies).", min=0.05, max=4.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        per_step = self.batch_size * self.gradient_accumulation_steps
        if per_step % self.num_generations:
            raise ConfigError({"batch_size": [
                f"batch_size × gradient_accumulation_steps ({per_step}) must be a multiple of "
                f"num_generations ({self.num_generations}): each prompt's replies are one "
                "group."]})


def _rename_token_kl() -> Any:
    """A callback that renames TRL's per-token ``kl`` log to ``kl_per_token`` before the
    reporter sees it (``kl`` stays the sequence-level Monte Carlo estimate).

    Trainer hands every callback the same ``logs`` dict in list order, so this one must come
    before ``ReporterCallback``.
    """
    from transformers import TrainerCallback

    class RenameTokenKL(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "kl" in logs:
                logs["kl_per_token"] = logs.pop("kl")
            return control

    return RenameTokenKL()


def _reward_function(ensemble: Any, k: float) -> Any:
    """The ensemble as a TRL reward function (one float per completion)."""
    from training.methods.common import ensemble_combine

    def reward_proxy(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        # Conversational data: each completion is a list of turns; the reply is the last one.
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        turns = [p if isinstance(p, list) else [{"role": "user", "content": str(p)}]
                 for p in prompts]
        return ensemble_combine(ensemble.scores(turns, texts), k=k)

    return reward_proxy


def _same_folder(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@with_report_artifacts
def run(ctx: RunContext) -> MethodResult:
    """Optimize the base policy against the reward models with RLOO; produce a policy."""
    import datasets
    from trl import RLOOConfig, RLOOTrainer

    from training.methods.common import (
        Measure,
        RewardEnsemble,
        lora_config,
        lora_on,
        measure_reference,
        policy_finish,
        policy_load,
        reference_is_base,
        resume_checkpoint,
        rows_prompts,
        trainer_callbacks,
        training_args,
    )
    from training.modeling import device_choice

    cfg: Config = ctx.config
    if not ctx.reward_models:
        raise ConfigError({"reward_models": ["rlhf needs at least one reward model."]})
    if lora_on(cfg) and not reference_is_base(ctx):
        # RLOOTrainer takes no ref_model: with LoRA its reference is the adapters-off base.
        raise ConfigError({"lora_r": ["With LoRA, rlhf's reference is the base model itself "
                                      "(TRL's RLOO disables the adapters); leave the reference "
                                      "model unset, or use full fine-tuning (lora_r = 0)."]})
    prompts = rows_prompts(ctx.rows or [], seed=ctx.seed)
    if not prompts:
        raise ValueError("The snapshot has no prompts to sample from.")
    ctx.reporter.log(f"rlhf (RLOO): {len(prompts)} prompts, β={cfg.kl_coef}, "
                     f"{cfg.num_generations} replies per prompt, {cfg.max_steps} steps, "
                     f"{len(ctx.reward_models)} reward model(s)")
    model, tokenizer = policy_load(ctx)
    reference_ref = ctx.reference_model or ctx.base_model
    assert reference_ref is not None  # policy_load raised otherwise
    ensemble = RewardEnsemble(ctx.reward_models, device=device_choice().device)
    measure = Measure.from_config(cfg, ctx)
    checkpoints = ctx.output_dir / "checkpoints"
    args = RLOOConfig(**training_args(
        ctx, output_dir=checkpoints, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, beta=cfg.kl_coef,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature,
        top_k=0, top_p=1.0))

    # The reference-model trap: RLOOTrainer reloads its reference from config._name_or_path.
    # Point that at π₀'s folder while the trainer is built, then put the policy's own back.
    policy_name = model.config._name_or_path
    model.config._name_or_path = reference_ref.path
    try:
        trainer = RLOOTrainer(
            model=model, reward_funcs=_reward_function(ensemble, cfg.ensemble_k), args=args,
            processing_class=tokenizer,
            train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
            peft_config=lora_config(cfg, task_type="CAUSAL_LM"),
            callbacks=[_rename_token_kl()])
    finally:
        model.config._name_or_path = policy_name
    if trainer.ref_model is not None:
        reference = trainer.accelerator.unwrap_model(trainer.ref_model)
        built_from = reference.config._name_or_path
        if not _same_folder(built_from, reference_ref.path):
            raise RuntimeError(f"TRL built the reference from {built_from!r}, not π₀ at "
                               f"{reference_ref.path!r}.")
    else:  # β = 0 (TRL needs no reference) or LoRA (None: the adapters off are π₀)
        reference = measure_reference(ctx)
    for callback in trainer_callbacks(ctx, measure=measure, reference=reference,
                                      tokenizer=tokenizer, kl_every=cfg.kl_every):
        trainer.add_callback(callback)

    out = trainer.train(resume_from_checkpoint=resume_checkpoint(ctx, checkpoints))
    metrics = {"train_loss": float(out.training_loss), "prompts": float(len(prompts)),
               "steps": float(trainer.state.global_step)}
    if ctx.reporter.cancelled():
        return MethodResult(metrics=metrics)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    return policy_finish(ctx, policy=policy, reference=reference, tokenizer=tokenizer,
                         measure=measure, metrics=metrics, step=trainer.state.global_step,
                         name=f"rlhf β={cfg.kl_coef:g}", ensemble=ensemble,
                         meta={"method": "rlhf", "algorithm": "rloo", "kl_coef": cfg.kl_coef,
                               "reference": reference_ref.path})
