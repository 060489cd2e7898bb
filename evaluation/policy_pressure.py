"""Pressure from real policies: a DPO β sweep on the tiny policy, and a causal LM as π₀.

Issue 9, DESIGN section 7 ("trained policies"; "K samples y₁..y_K from π₀"). Two ways to put
a language model where ``evaluation.experiments`` puts the world's own reply generator:

1. **A DPO β sweep** (:func:`dpo_beta_curve`). π₀ is a tiny SFT policy trained on the world's
   candidate replies (``training.methods.sft``, targets "both": the distribution annotators
   compare, as InstructGPT's SFT precedes its reward model). One DPO run per β on the
   experiment's preference rows (``training.methods.dpo``, reference = π₀ as its own frozen
   copy) gives one policy per pressure λ = 1/β (Rafailov et al. 2023, eq. 7: smaller β lets
   the policy move further from π₀). Each policy is sampled on fresh evaluation prompts, every
   reply scored by the given proxy r̂ and by the world's utility r*, and per reply
   ℓ = log π(y|x) − log π₀(y|x) is summed over its generated tokens, so the KL is Monte Carlo on
   the very replies that are scored (as ``training.modeling.kl_samples``). ``gap.policy_curve``
   assembles proxy, gold and gap against d = √KL with bootstrap intervals over prompts; π₀'s own
   samples are the first point (pressure 0, KL 0) and set the standardization.
2. **A causal LM as π₀** (:func:`model_reference_pools`): K samples per prompt from a local
   model folder at a temperature (part of π₀'s definition: SmolLM2-135M-Instruct at T ≈ 0.7 is a
   real, imperfect arithmetic policy, ML-STACK.md), in the shape of
   ``evaluation.experiments.reference_pools``, so tilting and best-of-n apply unchanged
   (:func:`model_gap_curves`).

Pure-ish: no ORM here. Rows, model folders and a reward scorer (a callable
``(turns per reply, replies) -> scores``, e.g. :func:`trained_reward_scorer`) come in as plain
values; the management command ``gap_policy_curve`` does the database part (a simulated
campaign and its snapshot). Torch, transformers and trl are imported inside functions
(``tests/test_layers.py``).

Why a local log-ratio sampler (:func:`sample_log_ratios`) rather than ``kl_samples``: the
bootstrap over prompts needs ℓ per reply (P × M), and ``kl_samples`` returns only the mean over
all replies and its SE. The helper draws exactly what ``kl_samples`` draws (same generator
calls, seed and masks: the end token counted, padding after it not; both log-probabilities at
the sampling temperature), which ``tests/evaluation/test_policy_pressure.py`` checks.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.experiments import json_plain
from training.methods.base import ModelRef

Turns = list[dict[str, str]]
RewardScorer = Callable[[list[Turns], list[str]], Sequence[float]]
Progress = Callable[[str], None]

DEFAULT_BETAS = (1.0, 0.3, 0.1, 0.03)
# π₀'s SFT: long enough that the tiny policy writes replies the world can parse (arithmetic,
# 64-wide tiny policy, 300 prompts' candidate replies: 89% parseable, 25 words, never correct).
DEFAULT_SFT = {"max_steps": 300, "batch_size": 16, "learning_rate": 2e-3}
DEFAULT_DPO = {"max_steps": 60, "batch_size": 16, "learning_rate": 5e-4}
DEFAULT_RM = {"learning_rate": 1e-3, "epochs": 4.0, "batch_size": 16, "eval_fraction": 0.15}
# RLHF (RLOO) on the tiny policy: a learning rate for a model trained from scratch, short
# replies (the world's answers are one sentence).
DEFAULT_RLHF = {"max_steps": 30, "batch_size": 8, "num_generations": 4, "learning_rate": 5e-4,
                "max_new_tokens": 32}
# ReST on the tiny policy: short Grow steps (a few prompts' samples) and Improve steps.
DEFAULT_REST = {"n_prompts": 16, "samples_per_prompt": 4, "steps_per_round": 20,
                "batch_size": 8, "learning_rate": 5e-4, "threshold": 0.5,
                "threshold_step": 0.1, "max_new_tokens": 32}
# method -> (its config defaults, the config field its sweep sets: the KL coefficient β, or
# for ReST none: its pressure is the round)
TRAINED_METHODS = {"dpo": (DEFAULT_DPO, "beta"), "rlhf": (DEFAULT_RLHF, "kl_coef"),
                   "rest": (DEFAULT_REST, "")}


def _say(progress: Progress | None, stage: str) -> None:
    if progress is not None:
        progress(stage)


# --- Data from the world ----------------------------------------------------------------------


def train_categories(world: Any) -> list[str]:
    """The world's categories that campaigns use (held-out ones left out)."""
    return [c for c in world.categories if c not in world.held_out_categories]


