"""What the policy methods (``sft``, ``dpo``, ``best_of_n``, ``rest``) share, kept in one place
so a fix reaches all four: prompts and SFT examples from snapshot rows, reward-model ensemble
scores, the trainer settings every run gets (seed, checkpoints, reports, resume), and the
measurement of a policy against its reference.

Measurement (DESIGN section 7, "trained policies"): on a fixed set of prompts (distinct snapshot
prompts, chosen once with the run's seed), sample from the policy's own distribution
(``modeling.sample``: top_k=0, top_p=1), estimate KL(π ‖ π₀) by Monte Carlo as the mean of
log π(y|x) - log π₀(y|x) over the samples (``modeling.kl_monte_carlo``, nats per reply, with its
standard error), and score the same kind of samples with the proxy r̂ (mean of the reward models)
and, on a world, with the true utility r*. The same prompts and sampling seed are used at every
measurement, so successive KL points share their random numbers and the curve is smooth. The
final measurement's replies are kept with π₀'s replies to the same prompts (``samples.jsonl``),
for an eval round to put before people where no r* exists.

Ensembles (Coste et al. 2023, "Reward model ensembles help mitigate overoptimization", section
3): a sample's score is the members' mean minus ``k`` times their standard deviation (k = 0: the
mean; their UWO uses the variance, the standard deviation keeps the score in reward units), or
the members' minimum (WCO). Members are assumed to share a scale (reward models of one snapshot
trained with different seeds).

LoRA and reports (``TrainerFields``, inherited by every method that trains: reward_model, sft,
dpo, rlhf, rest). ``lora_r`` > 0 trains low-rank adapters instead of every weight (Hu et al.
2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3: W₀ + (α/r)·B·A with B = 0 at
the start, so the untrained adapter is exactly the base) through TRL's ``peft_config``; the
saved model has its adapters merged (``lora_merged``), so it loads like any other. With LoRA and
π₀ = the base, no second copy of the base is loaded: TRL's DPO and RLOO take their reference
log-probs from the policy with its adapters disabled, and the KL measurements do the same
(``policy_kl`` with ``reference=None``). ``report_to="tensorboard"`` writes the trainer's logs as
TensorBoard event files under ``<run>/tensorboard`` (one step axis, ReST rounds included), kept
as run artifacts (``with_report_artifacts``).

Light at import (the web imports method modules to validate configs): torch, transformers, trl
and ``training.modeling`` are imported inside functions.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.methods.base import (
    ConfigError,
    MethodResult,
    ModelRef,
    ProducedModel,
    Reporter,
    RewardFunction,
    RunContext,
    opt,
)

Turns = list[dict[str, str]]

ENSEMBLE_RULES = ("mean_minus_k_std", "min")
# A trained policy's measured replies beside π₀'s, one line per prompt (``policy_finish``).
POLICY_SAMPLES_FILE = "samples.jsonl"


# --- Config fields every trained policy has -------------------------------------------------


@dataclass
class MeasureFields:
    """How a trained policy is measured against its reference (inherited by method configs)."""

    kl_every: int = opt(50, "Optimizer steps between KL measurements during training (0 = only "
                            "at the end).", min=0, max=100_000)
    kl_prompts: int = opt(32, "Prompts in the fixed measurement set (distinct snapshot prompts, "
                              "picked with the run's seed).", min=1, max=4096)
    kl_samples: int = opt(4, "Replies sampled per measurement prompt, for the Monte Carlo KL "
                             "(nats) and the mean rewards.", min=1, max=256)
    max_new_tokens: int = opt(48, "Longest sampled reply, in tokens.", min=1, max=2048)
    temperature: float = opt(1.0, "Sampling temperature of the policy (1 = its own distribution; "
                                  "the KL is that of the tempered policy otherwise).",
                             min=0.05, max=4.0)


REPORT_TO = ("none", "tensorboard")
LORA_ALL_LINEAR = "all-linear"  # peft's shorthand: every linear layer except the output head
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclass
class TrainerFields:
    """LoRA and outside reporting, for every method that trains (inherited by method configs;
    a config with its own ``__post_init__`` calls ``super().__post_init__()``)."""

    lora_r: int = opt(0, "LoRA rank r: train adapters B·A of rank r on the target modules "
                         "instead of every weight (Hu et al. 2021); 0 = full fine-tuning.",
                      min=0, max=1024)
    lora_alpha: int = opt(16, "LoRA scale α: the adapters add (α / r)·B·A to each target "
                              "weight.", min=1, max=4096)
    lora_dropout: float = opt(0.05, "Dropout probability on the adapters' input.", min=0.0,
                              max=0.9)
    lora_target_modules: str = opt(LORA_ALL_LINEAR, "Modules that get adapters: 'all-linear' "
                                                    "(every linear layer but the output head; "
                                                    "a reward model's score head is trained "
                                                    "whole) or comma-separated module names, "
                                                    "e.g. 'q_proj,v_proj'.")
    report_to: str = opt("none", "Also write the trainer's logs for an outside tracker: "
                                 "'tensorboard' = event files under the run's tensorboard/ "
                                 "folder, kept as run artifacts.", choices=REPORT_TO)

    def __post_init__(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            errors["report_to"] = ["The tensorboard package is not installed here."]
        if self.lora_r and _lora_targets(self.lora_target_modules) is None:
            errors["lora_target_modules"] = ["'all-linear' or comma-separated module names "
                                             "(letters, digits, '_' and '.')."]
        if errors:
            raise ConfigError(errors)


def _lora_targets(spec: str) -> str | list[str] | None:
    """peft's ``target_modules`` from the field: the all-linear shorthand, a list of names, or
    None when the field is malformed."""
    if spec.strip().lower() == LORA_ALL_LINEAR:
        return LORA_ALL_LINEAR
    names = [n.strip() for n in spec.split(",")]
    if not names or not all(_MODULE_NAME.match(n) for n in names):
        return None
    return names


@dataclass(frozen=True)
class Measure:
    """A fixed measurement: prompts, samples per prompt, reply length, temperature, seed."""

    prompts: list[Turns]
    n_samples: int
    max_new_tokens: int
    temperature: float
    seed: int

    @classmethod
    def from_config(cls, config: MeasureFields, ctx: RunContext) -> Measure:
        return cls(prompts=rows_prompts(ctx.rows or [], limit=config.kl_prompts, seed=ctx.seed),
                   n_samples=config.kl_samples, max_new_tokens=config.max_new_tokens,
                   temperature=config.temperature, seed=ctx.seed)


# --- Data from snapshot rows ------------------------------------------------------------------


def _key(turns: Any) -> str:
    return json.dumps(turns, sort_keys=True, ensure_ascii=False)


def rows_prompts(rows: Iterable[dict[str, Any]], *, limit: int | None = None,
                 seed: int | None = None) -> list[Turns]:
    """The rows' distinct prompts in first-seen order; with ``seed``, a seeded shuffle first;
    at most ``limit`` of them."""
    seen: dict[str, Turns] = {}
    for row in rows:
        seen.setdefault(_key(row["prompt"]), row["prompt"])
    prompts = list(seen.values())
    if seed is not None:
        random.Random(seed).shuffle(prompts)
    return prompts[:limit] if limit is not None else prompts


def sft_examples(rows: Iterable[dict[str, Any]], *, targets: str,
                 distinct: bool = True) -> list[dict[str, Turns]]:
    """TRL's conversational prompt-completion examples: ``{"prompt": turns, "completion":
    [assistant turn]}`` for each row's chosen reply and, with ``targets="both"``, its rejected
    one. ``distinct`` keeps each (prompt, reply) once: a reply that sits in many comparisons
    would otherwise weigh more (with ``chosen``, keeping repeats weighs a reply by its wins)."""
    if targets not in ("both", "chosen"):
        raise ValueError(f"targets must be 'both' or 'chosen', not {targets!r}.")
    out, seen = [], set()
    for row in rows:
        for side in ("chosen", "rejected") if targets == "both" else ("chosen",):
            example = {"prompt": row["prompt"], "completion": row[side]}
            key = _key(example)
            if distinct and key in seen:
                continue
            seen.add(key)
            out.append(example)
    return out


def examples_from_texts(prompts: Sequence[Turns], texts: Sequence[str]) -> list[dict[str, Turns]]:
    """Prompt-completion examples from sampled reply texts (ReST's kept samples)."""
    return [{"prompt": p, "completion": [{"role": "assistant", "content": t}]}
            for p, t in zip(prompts, texts, strict=True)]


def jsonl_write(path: Path, records: Iterable[dict[str, Any]], *, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def jsonl_read(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSONL file (a half-written last line, from a killed run, is
    dropped)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


# --- Scores ----------------------------------------------------------------------------------


def ensemble_combine(per_member: Sequence[Sequence[float]], *, k: float = 0.0,
                     rule: str = "mean_minus_k_std") -> list[float]:
    """One score per sample from each member's scores (``per_member[m][i]``): the mean minus
    ``k`` population standard deviations, or the minimum. One member: its own scores."""
    if not per_member:
        raise ValueError("An ensemble needs at least one member.")
    if rule not in ENSEMBLE_RULES:
        raise ValueError(f"rule must be one of {', '.join(ENSEMBLE_RULES)}.")
    out = []
    for values in zip(*per_member, strict=True):
        if rule == "min":
            out.append(float(min(values)))
            continue
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        out.append(float(mean - k * std))
    return out


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and its standard error over the finite values (NaN, NaN when there are none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var / len(xs))


class RewardEnsemble:
    """The run's reward models, loaded once; ``scores`` gives each member's scores."""

    def __init__(self, refs: Sequence[ModelRef], *, device: Any = None) -> None:
        from training.modeling import reward_load

        self.members = [reward_load(ref, device=device) for ref in refs]

    def __bool__(self) -> bool:
        return bool(self.members)

    def scores(self, prompts: Sequence[Turns], completions: Sequence[str]) -> list[list[float]]:
        from training.modeling import reward_score

        return [list(map(float, reward_score(model, tokenizer, list(prompts), list(completions))))
                for model, tokenizer in self.members]


# --- Models, trainers, resume -----------------------------------------------------------------


def run_settings() -> tuple[int, int]:
    """(report every N steps, checkpoint every N steps) from settings, or 5 and 50 outside
    Django (a benchmark calling a method directly)."""
    try:
        from django.conf import settings

        return (int(settings.GAPLAB_RUN_REPORT_EVERY), int(settings.GAPLAB_RUN_CHECKPOINT_EVERY))
    except Exception:  # settings not configured: no Django in this process
        return 5, 50


def policy_load(ctx: RunContext) -> tuple[Any, Any]:
    """The base policy (trainable) and its tokenizer, seeded first."""
    from transformers import set_seed

    from training.modeling import device_choice
    from training.modeling import policy_load as load

    if ctx.base_model is None:
        raise ValueError("This method needs a base model.")
    set_seed(ctx.seed)
    return load(ctx.base_model, device=device_choice().device)


def reference_load(ctx: RunContext) -> Any:
    """π₀, frozen, as its own copy in memory: the run's reference model, else a second load of
    the base (never ``ref_model=None``, which makes TRL reload from ``config._name_or_path``;
    ML-STACK "reference-model trap")."""
    from training.modeling import device_choice
    from training.modeling import policy_load as load

    ref = ctx.reference_model or ctx.base_model
    if ref is None:
        raise ValueError("This method needs a base model.")
    model, _ = load(ref, device=device_choice().device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def training_args(ctx: RunContext, *, output_dir: Path, max_steps: int, batch_size: int,
                  learning_rate: float, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for any TRL config: the device's settings (``modeling``), the run's seed,
    a checkpoint every ``GAPLAB_RUN_CHECKPOINT_EVERY`` steps under ``output_dir``, a log line
    every ``GAPLAB_RUN_REPORT_EVERY`` steps."""
    from training.modeling import trainer_kwargs

    report_every, checkpoint_every = run_settings()
    return {**trainer_kwargs(), "output_dir": str(output_dir), "max_steps": max_steps,
            "per_device_train_batch_size": batch_size, "learning_rate": learning_rate,
            "seed": ctx.seed, "data_seed": ctx.seed, "save_strategy": "steps",
            "save_steps": checkpoint_every, "save_total_limit": 2,
            "logging_steps": report_every, **extra}


def resume_checkpoint(ctx: RunContext, under: Path) -> str | None:
    """The earlier attempt's checkpoint to resume from, when it is a folder inside ``under``
    (a ReST round resumes only its own trainer's checkpoint)."""
    if ctx.resume_from is None:
        return None
    path = Path(ctx.resume_from)
    if path.is_dir() and path.resolve().is_relative_to(Path(under).resolve()):
        return str(path)
    return None


def trainer_callbacks(ctx: RunContext, *, measure: Measure | None = None, reference: Any = None,
                      tokenizer: Any = None, kl_every: int = 0, step_offset: int = 0,
                      total: int | None = None) -> list[Any]:
    """The run's ReporterCallback, TensorBoard event files when the config's ``report_to`` is
    'tensorboard', and, with ``kl_every`` > 0, a KL-to-reference measurement every ``kl_every``
    steps (metrics ``kl`` and ``kl_se``, nats; ``reference=None``: see ``policy_kl``)."""
    from training.callbacks import ReporterCallback

    report_every, _ = run_settings()
    callbacks = [ReporterCallback(ctx.reporter, every=report_every, step_offset=step_offset,
                                  total_override=total)]
    if getattr(ctx.config, "report_to", "none") == "tensorboard":
        callbacks.append(_tensorboard_callback(tensorboard_dir(ctx), step_offset=step_offset))
    if kl_every > 0 and measure is not None and measure.prompts:
        callbacks.append(_kl_callback(ctx.reporter, measure=measure, reference=reference,
                                      tokenizer=tokenizer, every=kl_every,
                                      step_offset=step_offset))
    return callbacks


def _kl_callback(reporter: Reporter, *, measure: Measure, reference: Any, tokenizer: Any,
                 every: int, step_offset: int) -> Any:
    from transformers import TrainerCallback

    class KLCallback(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 and not control.should_training_stop:
                kl, se = policy_kl(model, reference, tokenizer, measure)
                reporter.metrics(step_offset + state.global_step, {"kl": kl, "kl_se": se})
            return control

    return KLCallback()


def policy_kl(policy: Any, reference: Any, tokenizer: Any, measure: Measure) -> tuple[float, float]:
    """Monte Carlo KL(π ‖ π₀) in nats per reply and its standard error, on ``measure``."""
    kl, se, _ = policy_kl_samples(policy, reference, tokenizer, measure)
    return kl, se


def policy_kl_samples(policy: Any, reference: Any, tokenizer: Any, measure: Measure
                      ) -> tuple[float, float, list[list[str]]]:
    """``policy_kl`` and the replies it was estimated on (per measurement prompt). The policy
    is put in eval mode for the estimate (no dropout) and back after. ``reference=None`` with a
    LoRA policy: π₀ is the policy with its adapters disabled (``measure_reference``)."""
    import torch

    from training.modeling import kl_samples

    if reference is None:
        reference = AdaptersOff(policy)
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            kl, se, texts = kl_samples(policy, reference, tokenizer, measure.prompts,
                                       n_samples=measure.n_samples,
                                       max_new_tokens=measure.max_new_tokens,
                                       temperature=measure.temperature, seed=measure.seed)
    finally:
        policy.train(was_training)
    return float(kl), float(se), texts


def samples_score(prompts: Sequence[Turns], completions: Sequence[str], *,
                  ensemble: RewardEnsemble | None, true_reward: RewardFunction | None
                  ) -> dict[str, list[float]]:
    """Each sample's proxy r̂ (members' mean) and per-member scores, and its r* on a world."""
    out: dict[str, Any] = {}
    if ensemble:
        per_member = ensemble.scores(prompts, completions)
        out["per_member"] = per_member
        out["reward_proxy"] = ensemble_combine(per_member, k=0.0)
    if true_reward is not None:
        out["reward_true"] = [float(v) for v in true_reward(list(prompts), list(completions))]
    return out


def reference_replies(policy: Any, reference: Any, tokenizer: Any,
                      measure: Measure) -> list[list[str]]:
    """π₀'s replies to the measurement prompts, drawn as the policy's were in
    ``policy_kl_samples`` (same count, length, temperature, seed and batching): the two draws
    share their random numbers, so where π = π₀ they are the very same replies and an eval
    round compares the policy with its reference on equal terms. ``reference=None``: the LoRA
    policy with its adapters disabled (``measure_reference``)."""
    from training.modeling import sample

    kwargs = {"n": measure.n_samples, "max_new_tokens": measure.max_new_tokens,
              # kl_samples samples at 1 when asked for greedy; so does its reference draw
              "temperature": measure.temperature if measure.temperature > 0 else 1.0,
              "seed": measure.seed}
    if reference is not None:
        return sample(reference, tokenizer, measure.prompts, **kwargs)
    was_training = AdaptersOff(policy).model.training
    try:
        with policy.disable_adapter():
            return sample(policy, tokenizer, measure.prompts, **kwargs)
    finally:
        policy.train(was_training)


def measurement_samples_write(path: Path, measure: Measure, policy_texts: list[list[str]],
                              reference_texts: list[list[str]]) -> Path:
    """One JSONL line per measurement prompt: ``prompt_index``, ``prompt`` (turns),
    ``policy`` and ``reference`` (the replies of each, ``measure.n_samples`` apiece, the
    i-th of both drawn with the same random numbers). What an eval round
    (``evaluation.eval_rounds``) puts before annotators, policy against reference."""
    jsonl_write(path, ({"prompt_index": i, "prompt": prompt, "policy": list(mine),
                        "reference": list(theirs)}
                       for i, (prompt, mine, theirs) in enumerate(
                           zip(measure.prompts, policy_texts, reference_texts, strict=True))))
    return path


def policy_measure(policy: Any, reference: Any, tokenizer: Any, measure: Measure, *,
                   ensemble: RewardEnsemble | None = None,
                   true_reward: RewardFunction | None = None,
                   samples_path: Path | None = None) -> dict[str, float]:
    """A policy's final numbers, all on one draw of replies: ``kl`` / ``kl_se`` (nats),
    ``reward_proxy`` (mean r̂ of those replies, with ``reward_proxy_se``) when reward models
    are given, ``reward_true`` (mean r*, ``reward_true_se``) on a world, and ``reply_words``
    (mean words per reply, the length reward hacking inflates). With ``samples_path``, those
    replies and as many of π₀'s (``reference_replies``) are written there
    (``measurement_samples_write``): where no utility function exists, people judge them."""
    if not measure.prompts:
        return {}
    # One draw for both: the KL and the rewards are of the same replies.
    kl, se, texts = policy_kl_samples(policy, reference, tokenizer, measure)
    if samples_path is not None:
        measurement_samples_write(samples_path, measure, texts,
                                  reference_replies(policy, reference, tokenizer, measure))
    out = {"kl": kl, "kl_se": se}
    prompts = [p for p, group in zip(measure.prompts, texts, strict=True) for _ in group]
    completions = [t for group in texts for t in group]
    out["reply_words"] = mean_se(len(t.split()) for t in completions)[0]
    scored = samples_score(prompts, completions, ensemble=ensemble, true_reward=true_reward)
    for name in ("reward_proxy", "reward_true"):
        if name in scored:
            out[name], out[f"{name}_se"] = mean_se(scored[name])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def policy_finish(ctx: RunContext, *, policy: Any, reference: Any, tokenizer: Any,
                  measure: Measure, metrics: dict[str, float], step: int, name: str,
                  meta: dict[str, Any], ensemble: RewardEnsemble | None = None) -> MethodResult:
    """The end every policy-training method shares: measure the trained policy
    (``policy_measure``) and report it at ``step``, write the measured replies beside π₀'s to
    ``<output_dir>/samples.jsonl`` (a run artifact: an eval round's material), merge any LoRA
    adapter, save the policy under ``<output_dir>/policy`` and return it as the run's produced
    model. ``name`` gets the run id; ``meta`` joins the saved model's own (architecture,
    parameters, LoRA)."""
    from training.modeling import model_save

    samples = Path(ctx.output_dir) / POLICY_SAMPLES_FILE
    samples.unlink(missing_ok=True)  # an earlier attempt's, measured on another policy
    metrics = metrics | policy_measure(
        policy, reference, tokenizer, measure,
        ensemble=ensemble if ensemble is not None else RewardEnsemble(ctx.reward_models),
        true_reward=ctx.true_reward, samples_path=samples)
    ctx.reporter.metrics(step, metrics)
    path = ctx.output_dir / "policy"
    lora = lora_meta(ctx.config, policy)
    saved = model_save(lora_merged(policy), tokenizer, path)
    return MethodResult(metrics=metrics, artifacts=[samples] if samples.exists() else [],
                        models=[ProducedModel(
                            name=name + (f" run #{ctx.run_id}" if ctx.run_id else ""),
                            kind="policy", path=path, meta={**saved, **meta, **lora})])


# --- LoRA -------------------------------------------------------------------------------------


def lora_on(config: Any) -> bool:
    return bool(getattr(config, "lora_r", 0))


def lora_config(config: Any, *, task_type: str) -> Any:
    """TRL's ``peft_config`` for a ``TrainerFields`` config: a ``peft.LoraConfig``, or None for
    full fine-tuning. ``task_type`` "CAUSAL_LM" (policies) or "SEQ_CLS" (reward models: peft
    then keeps the ``score`` / ``classifier`` head whole and trainable, ``modules_to_save``)."""
    if not lora_on(config):
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=_lora_targets(config.lora_target_modules),
                      task_type=task_type, bias="none")


def lora_merged(model: Any) -> Any:
    """A plain model to save: a peft model's adapters merged into its weights (the base
    weights change in place), any other model as it is."""
    from accelerate.utils import is_peft_model

    return model.merge_and_unload() if is_peft_model(model) else model


def lora_meta(config: Any, model: Any = None) -> dict[str, Any]:
    """What a produced model's meta records of its LoRA training (nothing without LoRA);
    given the (unmerged) peft model, also its trainable parameter count."""
    if not lora_on(config):
        return {}
    out: dict[str, Any] = {"lora_r": config.lora_r, "lora_alpha": config.lora_alpha,
                           "lora_target_modules": config.lora_target_modules}
    if model is not None:
        out["lora_trainable_parameters"] = int(sum(p.numel() for p in model.parameters()
                                                   if p.requires_grad))
    return out


def reference_is_base(ctx: RunContext) -> bool:
    """Whether π₀ is the base model itself (no reference model, or the same one)."""
    ref, base = ctx.reference_model, ctx.base_model
    if ref is None or base is None:
        return True
    if ref.id is not None and ref.id == base.id:
        return True
    try:
        return os.path.samefile(ref.path, base.path)
    except OSError:
        return False


def measure_reference(ctx: RunContext) -> Any:
    """π₀ for the trainer and the KL measurements: None with LoRA when π₀ is the base (the
    policy with its adapters disabled is π₀ exactly, so no second copy is loaded), otherwise
    its own frozen copy (``reference_load``)."""
    if lora_on(ctx.config) and reference_is_base(ctx):
        return None
    return reference_load(ctx)


class AdaptersOff:
    """A peft model seen with its adapters disabled: the frozen base it wraps, as a reference
    for ``modeling.kl_monte_carlo`` (which calls ``eval``, ``parameters`` and the forward)."""

    def __init__(self, model: Any) -> None:
        from accelerate.utils import is_peft_model

        if not is_peft_model(model):
            raise ValueError("reference=None needs a LoRA (peft) policy: its adapters off are "
                             "π₀. Pass the reference model otherwise.")
        self.model = model

    def eval(self) -> AdaptersOff:
        return self  # the policy's own mode is its caller's business

    def parameters(self) -> Any:
        return self.model.parameters()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)


# --- Reports for outside trackers -------------------------------------------------------------


def tensorboard_dir(ctx: RunContext) -> Path:
    return Path(ctx.output_dir) / "tensorboard"


def _tensorboard_callback(log_dir: Path, *, step_offset: int = 0) -> Any:
    """The trainer's numeric logs as TensorBoard scalars in ``log_dir`` at step
    ``step_offset + global_step``. Own callback rather than ``report_to="tensorboard"``:
    transformers 5 has no ``logging_dir`` (its callback writes under
    ``output_dir/runs/<time>_<host>`` or a process-wide environment variable)."""
    from transformers import TrainerCallback

    class TensorBoardEvents(TrainerCallback):
        writer: Any = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return control
            if self.writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(log_dir))
            for key, value in logs.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    name = key if "/" in key else f"train/{key}"
                    self.writer.add_scalar(name, value, step_offset + state.global_step)
            self.writer.flush()
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            return control

    return TensorBoardEvents()


def with_report_artifacts(run: Callable[[RunContext], MethodResult]
                          ) -> Callable[[RunContext], MethodResult]:
    """Decorate a method's ``run``: its TensorBoard folder, when the config reports there and
    events were written, joins ``MethodResult.artifacts`` (cancelled runs included)."""

    @functools.wraps(run)
    def wrapper(ctx: RunContext) -> MethodResult:
        result = run(ctx)
        folder = tensorboard_dir(ctx)
        if (getattr(ctx.config, "report_to", "none") == "tensorboard" and folder.is_dir()
                and folder not in result.artifacts):
            result.artifacts.append(folder)
        return result

    return wrapper
