"""Direct preference optimization on a snapshot, against an explicit reference policy π₀.

Method: Rafailov et al. 2023, "Direct Preference Optimization" (eq. 7): minimise
-log σ(β·[log π/π₀(y_w|x) - log π/π₀(y_l|x)]) over the snapshot's (prompt, chosen, rejected)
pairs, with TRL's ``DPOTrainer``. β is the KL strength: pressure λ = 1/β (DESIGN section 2), so
a sweep over β traces the gap against d = √KL. Other losses TRL 1.16 implements are offered
through ``loss_type``:

- ``robust``: Chowdhury et al. 2024, "Provably Robust DPO" (eq. 8): the unbiased loss when each
  label is flipped with probability ε = ``label_smoothing``. Left unset, ε is the campaign's
  measured noise (``RunContext.noise_epsilon``: the judgment-weighted annotator error), which is
  what the quality layer is for.
- ``ipo`` (Azar et al. 2023, eq. 17; β is their τ, TRL normalizes by reply length), ``hinge``
  (SLiC), ``exo_pair`` (Ji et al. 2024; needs ``label_smoothing`` > 0, 1e-3 when unset),
  ``nca_pair``, ``bco_pair``, ``sppo_hard``, ``apo_zero`` / ``apo_down``, ``discopop``,
  ``sigmoid_norm``, ``aot`` / ``aot_unpaired``.

Label smoothing in trl 1.16 (read in ``DPOTrainer._compute_loss``): only ``robust``,
``exo_pair``, ``aot`` and ``aot_unpaired`` read it; ``sigmoid`` ignores it (conservative DPO is
gone), so a positive ``label_smoothing`` with any other loss is a ``ConfigError`` here rather
than a silent no-op.

Reference model: always passed to TRL as its own frozen copy (the run's reference model, else a
second load of the base). With ``ref_model=None`` TRL reloads π₀ from ``config._name_or_path``,
which silently differs from the weights in memory (ML-STACK, "reference-model trap"). The one
exception is LoRA (``lora_r`` > 0) with π₀ = the base: then ``ref_model=None`` and trl 1.16 takes
the reference log-probs from the policy with its adapters disabled (no reload, no second copy);
a different π₀ with LoRA is still passed as its own frozen model, which trl 1.16 accepts.

Snapshot weights: TRL's DPO averages the per-pair loss with equal weights. ``use_weight``
draws pairs with probability proportional to their ``weight`` (a weighted sampler with
replacement), which makes the expected loss the weighted one; off by default.

Measured: KL(π ‖ π₀) by Monte Carlo every ``kl_every`` steps and at the end (nats, metrics
``kl`` and ``kl_se``), and the end policy's mean r̂ and r* (``training.methods.common``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.methods.base import ConfigError, MethodResult, RunContext, opt
from training.methods.common import (
    Measure,
    MeasureFields,
    TrainerFields,
    lora_config,
    measure_reference,
    policy_finish,
    policy_load,
    resume_checkpoint,
    trainer_callbacks,
    training_args,
    with_report_artifacts,
)

REQUIRES: frozenset[str] = frozenset({"snapshot", "base_model"})
BASE_KINDS: frozenset[str] = frozenset({"policy"})

LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge", "exo_pair", "nca_pair", "bco_pair",
              "sppo_hard", "apo_zero", "apo_down", "discopop", "sigmoid_norm", "aot",
              "aot_unpaired")
SMOOTHED_LOSSES = frozenset({"robust", "exo_pair", "aot", "aot_unpaired"})
EXO_DEFAULT_SMOOTHING = 1e-3  # Ji et al. 2024's recommended ε for EXO


@dataclass
class Config(MeasureFields, TrainerFields):
    loss_type: str = opt("sigmoid", "Preference loss (TRL's names): 'sigmoid' is DPO, 'robust' "
                                    "is noise-robust DPO, 'ipo' is IPO; see the module doc.",
                         choices=LOSS_TYPES)
    beta: float = opt(0.1, "KL strength β (pressure λ = 1/β; smaller = further from π₀). For "
                           "'ipo' it is τ.", min=1e-4, max=100.0)
    label_smoothing: float | None = opt(
        None, "Label flip probability ε for 'robust' (or EXO's ε): unset = the campaign's "
              "measured noise for 'robust', 1e-3 for 'exo_pair', 0 otherwise. Losses that "
              "ignore it reject a positive value.", min=0.0, max=0.499)
    use_weight: bool = opt(False, "Draw pairs with probability proportional to the snapshot's "
                                  "weight (the weighted loss in expectation).")
    max_steps: int = opt(200, "Optimizer steps.", min=1, max=1_000_000)
    batch_size: int = opt(16, "Preference pairs per optimizer step.", min=1, max=4096)
    learning_rate: float = opt(1e-4, "Peak AdamW learning rate, linear decay (tiny models "
                                     "~1e-4, a pretrained one ~1e-6).", min=1e-9, max=1.0)
    max_length: int = opt(256, "Longest tokenized prompt plus reply (tokens); pairs whose "
                               "prompt alone fills it are dropped.", min=8, max=32_768)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label_smoothing is not None:
            if self.label_smoothing > 0 and self.loss_type not in SMOOTHED_LOSSES:
                raise ConfigError({"label_smoothing": [
                    f"'{self.loss_type}' ignores label smoothing in trl 1.16; use 'robust' for "
                    f"noisy labels, or leave it unset."]})
            if self.loss_type == "exo_pair" and self.label_smoothing == 0:
                raise ConfigError({"label_smoothing": ["'exo_pair' needs a value above 0."]})


def label_smoothing_resolve(config: Config, noise_epsilon: float | None) -> float:
    """The ε the loss gets: the config's, else the measured noise for 'robust' (0 without a
    measurement), 1e-3 for 'exo_pair', 0 for the rest. Raises ValueError when the measured
    noise is 0.5 or more (labels then carry no preference to learn)."""
    if config.label_smoothing is not None:
        return float(config.label_smoothing)
    if config.loss_type == "robust":
        eps = float(noise_epsilon or 0.0)
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"The campaign's measured noise ε = {eps:.3f} is not below 0.5: its "
                             f"labels carry no preference for robust DPO to learn.")
        return eps
    if config.loss_type == "exo_pair":
        return EXO_DEFAULT_SMOOTHING
    return 0.0


def _trainer_class(*, weighted: bool) -> Any:
    """DPOTrainer, or a subclass whose sampler draws pairs in proportion to their weight."""
    from trl import DPOTrainer

    if not weighted:
        return DPOTrainer

    class WeightedDPOTrainer(DPOTrainer):
        def _get_train_sampler(self, train_dataset=None):
            import torch

            dataset = train_dataset if train_dataset is not None else self.train_dataset
            weights = torch.tensor(self.train_dataset["weight"], dtype=torch.double)
            if len(weights) != len(dataset):  # columns already removed: fall back
                return super()._get_train_sampler(train_dataset)
            generator = torch.Generator().manual_seed(self.args.seed)
            return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(weights),
                                                          replacement=True, generator=generator)

    return WeightedDPOTrainer


@with_report_artifacts
def run(ctx: RunContext) -> MethodResult:
    """Train the base policy with the configured preference loss; produce a policy."""
    import datasets
    from trl import DPOConfig


    cfg: Config = ctx.config
    smoothing = label_smoothing_resolve(cfg, ctx.noise_epsilon)
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
              **({"weight": float(r.get("weight", 1.0))} if cfg.use_weight else {})}
             for r in ctx.rows or []]
    if not pairs:
        raise ValueError("The snapshot has no preference pairs.")
    ctx.reporter.log(f"dpo: {len(pairs)} pairs, loss {cfg.loss_type}, beta {cfg.beta}, "
                     f"label smoothing {smoothing:.4f}")
    model, tokenizer = policy_load(ctx)
    # LoRA with π₀ = the base: ref_model=None, and TRL takes π₀'s log-probs with the adapters
    # disabled (trl 1.16 DPOTrainer, no reload); any other π₀ is its own frozen copy.
    reference = measure_reference(ctx)
    measure = Measure.from_config(cfg, ctx)
    checkpoints = ctx.output_dir / "checkpoints"
    args = DPOConfig(**training_args(
        ctx, output_dir=checkpoints, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, max_length=cfg.max_length, loss_type=[cfg.loss_type],
        beta=cfg.beta, label_smoothing=smoothing))
    trainer = _trainer_class(weighted=cfg.use_weight)(
        model=model, ref_model=reference, args=args, processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list(pairs),
        peft_config=lora_config(cfg, task_type="CAUSAL_LM"),
        callbacks=trainer_callbacks(ctx, measure=measure, reference=reference,
                                    tokenizer=tokenizer, kl_every=cfg.kl_every))
    out = trainer.train(resume_from_checkpoint=resume_checkpoint(ctx, checkpoints))
    metrics = {"train_loss": float(out.training_loss), "pairs": float(len(pairs)),
               "steps": float(trainer.state.global_step), "beta": float(cfg.beta),
               "label_smoothing": smoothing}
    if ctx.reporter.cancelled():
        return MethodResult(metrics=metrics)
    return policy_finish(ctx, policy=trainer.model, reference=reference, tokenizer=tokenizer,
                         measure=measure, metrics=metrics, step=trainer.state.global_step,
                         name=f"dpo-{cfg.loss_type} β={cfg.beta:g}",
                         meta={"method": "dpo", "loss_type": cfg.loss_type, "beta": cfg.beta,
                               "label_smoothing": smoothing})