def world_sft_rows(world: Any, *, n_prompts: int, seed: int) -> list[dict[str, Any]]:
    """Rows whose chosen and rejected sides cover every candidate reply of ``n_prompts`` fresh
    training-category prompts once (reply i paired with reply i+1): what SFT with
    ``targets="both"`` learns π₀ from. Deterministic in (world, n_prompts, seed)."""
    rng = random.Random(f"sft:{seed}")
    rows = []
    for prompt in world.generate_prompts(n_prompts, seed, categories=train_categories(world)):
        replies = world.candidate_responses(prompt, rng)
        for i, text in enumerate(replies):
            other = replies[(i + 1) % len(replies)]
            rows.append({"prompt": prompt.turns,
                         "chosen": [{"role": "assistant", "content": text}],
                         "rejected": [{"role": "assistant", "content": other}]})
    return rows


def eval_prompts(world: Any, *, n_prompts: int, seed: int) -> list[Any]:
    """Fresh training-category prompts to sample policies on (a seed apart from the campaign's
    and the SFT's, so nothing was trained on them)."""
    return world.generate_prompts(n_prompts, seed, categories=train_categories(world))


@dataclass(frozen=True)
class ReplyStats:
    """What the world reads in P × M replies: r*, and the shares a reader wants beside it."""

    utility: np.ndarray  # (P, M)
    parseable: float  # share with an answer the world parses (arithmetic: a number)
    correct: float | None  # share with the right answer (worlds with a "correct" feature)
    words: float  # mean words per reply

    def as_dict(self) -> dict[str, Any]:
        return {"utility_mean": float(self.utility.mean()), "parseable": self.parseable,
                "correct": self.correct, "words": self.words}


def reply_stats(world: Any, prompts: Sequence[Any], texts: Sequence[Sequence[str]]
                ) -> ReplyStats:
    """Score each reply by the world's utility and read its features (parse, correct, words)."""
    utility, parsed, correct, words = [], [], [], []
    for prompt, group in zip(prompts, texts, strict=True):
        row = []
        for text in group:
            f = world.features(prompt, text)
            row.append(float(world.utility(prompt, text)))
            parsed.append(f.get("has_answer", math.nan))
            correct.append(f.get("correct", math.nan))
            words.append(len(text.split()))
        utility.append(row)
    correct_arr = np.asarray(correct, dtype=float)
    return ReplyStats(
        utility=np.asarray(utility, dtype=float),
        parseable=float(np.nanmean(parsed)) if np.isfinite(parsed).any() else math.nan,
        correct=float(correct_arr.mean()) if np.isfinite(correct_arr).all() else None,
        words=float(np.mean(words)))


def scores_grid(scorer: RewardScorer, prompts: Sequence[Any], texts: Sequence[Sequence[str]]
                ) -> np.ndarray:
    """(P, M) proxy scores of every reply (one scorer call for all of them)."""
    turns = [p.turns for p, group in zip(prompts, texts, strict=True) for _ in group]
    flat = [t for group in texts for t in group]
    out = np.asarray(list(scorer(turns, flat)), dtype=float)
    return out.reshape(len(prompts), -1)


# --- Models in this process -------------------------------------------------------------------


def trained_reward_scorer(*, rows: list[dict[str, Any]], base: ModelRef, out_dir: Path,
                          seed: int = 0, config: dict[str, Any] | None = None
                          ) -> tuple[RewardScorer, dict[str, Any]]:
    """Train a Bradley-Terry reward model on ``rows`` from ``base`` (``training.methods.
    reward_model``, in this process, as ``experiments`` does) and return a scorer over it and
    the run's metrics (accuracies, pairs)."""
    from dataclasses import replace

    from training.methods import method_config
    from training.methods import reward_model as rm
    from training.methods.base import NullReporter, RunContext
    from training.modeling import reward_load, reward_score

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(config=method_config("reward_model", {**DEFAULT_RM, **(config or {})}),
                     output_dir=out_dir, reporter=NullReporter(), seed=seed, rows=rows,
                     base_model=base)
    result = rm.run(ctx)
    model, tokenizer = reward_load(replace(base, path=str(result.models[0].path),
                                           tokenizer_path=""))

    def scorer(turns: list[Turns], texts: list[str]) -> list[float]:
        return reward_score(model, tokenizer, turns, texts, batch_size=128)

    info = {k: result.metrics.get(k) for k in ("eval_accuracy", "train_accuracy", "train_loss",
                                               "steps", "train_pairs", "eval_pairs")}
    return scorer, {**info, "path": str(result.models[0].path)}


