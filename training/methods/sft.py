"""Supervised fine-tuning: make the reference policy π₀ from a base model and a snapshot.

Method: maximum likelihood of the snapshot's replies given their prompts (TRL ``SFTTrainer``, the
loss on completion tokens only, since the examples are conversational prompt-completion pairs:
``{"prompt": turns, "completion": [assistant turn]}``). With ``targets="both"`` (the default)
the policy learns the distribution of the candidate replies themselves, chosen and rejected
alike: the π₀ whose samples look like what annotators compared, as InstructGPT's SFT stage
precedes its reward model (Ouyang et al. 2022, section 3.5). ``targets="chosen"`` trains on the
winners only (preference-filtered behaviour cloning), a stronger but already optimized start.

Why TRL: its collator masks the prompt, appends the end token the chat template gives, and its
checkpoints carry optimizer state, so a killed run resumes where it stopped. The run ends with
the KL of the trained policy to its reference (the run's reference model, else the base), in
nats by Monte Carlo, and r̂ / r* of its samples when reward models or a world's utility are
given (``training.methods.common``).
"""

from __future__ import annotations

from dataclasses import dataclass

from training.methods.base import MethodResult, RunContext, opt
from training.methods.common import (
    Measure,
    MeasureFields,
    TrainerFields,
    lora_config,
    measure_reference,
    policy_finish,
    policy_load,
    resume_checkpoint,
    sft_examples,
    trainer_callbacks,
    training_args,
    with_report_artifacts,
)

REQUIRES: frozenset[str] = frozenset({"snapshot", "base_model"})
BASE_KINDS: frozenset[str] = frozenset({"policy"})


@dataclass
class Config(MeasureFields, TrainerFields):
    targets: str = opt("both", "Replies to learn: 'both' (chosen and rejected: the candidate "
                               "distribution, for π₀) or 'chosen' (winners only).",
                       choices=("both", "chosen"))
    distinct: bool = opt(True, "Keep each (prompt, reply) once, however many comparisons it "
                               "appears in.")
    max_steps: int = opt(200, "Optimizer steps.", min=1, max=1_000_000)
    batch_size: int = opt(16, "Examples per optimizer step.", min=1, max=4096)
    learning_rate: float = opt(5e-4, "Peak AdamW learning rate, linear decay (tiny models from "
                                     "scratch want ~1e-3, a pretrained one ~1e-5).",
                               min=1e-8, max=1.0)
    max_length: int = opt(256, "Longest tokenized prompt plus reply; longer ones are cut "
                               "(tokens).", min=8, max=32_768)
    kl_every: int = opt(0, "Optimizer steps between KL measurements during training (0 = only "
                           "at the end).", min=0, max=100_000)


@with_report_artifacts
def run(ctx: RunContext) -> MethodResult:
    """Fine-tune the base policy on the snapshot's replies; produce a policy."""
    import datasets
    from trl import SFTConfig, SFTTrainer


    cfg: Config = ctx.config
    examples = sft_examples(ctx.rows or [], targets=cfg.targets, distinct=cfg.distinct)
    if not examples:
        raise ValueError("The snapshot has no rows to learn from.")
    ctx.reporter.log(f"sft: {len(examples)} examples ({cfg.targets}), {cfg.max_steps} steps")
    model, tokenizer = policy_load(ctx)
    reference = measure_reference(ctx)  # None: LoRA, π₀ = the adapters off
    measure = Measure.from_config(cfg, ctx)
    checkpoints = ctx.output_dir / "checkpoints"
    args = SFTConfig(**training_args(ctx, output_dir=checkpoints, max_steps=cfg.max_steps,
                                     batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                                     max_length=cfg.max_length, completion_only_loss=True))
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=datasets.Dataset.from_list(examples),
                         peft_config=lora_config(cfg, task_type="CAUSAL_LM"),
                         callbacks=trainer_callbacks(ctx, measure=measure, reference=reference,
                                                     tokenizer=tokenizer, kl_every=cfg.kl_every))
    out = trainer.train(resume_from_checkpoint=resume_checkpoint(ctx, checkpoints))
    metrics = {"train_loss": float(out.training_loss), "examples": float(len(examples)),
               "steps": float(trainer.state.global_step)}
    if ctx.reporter.cancelled():
        return MethodResult(metrics=metrics)
    return policy_finish(ctx, policy=trainer.model, reference=reference, tokenizer=tokenizer,
                         measure=measure, metrics=metrics, step=trainer.state.global_step,
                         name=f"sft-{cfg.targets}",
                         meta={"method": "sft", "targets": cfg.targets})