def sft_reference(*, world: Any, base: ModelRef, out_dir: Path, seed: int = 0,
                  n_prompts: int = 300, config: dict[str, Any] | None = None
                  ) -> tuple[ModelRef, dict[str, Any]]:
    """π₀: ``base`` fine-tuned on the candidate replies of ``n_prompts`` fresh prompts
    (``training.methods.sft``, targets "both"); returns its folder as a ModelRef (tokenizer
    saved in it) and the run's metrics."""
    from training.methods import method_config, sft
    from training.methods.base import NullReporter, RunContext

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"kl_every": 0, "kl_prompts": 1, "kl_samples": 1, "max_new_tokens": 4,
           **DEFAULT_SFT, **(config or {})}
    ctx = RunContext(config=method_config("sft", cfg), output_dir=out_dir,
                     reporter=NullReporter(), seed=seed,
                     rows=world_sft_rows(world, n_prompts=n_prompts, seed=50_000 + seed),
                     base_model=base)
    result = sft.run(ctx)
    ref = ModelRef(id=None, path=str(result.models[0].path), kind="policy", name="pi0-sft")
    return ref, {"train_loss": result.metrics.get("train_loss"),
                 "examples": result.metrics.get("examples"), "steps": result.metrics.get("steps")}


def sample_log_ratios(policy: Any, reference: Any, tokenizer: Any, prompts: Sequence[Turns], *,
                      n: int, max_new_tokens: int, temperature: float, seed: int,
                      batch_size: int = 256) -> tuple[list[list[str]], np.ndarray]:
    """``n`` replies per prompt from ``policy`` and, per reply, log π(y|x) − log π₀(y|x) in
    nats: (texts per prompt, (P, n) array), ``training.modeling.log_ratio_samples``' draw (the
    one ``kl_samples`` averages), kept per reply for the bootstrap over prompts."""
    from training.modeling import log_ratio_samples

    d, texts = log_ratio_samples(policy, reference, tokenizer, prompts, n_samples=n,
                                 max_new_tokens=max_new_tokens, temperature=temperature,
                                 seed=seed, batch_size=batch_size)
    return texts, d.numpy().reshape(len(prompts), n)


# --- 1. The DPO β sweep -----------------------------------------------------------------------


@dataclass
class BetaPoint:
    """One DPO policy of the sweep, in raw units (the curve has the standardized ones)."""

    beta: float
    pressure: float  # 1/β
    kl: float  # nats per reply, Monte Carlo on the scored replies
    kl_se: float  # SE with prompts as the unit (gap.policy_curve)
    kl_se_samples: float  # SE treating replies as independent (as kl_samples reports it)
    proxy: float  # mean r̂ (the scorer's units)
    true: float  # mean r* (the world's units)
    parseable: float
    correct: float | None
    words: float
    train_loss: float | None
    seconds: float


@dataclass
class DpoSweep:
    """A β sweep: the GapCurve (π₀ first, then β as given), π₀'s numbers, one point per β."""

    curve: Any  # gap.GapCurve, method "policy", pressure 0 then 1/β
    reference: dict[str, Any]  # π₀: SFT metrics, utility, parseable, correct, words
    points: list[BetaPoint]
    config: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return json_plain({"curve": self.curve.as_dict(), "reference": self.reference,
                       "points": [asdict(p) for p in self.points], "config": self.config,
                       "timing": self.timing})


def dpo_beta_curve(*, world: Any, rows: list[dict[str, Any]], base: ModelRef,
                   reward_scorer: RewardScorer, out_dir: Path,
                   betas: Sequence[float] = DEFAULT_BETAS, seed: int = 0,
                   reference: ModelRef | None = None, sft_prompts: int = 300,
                   sft_config: dict[str, Any] | None = None,
                   dpo_config: dict[str, Any] | None = None, n_eval_prompts: int = 32,
                   samples: int = 4, max_new_tokens: int = 64, temperature: float = 1.0,
                   n_boot: int = 300, level: float = 0.9,
                   progress: Progress | None = None, method: str = "dpo",
                   reward_model: ModelRef | None = None) -> DpoSweep:
    """Trace the gap along DPO's β: one DPO policy per β from π₀ on ``rows``.

    ``method="rest"`` traces ReST's rounds: one run of max(``betas``) rounds (``betas`` are the
    round numbers then), each round's policy a point at pressure = its round.

    ``method="rlhf"`` traces RLHF's KL coefficient instead (``training.methods.rlhf``, TRL's
    RLOO with reward r̂ − β·KL): each β trains a policy from π₀ against ``reward_model`` (the
    r̂ whose scores ``reward_scorer`` gives), on the prompts of ``rows``, with ``dpo_config``
    as the RLHF config's overrides; the rest (sampling, scoring, Monte Carlo KL, the curve) is
    the same.

    ``base`` is the untrained tiny policy (with its tokenizer) that π₀ is fine-tuned from
    (:func:`sft_reference`), unless ``reference`` gives π₀ ready-made. Every policy, π₀ too, is
    sampled ``samples`` times on the same ``n_eval_prompts`` fresh prompts at ``temperature``
    (1 = the policies' own distributions, the ones DPO's KL is about); replies are cut at
    ``max_new_tokens``. Pressure is 1/β, π₀ is pressure 0. Returns a :class:`DpoSweep`.
    Raises ValueError for an empty grid or a non-positive β.
    """
    from evaluation import gap
    from training.modeling import policy_load

    if method not in TRAINED_METHODS:
        raise ValueError(f"method must be one of {sorted(TRAINED_METHODS)}")
    if method in ("rlhf", "rest") and reward_model is None:
        raise ValueError(f"method={method!r} needs the reward_model it optimizes")
    betas = [float(b) for b in betas]
    if not betas or any(not b > 0 for b in betas):
        raise ValueError("betas must be a non-empty list of positive numbers")
    out_dir = Path(out_dir)
    timing: dict[str, float] = {}
    started = time.monotonic()
    sft_info: dict[str, Any] = {}
    if reference is None:
        _say(progress, "sft")
        reference, sft_info = sft_reference(world=world, base=base, out_dir=out_dir / "sft",
                                            seed=seed, n_prompts=sft_prompts, config=sft_config)
    timing["sft"] = time.monotonic() - started

    started = time.monotonic()
    _say(progress, "pi0 samples")
    ref_model, tokenizer = policy_load(reference, device="cpu")
    prompts = eval_prompts(world, n_prompts=n_eval_prompts, seed=20_000 + seed)
    turns = [p.turns for p in prompts]
    draw = {"n": samples, "max_new_tokens": max_new_tokens, "temperature": temperature,
            "seed": seed}
    ref_texts, ref_ratio = sample_log_ratios(ref_model, ref_model, tokenizer, turns, **draw)
    ref_stats = reply_stats(world, prompts, ref_texts)
    ref_proxy = scores_grid(reward_scorer, prompts, ref_texts)
    timing["pi0_samples"] = time.monotonic() - started

    cols: dict[str, list[np.ndarray]] = {"proxy": [ref_proxy], "true": [ref_stats.utility],
                                         "ratio": [ref_ratio]}
    points: list[BetaPoint] = []
    defaults, knob = TRAINED_METHODS[method]
    dpo_cfg = {"kl_every": 0, "kl_prompts": 1, "kl_samples": 1,
               **({"max_new_tokens": 4} if method in ("dpo", "rest") else {}),
               **defaults, **(dpo_config or {})}
    for beta, pressure, path, train_loss, seconds in _trained_policies(
            method, betas=betas, cfg=dpo_cfg, knob=knob, out_dir=out_dir, seed=seed,
            rows=rows, reference=reference, reward_model=reward_model, progress=progress):
        t0 = time.monotonic()
        policy, _ = policy_load(ModelRef(id=None, path=str(path), kind="policy"), device="cpu")
        texts, ratio = sample_log_ratios(policy, ref_model, tokenizer, turns, **draw)
        stats = reply_stats(world, prompts, texts)
        proxy = scores_grid(reward_scorer, prompts, texts)
        cols["proxy"].append(proxy)
        cols["true"].append(stats.utility)
        cols["ratio"].append(ratio)
        flat = ratio.ravel()
        points.append(BetaPoint(
            beta=beta, pressure=pressure, kl=float(flat.mean()), kl_se=math.nan,
            kl_se_samples=float(flat.std(ddof=1) / math.sqrt(flat.size)),
            proxy=float(proxy.mean()), true=float(stats.utility.mean()),
            parseable=stats.parseable, correct=stats.correct, words=stats.words,
            train_loss=train_loss, seconds=round(seconds + time.monotonic() - t0, 3)))
        del policy
    started = time.monotonic()
    curve = gap.policy_curve(pressure=[0.0, *(p.pressure for p in points)], proxy=cols["proxy"],
                             true=cols["true"], log_ratio=cols["ratio"], ref_proxy=ref_proxy,
                             ref_true=ref_stats.utility, n_boot=n_boot, level=level, seed=seed)
    for point, se in zip(points, curve.kl_se[1:], strict=True):
        point.kl_se = float(se)
    timing["curve"] = time.monotonic() - started
    timing["dpo"] = float(sum(p.seconds for p in points))
    return DpoSweep(
        curve=curve,
        reference={**sft_info, **ref_stats.as_dict(), "proxy_mean": float(ref_proxy.mean()),
                   "path": reference.path},
        points=points,
        config={"betas": betas, "seed": seed, "sft_prompts": sft_prompts,
                "sft": {**DEFAULT_SFT, **(sft_config or {})}, "dpo": dpo_cfg,
                "n_eval_prompts": n_eval_prompts, "samples": samples,
                "max_new_tokens": max_new_tokens, "temperature": temperature,
                "rows": len(rows), "n_boot": n_boot, "level": level},
        timing={k: round(v, 3) for k, v in timing.items()})


def _trained_policies(method: str, *, betas: list[float], cfg: dict[str, Any], knob: str,
                      out_dir: Path, seed: int, rows: list[dict[str, Any]],
                      reference: ModelRef, reward_model: ModelRef | None,
                      progress: Progress | None):
    """Train the sweep's policies in this process and yield, per policy, (its knob's value,
    its pressure, its folder, its training loss, seconds): DPO or RLHF train one policy per β
    (pressure 1/β); ReST trains once for max(``betas``) rounds (``betas`` are then round
    numbers) and yields each round's policy (pressure = the round)."""
    from training.methods import dpo, method_config, rest, rlhf
    from training.methods.base import NullReporter, RunContext

    def run(config: dict[str, Any], folder: Path) -> Any:
        ctx = RunContext(config=method_config(method, config), output_dir=folder,
                         reporter=NullReporter(), seed=seed, rows=rows, base_model=reference,
                         reward_models=[reward_model] if method != "dpo" else [])
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        return {"dpo": dpo, "rlhf": rlhf, "rest": rest}[method].run(ctx)

    if method == "rest":
        rounds = [int(r) for r in betas]
        _say(progress, f"rest {max(rounds)} rounds")
        t0 = time.monotonic()
        folder = out_dir / "rest"
        result = run({**cfg, "rounds": max(rounds)}, folder)
        share = (time.monotonic() - t0) / max(rounds)
        for r in rounds:
            yield (float(r), float(r), folder / f"round-{r}" / "policy",
                   result.metrics.get(f"round{r}_train_loss"), share)
        return
    for beta in betas:
        t0 = time.monotonic()
        _say(progress, f"{method} beta={beta:g}")
        result = run({**cfg, knob: beta}, out_dir / f"{method}-b{beta:g}")
        yield (beta, 1.0 / beta, result.models[0].path, result.metrics.get("train_loss"),
               time.monotonic() - t0)


# --- 2. A causal LM as π₀ ---------------------------------------------------------------------


def model_reference_pools(world: Any, *, policy_path: str, n_prompts: int, k: int,
                          temperature: float, seed: int, max_new_tokens: int = 48,
                          tokenizer_path: str = "", batch_size: int = 256,
                          device: str | None = None) -> tuple[list[Any], list[list[str]]]:
    """π₀ = the causal LM in ``policy_path`` sampled at ``temperature`` (``top_k=0``,
    ``top_p=1``: its own tempered distribution): ``n_prompts`` fresh training-category prompts
    and K = ``k`` replies each, in the shape of ``experiments.reference_pools``. Seeded: the
    same model, arguments and batch size give the same pools."""
    from training.modeling import policy_load, sample

    if n_prompts < 1 or k < 1:
        raise ValueError("n_prompts and k must be >= 1")
    if not temperature > 0:
        raise ValueError("temperature must be > 0 (π₀ is a distribution to sample)")
    model, tokenizer = policy_load(ModelRef(id=None, path=str(policy_path), kind="policy",
                                            tokenizer_path=tokenizer_path), device=device)
    prompts = eval_prompts(world, n_prompts=n_prompts, seed=10_000 + seed)
    pools = sample(model, tokenizer, [p.turns for p in prompts], n=k,
                   max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                   batch_size=batch_size)
    return prompts, [[t.strip() for t in pool] for pool in pools]


@dataclass
class PoolCurves:
    """Tilting and best-of-n over a model's pools: curves, fits, headline, π₀'s numbers."""

    curves: dict[str, Any]  # method -> gap.GapCurve
    fits: dict[str, Any]  # method -> {"gold": GoldFit, "gap": Trend}
    headline: dict[str, Any]  # method -> gap slope, peak or "no peak", d*, gold/proxy at max
    reference: dict[str, Any]  # π₀: utility, parseable, correct, words, r̂ ↔ r* correlation

    def as_dict(self) -> dict[str, Any]:
        return json_plain({
            "curves": {m: c.as_dict() for m, c in self.curves.items()},
            "fits": {m: {"gold": f["gold"].as_dict(), "gap": f["gap"].as_dict()}
                     for m, f in self.fits.items()},
            "headline": self.headline, "reference": self.reference})


def model_gap_curves(world: Any, *, prompts: Sequence[Any], pools: Sequence[Sequence[str]],
                     reward_scorer: RewardScorer, seed: int = 0,
                     methods: Sequence[str] = ("tilting", "best_of_n"),
                     lambda_min: float = 0.03, lambda_max: float = 30.0, n_lambdas: int = 24,
                     n_max: int | None = None, n_ns: int = 12, n_boot: int = 300,
                     level: float = 0.9) -> PoolCurves:
    """Score π₀'s pools by r̂ and r* and trace tilting and/or best-of-n with fits.

    As ``experiments`` does: tilting pressures λ log-spaced in units of 1/SD(r̂) under π₀;
    best-of-n n up to ``n_max`` (default K); gold fitted with the best-of-n form d(α − βd)
    (``fits.gold_fit_curve``: peak or "no peak" with its reason) and the gap's slope in d
    (``fits.gap_trend``)."""
    from evaluation import fits, gap

    stats = reply_stats(world, prompts, pools)
    proxy = scores_grid(reward_scorer, prompts, pools)
    true = stats.utility
    with np.errstate(invalid="ignore"):
        corr = float(np.corrcoef(proxy.ravel(), true.ravel())[0, 1])
    sd = gap.reference_scale(reference=proxy).std
    curves, fitted, headline = {}, {}, {}
    for method in methods:
        if method == "tilting":
            lams = gap.lambda_grid(lo=lambda_min, hi=lambda_max, num=n_lambdas)
            curve = gap.tilting_curve(proxy=proxy, true=true, lambdas=lams / sd, n_boot=n_boot,
                                      level=level, seed=seed)
        elif method == "best_of_n":
            curve = gap.best_of_n_curve(proxy=proxy, true=true,
                                        ns=gap.n_grid(n_max=n_max or proxy.shape[1], num=n_ns),
                                        n_boot=n_boot, level=level, seed=seed)
        else:
            raise ValueError(f"unknown pressure method {method!r}")
        gold = fits.gold_fit_curve(curve=curve, form="bon")
        trend = fits.gap_trend(curve=curve)
        curves[method] = curve
        fitted[method] = {"gold": gold, "gap": trend}
        peak = gold.peak if gold.peak_reported and gold.peak else None
        headline[method] = {
            "gap_slope": trend.slope.as_dict(), "gap_intercept": trend.intercept.as_dict(),
            "peak": peak.as_dict() if peak else "no peak", "d_star": peak.value if peak else None,
            "peak_reason": gold.reason, "d_max": float(curve.d.value.max()),
            "proxy_at_max": float(curve.proxy.value[-1]),
            "gold_at_max": float(curve.true.value[-1]),
            "gold_max": float(np.nanmax(curve.true.value)),
        }
    return PoolCurves(curves=curves, fits=fitted, headline=headline,
                      reference={**stats.as_dict(), "proxy_mean": float(proxy.mean()),
                                 "corr_proxy_true": corr, "n_prompts": len(prompts),
                                 "samples": int(proxy.shape[1])})
