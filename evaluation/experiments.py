"""Experiments: world → simulated pool → snapshot → noise → reward model → pressure → gap.

DESIGN section 7, issue 9 parts 3 and 6. An experiment is a pure config
(:class:`ExperimentSpec`) and one service (:func:`experiment_run`, or
:func:`experiment_noise_sweep` for one arm per flip rate ε) whose result
(:class:`ExperimentResult`) is plain JSON (``dataclasses.asdict``; non-finite floats become
None), so a later ``Experiment`` row can store spec and result as they are, and a gpu-queue task
can run the same function on an id.

**The pipeline, through the real services.** For each seed:

1. ``world_campaign_create`` + ``simulate_campaign``: the pool answers every comparison through
   the annotation services a person uses; ``campaign_quality_recompute`` then measures the
   campaign's noise ε (``CampaignQuality.noise_epsilon``) and ``simulated_truth`` gives the true
   judgment-weighted error beside it.
2. ``snapshot_create`` with the spec's aggregation method.
3. **Noise injection** (:func:`rows_flip`): a seeded share ε of the snapshot's rows get chosen
   and rejected swapped (exactly round(ε·n) rows, drawn without replacement, so the injected rate
   is the nominal one, not a binomial draw around it). ``noise_base="truth"`` first orients every
   row by the world's utility (rows whose replies tie in utility keep the snapshot's order), so ε
   is the *controlled* label noise of the training set; ``"snapshot"`` flips on top of what the
   pool and aggregation produced, and the arm's noise is then the campaign's plus ε. Each arm
   reports ε four ways: ``injected`` (the knob), ``measured`` (the quality layer's campaign ε,
   composed with the injection as ε_m(1−ε) + (1−ε_m)ε: independent flips of a binary label),
   ``true`` (the share of the arm's training rows whose chosen reply has the lower true utility,
   among rows whose utilities differ: exact, from the world) and the campaign's ``true``
   judgment error (``simulated_truth``). A flipped row is a new set of rows with no aggregation
   behind it, so it is not stored as a ``Snapshot`` (that is the annotation app's
   content-addressed aggregate); the rows' hash is in the result.
4. **Reward model(s)**: ``training.methods.reward_model.run`` on a ``RunContext`` carrying the
   noised rows, in this process, starting from a tiny reward model built from the world's text
   (``training.services.models.tiny_models_build``). Not through ``run_create``/``run_execute``:
   a run names a stored ``Snapshot``, and the noised rows are not one (step 3). A k-seed ensemble
   trains k members on the same rows with seeds seed·1000 + i and combines their scores with
   ``training.methods.common.ensemble_combine`` (mean, mean − k·std, min; Coste et al. 2023).
   ``reward="utility_noise"`` trains nothing: r̂ = r* + σ·N(0, 1) per sample, independent, the
   regressional-only proxy of Gao et al. 2022 eq. 1 (PREDICTIONS P4, model A).
5. **π₀ and its pools.** π₀(·|x) for the arithmetic world is the world's own reply generator:
   one sample is one reply drawn uniformly from ``candidate_responses(x, rng)`` with a fresh
   seeded rng per sample, so a sample's style, padding and phrasing vary as the campaign's
   replies do, and K samples per prompt are i.i.d. draws of one fixed distribution (DESIGN
   section 7: "K samples y₁..y_K from π₀"). Not the tiny SFT policy: a 2-layer model trained for
   seconds writes mostly unparseable text (utility ≈ 0 everywhere), which would leave the gap
   nothing to measure, and sampling it costs more than the whole rest of an arm; SmolLM2 as π₀
   is issue 9 part 9. Evaluation prompts are drawn with a seed of their own, disjoint in seed
   from the campaign's, so the reward model is measured on prompts it was not trained on.
6. Every sample is scored by r̂ (``training.modeling.reward_score``) and by r* (the world's
   utility); ``evaluation.gap`` traces tilting and/or best-of-n curves with bootstrap intervals
   over prompts; ``evaluation.fits`` fits gold = d(α − βd) (peak or "no peak") and the gap's
   slope and intercept in d.

Seeds: each seed repeats the whole pipeline (campaign, simulation, flips, reward model, π₀
samples, bootstrap); :attr:`ExperimentResult.summary` gives per pressure method the median over
seeds of the gap's slope, with the seeds' 5-95% range when there are at least 2 (PREDICTIONS
conventions: medians with 90% intervals; ≥ 10 seeds for a published figure).

**Murphy probes** (``evaluation.probes``). Along every tilting and best-of-n curve,
``curves[method]["features"]`` gives the π-expectation of the world's per-sample features
(length, padding, agreement with a wrong user belief on the prompts that state one, correctness)
with bootstrap bands on the curve's own resamples (reward hacking and sycophancy, P16);
``ArmResult.probes`` the proxy's correlation with each feature. With ``eval_categories="all"``
the evaluation prompts include the world's held-out categories and ``ArmResult.splits`` traces
each curve on the in-distribution and the held-out prompts apart, with the same pressures (the
mirage probe). Annotator drift: ``judgment_window`` trains on the judgments made before or from
the pool's drift onset.

**MAPS variants** (DESIGN section 7). ``spec.variants`` lists levers run beside the baseline:
{name, lever, overrides} with overrides of spec fields (validated at creation; fields that
would break the pairing, ``PAIRED_FIELDS``, are refused). Every variant runs on the baseline's
seeds, evaluation pools, bootstrap resamples and ε, and shares the baseline's campaign when it
changes no annotation field (``ExperimentSpec.key`` covers only those) and its rows when it
changes no snapshot field; reward-model members with the same rows, seed and training fields
are trained once per sweep. So a variant's ``summary["maps"]`` change in gap slope and
intercept against the baseline (``fits.trend_change``, replicate by replicate) is a paired
comparison. The levers as implemented: M ``reward_input="reply+checks"`` (the reward model
reads per-criterion checks after the reply: an oracle per-criterion annotator, an upper bound
on richer supervision); A ``aggregation``, ``overlap`` (a new campaign) and ``gold_threshold``
(gold filtering); P ``ensemble_size`` with ``ensemble_rule`` min or mean_minus_k_std, and
``kl_limit`` (early stopping on the same curve); S ``train_categories``; drift
``judgment_window``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.methods.base import config_build, opt

PRESSURE_METHODS = ("tilting", "best_of_n", "dpo", "rlhf", "rest")
# Trained policies: each measured against its own π₀ (a tiny SFT policy), not the pools'.
POLICY_METHODS = frozenset({"dpo", "rlhf", "rest"})
NOISE_BASES = ("snapshot", "truth")
REWARDS = ("trained", "utility_noise")
ENSEMBLE_RULES = ("mean", "mean_minus_k_std", "min")
AGGREGATIONS = ("majority", "gold_weighted", "dawid_skene", "dawid_skene_plain", "bradley_terry")
EVAL_CATEGORIES = ("all", "train")
JUDGMENT_WINDOWS = ("all", "early", "late")
REWARD_INPUTS = ("reply", "reply+checks")
LEVERS = ("M", "A", "P", "S", "drift")
MAX_VARIANTS = 8
# What the campaign and its simulated judgments depend on: specs equal here share a campaign
# (ExperimentSpec.key), whatever else differs.
ANNOTATION_FIELDS = ("world", "pool", "n_prompts", "pairs_per_prompt", "overlap",
                     "calibration_rate")
# ... and what the training rows before noise depend on (which judgments, how aggregated).
SNAPSHOT_FIELDS = (*ANNOTATION_FIELDS, "aggregation", "gold_threshold", "judgment_window")
# A variant is paired with its baseline (same seeds, evaluation pools, bootstrap resamples and
# ε), so it may not change these.
PAIRED_FIELDS = ("world", "seeds", "n_eval_prompts", "samples_per_prompt", "eval_categories",
                 "n_boot", "level", "flip_rate", "variants")

Progress = Callable[[str, float], None]  # (stage, fraction of the whole experiment done)


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment: world, pool, noise, aggregation, reward model, pressure, grid, seeds.

    Stored as JSON (``dataclasses.asdict``); build one from JSON with :func:`spec_from_dict`,
    which checks every field's type and bounds at once.
    """

    world: str = opt("arithmetic", "World (evaluation/worlds) the prompts, replies and true "
                                   "utility come from.")
    pool: str = opt("crowd:6,expert:2", "Simulated annotator pool, KIND:COUNT comma-separated "
                                        "(evaluation.simulation presets: expert, crowd, "
                                        "drifting, random).")
    n_prompts: int = opt(100, "Prompts of the annotation campaign (each gives "
                              "pairs_per_prompt regular comparisons).", min=2, max=100_000)
    pairs_per_prompt: int = opt(2, "Regular comparisons per campaign prompt.", min=1, max=45)
    overlap: int = opt(3, "Judgments per comparison (distinct annotators).", min=1, max=50)
    calibration_rate: float = opt(0.1, "Share of calibration (gold) items among the campaign's "
                                       "comparisons.", min=0.0, max=0.5)
    aggregation: str = opt("majority", "Snapshot aggregation method (annotation snapshots).",
                           choices=AGGREGATIONS)
    flip_rate: float = opt(0.0, "Injected label noise ε: share of the snapshot's rows whose "
                                "chosen and rejected are swapped (exactly round(ε·rows), "
                                "seeded), in [0, 0.5).", min=0.0, max=0.4999)
    noise_base: str = opt("snapshot", "What ε is injected into: 'snapshot' (the aggregated "
                                      "labels, noise = the pool's plus ε) or 'truth' (rows first "
                                      "oriented by the world's utility, noise = ε exactly).",
                          choices=NOISE_BASES)
    reward: str = opt("trained", "Proxy r̂: 'trained' (reward model(s) trained on the rows) or "
                                 "'utility_noise' (r* plus independent Gaussian noise; no "
                                 "training, the P4 control).", choices=REWARDS)
    proxy_noise_sd: float = opt(0.5, "SD of the independent noise of reward='utility_noise', "
                                      "in utility units (arithmetic: correct = 1).",
                                min=0.0, max=100.0)
    proxy_bias: dict = opt({}, "reward='utility_noise' only: weight per world feature added "
                               "to the proxy, r̂ = r* + Σ w·f + σ·N(0, 1), in utility units per "
                               "feature unit (e.g. {'length': 0.6}: per 100 characters). The "
                               "population proxy of a pool with those biases: what a "
                               "Bradley-Terry model of its labels tends to with unlimited data "
                               "(a control for the P16 probes).")
    ensemble_size: int = opt(1, "Reward models trained on the same rows with different seeds "
                                "(1 = a single model).", min=1, max=10)
    ensemble_rule: str = opt("mean", "How members' scores combine: mean, mean_minus_k_std or "
                                     "min (Coste et al. 2023).", choices=ENSEMBLE_RULES)
    ensemble_k: float = opt(1.0, "k of mean_minus_k_std, in member-score SDs.",
                            min=0.0, max=10.0)
    ensemble_standardize: bool = opt(True, "Standardize each member's scores under π₀ (its mean "
                                           "and SD over every evaluation sample) before "
                                           "combining: a Bradley-Terry loss fixes only score "
                                           "differences, so members' offsets and scales are "
                                           "arbitrary, and without a common reference the min "
                                           "is mostly the member with the lowest offset.")
    rm_config: dict = opt({"learning_rate": 1e-3, "epochs": 4.0, "batch_size": 16,
                           "eval_fraction": 0.15},
                          "Overrides of the reward_model method's config "
                          "(training/methods/reward_model.py Config), e.g. learning_rate, "
                          "epochs.")
    tiny_hidden: int = opt(64, "Width of the tiny reward model built from the world's text "
                               "(units).", min=8, max=1024)
    tiny_layers: int = opt(2, "Layers of the tiny reward model.", min=1, max=12)
    pressure: tuple[str, ...] = opt(("tilting", "best_of_n"),
                                    "Pressure methods applied to π₀'s pools: tilting "
                                    "(π ∝ π₀·exp(λ r̂)) and/or best_of_n.")
    n_eval_prompts: int = opt(200, "Evaluation prompts (fresh, not the campaign's) whose π₀ "
                                   "pools are tilted; the bootstrap's unit.", min=5,
                              max=1_000_000)
    samples_per_prompt: int = opt(16, "K: samples of π₀ per evaluation prompt (the pool).",
                                  min=2, max=4096)
    lambda_min: float = opt(0.03, "Smallest tilting pressure λ, in units of 1/SD(r̂) under π₀.",
                            min=1e-6, max=1e3)
    lambda_max: float = opt(30.0, "Largest tilting pressure λ, in units of 1/SD(r̂) under π₀ "
                                  "(beyond ~30 the pool's top sample has all the weight).",
                            min=1e-5, max=1e4)
    n_lambdas: int = opt(24, "Log-spaced tilting pressures (plus λ = 0).", min=3, max=512)
    n_max: int = opt(16, "Largest best-of-n n (draws with replacement from the pool; past K "
                         "the pool saturates, see GapCurve.kl_pool).", min=2, max=100_000)
    n_ns: int = opt(12, "Roughly log-spaced best-of-n values from 1 to n_max.", min=3, max=256)
    trend_d_max: float = opt(0.0, "Fit the gap's slope and intercept on points with d ≤ this "
                                  "(nats^½); 0 = every point. Tilting's last points crowd "
                                  "toward √log K where the pool, not the pressure, sets the "
                                  "curve.", min=0.0, max=100.0)
    n_boot: int = opt(300, "Bootstrap resamples over evaluation prompts.", min=20, max=10_000)
    level: float = opt(0.9, "Interval level (PREDICTIONS conventions: 90%).", min=0.5,
                       max=0.999)
    seeds: tuple[int, ...] = opt((0,), "Seeds; each repeats the whole pipeline.")
    eval_categories: str = opt("all", "Categories of the evaluation prompts: 'all' (the "
                                      "training categories and the world's held-out ones; "
                                      "ArmResult.splits then gives the gap on each part, the "
                                      "mirage probe) or 'train' (training categories only).",
                               choices=EVAL_CATEGORIES)
    train_categories: tuple[str, ...] = opt((), "S lever: train the reward model only on the "
                                                "snapshot rows of these categories (empty = "
                                                "every row), e.g. a rare one.")
    gold_threshold: float = opt(0.0, "A lever, gold filtering: before aggregation drop every "
                                     "judgment of annotators whose accuracy on the campaign's "
                                     "gold items is below this (0 = keep all; annotators with "
                                     "no gold judgment are kept).", min=0.0, max=1.0)
    judgment_window: str = opt("all", "Drift probe: aggregate only the judgments each "
                                      "annotator made before ('early') or from ('late') the "
                                      "pool's drift onset (its drifting preset's t0), or 'all'. "
                                      "Needs a pool with a drifting kind.",
                               choices=JUDGMENT_WINDOWS)
    kl_limit: float = opt(0.0, "P lever, KL limit κ (nats): curves stop at d ≤ √κ (0 = no "
                               "limit). Early stopping on the same curve, not a new policy; "
                               "at least 0.7 so best-of-n keeps three points.",
                          min=0.0, max=100.0)
    reward_input: str = opt("reply", "M lever, richer supervision: 'reply' (the reward model "
                                     "reads the reply) or 'reply+checks' (the reply followed by "
                                     "per-criterion checks of the world: is the answer correct, "
                                     "does it endorse the user's wrong belief; an oracle "
                                     "per-criterion annotator, in training rows and when "
                                     "scoring).", choices=REWARD_INPUTS)
    dpo_betas: tuple[float, ...] = opt((1.0, 0.3, 0.1, 0.03),
                                       "pressure 'dpo': DPO's β grid (pressure 1/β), one "
                                       "policy each, trained on the arm's rows from π₀ = a tiny "
                                       "SFT policy of the world (evaluation.policy_pressure).")
    dpo_config: dict = opt({}, "pressure 'dpo': overrides of the DPO runs' config "
                               "(policy_pressure.DEFAULT_DPO: 60 steps of 16, lr 5e-4).")
    rlhf_kl_coefs: tuple[float, ...] = opt((1.0, 0.3, 0.1, 0.03),
                                           "pressure 'rlhf': the KL coefficients β of RLHF "
                                           "(RLOO, reward r̂ − β·KL; pressure 1/β), one policy "
                                           "each from the same π₀ as 'dpo', optimizing the "
                                           "arm's first reward model.")
    rlhf_config: dict = opt({}, "pressure 'rlhf': overrides of the RLHF runs' config "
                                "(policy_pressure.DEFAULT_RLHF: 30 steps of 8 replies, 4 per "
                                "prompt, lr 5e-4).")
    rest_rounds: tuple[int, ...] = opt((1, 2, 3), "pressure 'rest': the ReST rounds measured "
                                                  "(one run of max rounds from the same π₀ as "
                                                  "'dpo', growing and filtering with the arm's "
                                                  "first reward model; pressure = the round).")
    rest_config: dict = opt({}, "pressure 'rest': overrides of the ReST run's config "
                                "(policy_pressure.DEFAULT_REST).")
    dpo_sft_config: dict = opt({}, "pressure 'dpo': overrides of π₀'s SFT config "
                                   "(policy_pressure.DEFAULT_SFT: 300 steps of 16, lr 2e-3).")
    dpo_sft_prompts: int = opt(300, "pressure 'dpo': prompts whose candidate replies π₀ is "
                                    "fine-tuned on.", min=4, max=100_000)
    dpo_eval_prompts: int = opt(32, "pressure 'dpo': fresh prompts each policy is sampled "
                                    "on (the bootstrap's unit).", min=4, max=100_000)
    dpo_samples: int = opt(4, "pressure 'dpo': replies per prompt and policy.", min=1,
                           max=256)
    variants: tuple[dict, ...] = opt((), "MAPS variants run beside this baseline, paired with "
                                         "it (same seeds, evaluation pools, bootstrap, ε): a "
                                         "list of {name, lever (M, A, P, S or drift), "
                                         "overrides: {spec field: value}}; at most "
                                         f"{MAX_VARIANTS}.")

    def __post_init__(self) -> None:
        from training.methods.base import ConfigError

        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise ValueError("seeds must be a non-empty list of integers")
        if not self.pressure or any(p not in PRESSURE_METHODS for p in self.pressure):
            raise ValueError(f"pressure must be a non-empty subset of {PRESSURE_METHODS}")
        if not 0 <= self.flip_rate < 0.5:
            raise ValueError("flip_rate must be in [0, 0.5)")
        if self.lambda_min >= self.lambda_max:
            raise ValueError("lambda_min must be below lambda_max")
        from evaluation.simulation import parse_pool
        from evaluation.worlds import get_world

        world = get_world(self.world)
        members = parse_pool(self.pool)
        errors: dict[str, list[str]] = {}
        unknown = sorted(set(self.train_categories) - set(world.categories))
        if unknown:
            errors["train_categories"] = [f"Unknown categories {unknown}; known: "
                                          f"{', '.join(world.categories)}."]
        if 0 < self.kl_limit < 0.7:
            errors["kl_limit"] = ["0 (no limit) or at least 0.7 nats: best-of-n's n = 2, 3, 4 "
                                  "sit at KL 0.19, 0.43, 0.64 and a fit needs three points."]
        if self.proxy_bias:
            known = set(world.features(world.generate_prompts(1, 0)[0], "x"))
            bad = [k for k, v in self.proxy_bias.items() if k not in known
                   or isinstance(v, bool) or not isinstance(v, int | float)
                   or not math.isfinite(v)]
            if bad or self.reward != "utility_noise":
                errors["proxy_bias"] = [f"Numbers per world feature ({', '.join(sorted(known))}) "
                                        "with reward='utility_noise'" + (f"; bad: {bad}"
                                                                        if bad else "") + "."]
        for method, grid in (("dpo", "dpo_betas"), ("rlhf", "rlhf_kl_coefs"),
                             ("rest", "rest_rounds")):
            if method not in self.pressure:
                continue
            if self.reward != "trained":
                errors.setdefault("pressure", []).append(
                    f"'{method}' needs reward='trained': its samples are scored by the reward "
                    "model.")
            values = getattr(self, grid)
            if len(set(values)) < 3 or any(
                    isinstance(b, bool) or not isinstance(b, int | float)
                    or not math.isfinite(b) or not b > 0 for b in values):
                errors[grid] = ["At least three distinct positive numbers (a gold fit needs "
                                "three points with d > 0)."]
        if self.judgment_window != "all" and pool_drift_onset(members) is None:
            errors["judgment_window"] = ["A judgment window needs a pool with a drifting "
                                         "kind (e.g. drifting:4)."]
        if errors:
            raise ConfigError(errors)
        if self.variants:
            variant_specs(self)  # raises ConfigError naming variants[i]...

    def key(self) -> str:
        """A short hash of the annotation fields (``ANNOTATION_FIELDS``): specs that share it
        share a campaign and its simulated judgments (campaign reuse across experiments)."""
        return _digest({k: getattr(self, k) for k in ANNOTATION_FIELDS})

    def snapshot_key(self) -> str:
        """A short hash of ``SNAPSHOT_FIELDS``: specs that share it share the training rows
        before noise."""
        return _digest({k: getattr(self, k) for k in SNAPSHOT_FIELDS})

    def full_key(self) -> str:
        """A short hash of every field but ε and the variants: where its artifacts go."""
        return _digest({k: v for k, v in asdict(self).items()
                        if k not in ("flip_rate", "variants")})


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=list).encode()
                          ).hexdigest()[:10]


def pool_drift_onset(members: Sequence[Any]) -> int | None:
    """The pool's drift onset as a judgment number (1-based; the earliest of its drifting
    kinds), or None when no kind drifts."""
    from evaluation.simulation import drift_onset_judgment

    onsets = [drift_onset_judgment(m.config) for m in members if m.config.drift is not None]
    return min(onsets) if onsets else None


@dataclass(frozen=True)
class Variant:
    """A MAPS variant: its name, lever and the spec it runs (the baseline's, overridden)."""

    name: str
    lever: str
    spec: ExperimentSpec
    overrides: dict[str, Any]


def variant_specs(spec: ExperimentSpec) -> list[Variant]:
    """The spec's variants, each validated into a spec of its own (``variants`` emptied).

    Raises ``ConfigError`` with every bad entry at once, keyed by where it sits:
    ``variants[1].overrides.ensemble_size``, ``variants[0].lever``, ``variants[2].name``.
    """
    from training.methods.base import ConfigError

    errors: dict[str, list[str]] = {}
    out: list[Variant] = []
    if len(spec.variants) > MAX_VARIANTS:
        raise ConfigError({"variants": [f"At most {MAX_VARIANTS} variants."]})
    base = {k: v for k, v in asdict(spec).items() if k != "variants"}
    seen: set[str] = set()
    for i, item in enumerate(spec.variants):
        at = f"variants[{i}]"
        if not isinstance(item, dict):
            errors[at] = ["Expected {name, lever, overrides}."]
            continue
        for extra in sorted(set(item) - {"name", "lever", "overrides"}):
            errors[f"{at}.{extra}"] = ["Unknown key; a variant has name, lever, overrides."]
        name, lever, overrides = item.get("name"), item.get("lever"), item.get("overrides", {})
        if not isinstance(name, str) or not name.strip() or len(name) > 60:
            errors[f"{at}.name"] = ["A non-empty name of at most 60 characters."]
        elif name == "baseline" or name in seen:
            errors[f"{at}.name"] = [f"{name!r} is taken (the baseline, or another variant)."]
        else:
            seen.add(name)
        if lever not in LEVERS:
            errors[f"{at}.lever"] = [f"Must be one of {', '.join(LEVERS)}."]
        if not isinstance(overrides, dict):
            errors[f"{at}.overrides"] = ["Expected an object {spec field: value}."]
            continue
        for f in sorted(set(overrides) & set(PAIRED_FIELDS)):
            errors[f"{at}.overrides.{f}"] = ["A variant is paired with its baseline and "
                                             "cannot change this field."]
        try:
            vspec = config_build(ExperimentSpec, {**base, **{
                k: v for k, v in overrides.items() if k not in PAIRED_FIELDS}})
        except ConfigError as exc:
            for f, msgs in exc.errors.items():
                errors.setdefault(f"{at}.overrides.{f}", []).extend(msgs)
            continue
        except ValueError as exc:
            errors.setdefault(f"{at}.overrides", []).append(str(exc))
            continue
        if isinstance(name, str) and isinstance(lever, str):
            out.append(Variant(name=name, lever=lever, spec=vspec, overrides=dict(overrides)))
    if errors:
        raise ConfigError(errors)
    return out


def spec_from_dict(data: dict[str, Any] | None) -> ExperimentSpec:
    """Build a spec from JSON; ``training.methods.base.ConfigError`` names every bad field."""
    from training.methods.base import ConfigError

    try:
        return config_build(ExperimentSpec, data)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError({"spec": [str(exc)]}) from exc


# --- Results ----------------------------------------------------------------------------------


@dataclass
class ArmResult:
    """One (ε, seed) arm: its noise coordinates, reward model, curves and fits. Plain JSON."""

    seed: int
    epsilon: dict[str, Any]  # injected, measured, measured_campaign, true, true_campaign
    rows: dict[str, Any]  # n, flipped, sha256 of the arm's training rows
    reward_model: dict[str, Any]  # accuracies, correlation with r*, members
    curves: dict[str, Any]  # method -> GapCurve.as_dict()
    fits: dict[str, Any]  # method -> {"gold": GoldFit, "gap": Trend}
    headline: dict[str, Any]  # method -> gap slope, peak or "no peak", d*
    timing: dict[str, float]  # seconds per stage
    # method -> {"in_distribution": {d, proxy, true, gap}, "held_out": {...}} (mirage probe);
    # {} when the evaluation prompts hold no held-out category
    splits: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)  # proxy-feature correlations (P16)


@dataclass
class ExperimentResult:
    """An experiment at one injected ε: one arm per seed, and the seeds' summary."""

    spec: dict[str, Any]
    epsilon_injected: float
    arms: list[ArmResult]
    summary: dict[str, Any]
    seconds: float
    code_version: str = ""
    variant: str = "baseline"
    lever: str = ""  # "" for the baseline, else one of LEVERS

    def as_dict(self) -> dict[str, Any]:
        return json_plain(asdict(self))


def json_plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): json_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- Noise injection (pure) -------------------------------------------------------------------


def _reply_text(side: Any) -> str:
    if isinstance(side, str):
        return side
    if isinstance(side, dict):
        return str(side.get("content", ""))
    return str(side[-1].get("content", "")) if side else ""


def row_utilities(world: Any, rows: Sequence[dict[str, Any]]) -> list[tuple[float, float] | None]:
    """(r*(chosen), r*(rejected)) of each snapshot row, or None when the world cannot read it."""
    out: list[tuple[float, float] | None] = []
    for row in rows:
        prompt = world.parse_prompt(list(row["prompt"]))
        if prompt is None:
            out.append(None)
            continue
        out.append((float(world.utility(prompt, _reply_text(row["chosen"]))),
                    float(world.utility(prompt, _reply_text(row["rejected"])))))
    return out


def rows_orient_by_truth(rows: Sequence[dict[str, Any]],
                         utilities: Sequence[tuple[float, float] | None]) -> list[dict[str, Any]]:
    """Rows with the higher-utility reply as chosen (ties in utility, unreadable rows: as is)."""
    out = []
    for row, u in zip(rows, utilities, strict=True):
        if u is not None and u[1] > u[0] + 1e-9:
            row = {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
        out.append(row)
    return out


def rows_flip(rows: Sequence[dict[str, Any]], *, rate: float, seed: int
              ) -> tuple[list[dict[str, Any]], list[int]]:
    """Swap chosen and rejected in exactly round(rate·n) rows drawn with ``seed``.

    Returns the new rows (the input is not changed) and the flipped indices, sorted. The margin,
    when a row has one, changes sign with the label; the weight (the aggregate's confidence) is
    kept: injected noise is label noise the aggregation did not see.
    """
    if not 0 <= rate < 0.5:
        raise ValueError("rate must be in [0, 0.5)")
    n_flip = round(rate * len(rows))
    flipped = sorted(random.Random(f"flip:{seed}").sample(range(len(rows)), n_flip))
    out = [dict(r) for r in rows]
    for i in flipped:
        r = out[i]
        r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
        if r.get("margin") is not None:
            r["margin"] = -float(r["margin"])
    return out, flipped


def rows_error(utilities: Sequence[tuple[float, float] | None]) -> dict[str, Any]:
    """Share of rows whose chosen reply has the lower true utility (rows with a difference)."""
    scored = [u for u in utilities if u is not None and abs(u[0] - u[1]) > 1e-9]
    wrong = sum(1 for c, r in scored if c < r)
    return {"error": wrong / len(scored) if scored else None, "n_scored": len(scored),
            "n_rows": len(utilities)}


def epsilon_compose(measured: float | None, injected: float) -> float | None:
    """Error rate after flipping a share ``injected`` of labels with error ``measured``."""
    if measured is None:
        return None
    return measured * (1 - injected) + (1 - measured) * injected


# --- π₀ and its pools (pure) ------------------------------------------------------------------


def reference_pools(world: Any, *, n_prompts: int, k: int, seed: int,
                    categories: Sequence[str] | None = None
                    ) -> tuple[list[Any], list[list[str]]]:
    """π₀'s samples: ``n_prompts`` fresh prompts (of ``categories``, default all the world's)
    and K i.i.d. replies each (module docstring 5)."""
    prompts = world.generate_prompts(n_prompts, seed, categories=categories)
    pools = []
    for i, prompt in enumerate(prompts):
        pool = []
        for j in range(k):
            rng = random.Random(f"pi0:{seed}:{i}:{j}")
            pool.append(rng.choice(world.candidate_responses(prompt, rng)))
        pools.append(pool)
    return prompts, pools


def pairwise_agreement(proxy: np.ndarray, true: np.ndarray) -> float | None:
    """Share of within-prompt sample pairs with different r* that r̂ orders the same way
    (a tie in r̂ counts one half): the reward model's clean accuracy on π₀'s own pairs."""
    hits = total = 0.0
    for p, t in zip(proxy, true, strict=True):
        dp = np.sign(p[:, None] - p[None, :])
        dt = np.sign(t[:, None] - t[None, :])
        mask = np.triu(dt != 0, 1)
        total += mask.sum()
        hits += ((dp == dt) & mask).sum() + 0.5 * ((dp == 0) & mask).sum()
    return float(hits / total) if total else None


# --- The service ------------------------------------------------------------------------------


@dataclass
class _Annotation:
    """One seed's campaign, judged by the simulated pool, and its measured and true noise."""

    campaign_id: int
    epsilon_measured: float | None
    epsilon_true_campaign: float | None
    timing: dict[str, float] = field(default_factory=dict)


@dataclass
class _Shared:
    """What every ε arm of one seed and one set of snapshot fields shares: the rows."""

    seed: int
    rows: list[dict[str, Any]]
    utilities: list[tuple[float, float] | None]
    epsilon_measured: float | None
    epsilon_true_campaign: float | None
    snapshot_id: int | None  # None: filtered judgments, re-aggregated, not stored (selection)
    campaign_id: int
    timing: dict[str, float] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)


@dataclass
class _EvalSet:
    """One seed's evaluation prompts and π₀'s pools, shared by every ε and variant (pairing)."""

    prompts: list[Any]
    pools: list[list[str]]
    true: np.ndarray  # (P, K) r*
    features: dict[str, np.ndarray]  # name -> (P, K)
    masks: dict[str, np.ndarray]  # name -> (P,) prompts the feature is defined on
    held_out: np.ndarray  # (P,) bool: the prompt's category is held out of training


def _campaign(spec: ExperimentSpec, seed: int, progress: Callable[[str], None]) -> _Annotation:
    """Campaign, simulated pool, quality; reused when a campaign of these annotation fields
    (``spec.key()``) and seed already exists."""
    from annotation.models import Campaign, CampaignQuality
    from annotation.services.quality import campaign_quality_recompute
    from evaluation.services import simulate_campaign, simulated_truth, world_campaign_create

    timing: dict[str, float] = {}
    started = time.monotonic()
    name = f"experiment-{spec.key()}-s{seed}"
    campaign = Campaign.objects.filter(name=name).first()
    if campaign is None:
        progress("annotate")
        campaign = world_campaign_create(
            world_name=spec.world, name=name, n_prompts=spec.n_prompts, seed=seed,
            overlap=spec.overlap, calibration_rate=spec.calibration_rate,
            pairs_per_prompt=spec.pairs_per_prompt, accuracy_threshold=0.0,
            title=f"Experiment {spec.key()} seed {seed}")
        # Re-shows re-ask comparisons already judged; an experiment wants each judged once.
        Campaign.objects.filter(pk=campaign.pk).update(reshow_rate=0.0)
        campaign.refresh_from_db()
        simulate_campaign(campaign=campaign, pool=spec.pool, seed=seed)
    timing["annotate"] = time.monotonic() - started
    started = time.monotonic()
    quality = CampaignQuality.objects.filter(campaign=campaign).first()
    if quality is None or quality.noise_epsilon is None:
        progress("quality")
        quality = campaign_quality_recompute(campaign=campaign)
    truth = simulated_truth(campaign=campaign)
    timing["quality"] = time.monotonic() - started
    return _Annotation(campaign_id=campaign.pk, epsilon_measured=quality.noise_epsilon,
                       epsilon_true_campaign=truth["totals"]["true_error"], timing=timing)


def _annotate(spec: ExperimentSpec, seed: int, progress: Callable[[str], None],
              cache: dict[Any, Any] | None = None) -> _Shared:
    """The seed's campaign (shared by specs with the same ``key()``) and its training rows
    before noise (shared by specs with the same ``snapshot_key()``), through ``cache``."""
    from annotation.models import Campaign
    from annotation.services.snapshots import snapshot_create, snapshot_rows
    from evaluation.worlds import get_world

    cache = {} if cache is None else cache
    rows_key = ("rows", spec.snapshot_key(), seed)
    if rows_key in cache:
        return cache[rows_key]
    ann_key = ("campaign", spec.key(), seed)
    if ann_key not in cache:
        cache[ann_key] = _campaign(spec, seed, progress)
    ann: _Annotation = cache[ann_key]
    campaign = Campaign.objects.get(pk=ann.campaign_id)
    timing = dict(ann.timing)
    started = time.monotonic()
    selection: dict[str, Any] = {"filtered": False}
    snapshot_id: int | None = None
    if spec.gold_threshold > 0 or spec.judgment_window != "all":
        rows, selection = judgments_selected_rows(spec, campaign)
    else:
        snapshot = snapshot_create(campaign=campaign, method=spec.aggregation)
        rows, snapshot_id = snapshot_rows(snapshot), snapshot.pk
    timing["snapshot"] = time.monotonic() - started
    world = get_world(spec.world)
    shared = _Shared(seed=seed, rows=rows, utilities=row_utilities(world, rows),
                     epsilon_measured=ann.epsilon_measured,
                     epsilon_true_campaign=ann.epsilon_true_campaign,
                     snapshot_id=snapshot_id, campaign_id=ann.campaign_id, timing=timing,
                     selection=selection)
    cache[rows_key] = shared
    return shared


def judgments_selected_rows(spec: ExperimentSpec, campaign: Any
                            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows aggregated from a selection of the campaign's judgments (A lever gold filtering,
    the drift probe's windows), and what was selected.

    ``annotation.services.snapshots`` has no judgment filter, so this is the documented row
    filter: the current regular judgments are read with each annotator's judgment number
    (1-based over all their judgments in the campaign in time order, calibration included:
    the drift clock of ``evaluation.simulation`` and the numbering of the quality dashboards),
    judgments of annotators whose gold accuracy (``annotator_gold_counts``) is below
    ``spec.gold_threshold`` are dropped, and with a window only numbers before (``early``) or
    from (``late``) the pool's drift onset are kept; the rest go through the same
    ``aggregate_pairwise_fit`` the snapshot service calls, with the same per-method inputs (gold
    anchors restricted to the kept judgments). The rows are shaped like a snapshot's but are not
    stored as one (a Snapshot is a campaign's full aggregate); their hash is in each arm.
    """
    from collections import defaultdict

    from annotation.aggregation import PairVote, aggregate_pairwise_fit
    from annotation.models import Comparison, Judgment
    from annotation.selectors.snapshots import (
        annotator_gold_counts,
        comparison_response_ids,
        comparisons_with_texts,
        snapshot_gold_votes,
    )
    from evaluation.simulation import parse_pool

    gold_counts = annotator_gold_counts(campaign=campaign)
    dropped = {a for a, (c, n) in gold_counts.items()
               if n and c / n < spec.gold_threshold} if spec.gold_threshold > 0 else set()
    onset = pool_drift_onset(parse_pool(spec.pool)) if spec.judgment_window != "all" else None
    numbers: dict[int, int] = defaultdict(int)
    votes: list[tuple[int, Any]] = []
    kept_calibration: set[tuple[int, int]] = set()
    n_regular = 0
    for jid, aid, cid, choice, superseded, kind in (
            Judgment.objects.filter(campaign=campaign)
            .order_by("annotator_id", "created_at", "id")
            .values_list("id", "annotator_id", "comparison_id", "choice", "superseded_by__id",
                         "comparison__kind").iterator(chunk_size=5000)):
        numbers[aid] += 1
        if superseded is not None:
            continue
        n_regular += kind == Comparison.Kind.REGULAR
        if aid in dropped or (onset is not None and (
                (spec.judgment_window == "early" and numbers[aid] >= onset)
                or (spec.judgment_window == "late" and numbers[aid] < onset))):
            continue
        if kind == Comparison.Kind.REGULAR:
            votes.append((jid, PairVote(cid, aid, choice)))
        else:
            kept_calibration.add((cid, aid))
    kept = [v for _, v in sorted(votes, key=lambda item: item[0])]
    method = spec.aggregation
    anchors, gold = snapshot_gold_votes(campaign=campaign) if method == "dawid_skene" \
        else ([], None)
    anchors = [v for v in anchors if (v.comparison, v.annotator) in kept_calibration]
    ids = sorted({v.comparison for v in kept})
    fit = aggregate_pairwise_fit(
        method, kept, anchor_votes=anchors, gold=gold,
        items=comparison_response_ids(comparison_ids=ids) if method == "bradley_terry" else None,
        gold_counts=gold_counts if method == "gold_weighted" else None)
    decided = {d.comparison: d for d in fit.decisions if d.winner is not None}
    rows = []
    for comparison in comparisons_with_texts(comparison_ids=decided).iterator(chunk_size=2000):
        decision = decided[comparison.pk]
        a, b = comparison.response_a.text, comparison.response_b.text
        chosen, rejected = (a, b) if decision.winner == "A" else (b, a)
        rows.append({
            "prompt": comparison.prompt.turns,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "margin": round(decision.margin, 6), "weight": round(decision.weight, 6),
            "comparison_id": comparison.pk, "agreement": round(decision.agreement, 6),
            "n_judgments": decision.n_judgments, "category": comparison.prompt.category,
        })
    if not rows:
        raise ValueError("the selected judgments decide no comparison: nothing to train on")
    from django.contrib.auth import get_user_model

    names = sorted(get_user_model().objects.filter(pk__in=dropped)
                   .values_list("username", flat=True))
    return rows, {"filtered": True, "gold_threshold": spec.gold_threshold,
                  "annotators_dropped": len(dropped), "dropped": names,
                  "window": spec.judgment_window,
                  "onset_judgment": onset, "regular_judgments": n_regular,
                  "regular_judgments_kept": len(kept), "rows": len(rows)}


def _eval_set(spec: ExperimentSpec, seed: int) -> _EvalSet:
    """Evaluation prompts (a seed of their own), π₀'s pools, r* and the world's features."""
    from evaluation import probes
    from evaluation.worlds import get_world

    world = get_world(spec.world)
    categories = None if spec.eval_categories == "all" else [
        c for c in world.categories if c not in world.held_out_categories]
    prompts, pools = reference_pools(world, n_prompts=spec.n_eval_prompts,
                                     k=spec.samples_per_prompt, seed=10_000 + seed,
                                     categories=categories)
    true = np.array([[world.utility(p, t) for t in pool]
                     for p, pool in zip(prompts, pools, strict=True)])
    features, masks = probes.feature_tables(world, prompts, pools)
    held_out = np.array([p.category in world.held_out_categories for p in prompts])
    return _EvalSet(prompts=prompts, pools=pools, true=true, features=features, masks=masks,
                    held_out=held_out)


def reply_with_checks(world: Any, prompt: Any, text: str) -> str:
    """M lever: the reply followed by the world's per-criterion checks, as an oracle
    per-criterion annotator would give them (is the final answer correct; on a wrong-belief
    prompt, does the reply endorse the user's belief). The reward model reads this text in its
    training rows and when it scores π₀'s samples."""
    f = world.features(prompt, text)
    checks = [f"answer {'correct' if f.get('correct') else 'not correct'}"]
    if prompt.metadata.get("user_belief") is not None:
        checks.append(f"agrees with the user's wrong belief: "
                      f"{'yes' if f.get('agrees_with_user') else 'no'}")
    return f"{text}\n[checks: {'; '.join(checks)}]"


def rows_with_checks(world: Any, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose chosen and rejected replies carry ``reply_with_checks`` (unreadable prompts
    as they are)."""
    out = []
    for row in rows:
        prompt = world.parse_prompt(list(row["prompt"]))
        if prompt is None:
            out.append(row)
            continue
        out.append({**row, **{side: [{"role": "assistant", "content": reply_with_checks(
            world, prompt, _reply_text(row[side]))}] for side in ("chosen", "rejected")}})
    return out


def _tiny_models(spec: ExperimentSpec) -> dict[str, Any]:
    """The world's tiny untrained models (tokenizer, policy, reward; built once, registered by
    name)."""
    from evaluation.corpus import world_corpus
    from training.services.models import tiny_models_build

    return tiny_models_build(corpus=world_corpus(spec.world, n_prompts=300, seed=0),
                             name=f"experiment-{spec.world}-h{spec.tiny_hidden}"
                                  f"-l{spec.tiny_layers}",
                             seed=0, hidden=spec.tiny_hidden, layers=spec.tiny_layers)


def _base_reward(spec: ExperimentSpec) -> Any:
    """The tiny untrained reward model of the world."""
    from training.services.runs import model_ref

    return model_ref(_tiny_models(spec)["reward"])


def _train_and_score(spec: ExperimentSpec, seed: int, rows: list[dict[str, Any]],
                     prompts: list[Any], pools: list[list[str]], out_dir: Path,
                     cache: dict[Any, Any] | None = None, rows_digest: str = ""
                     ) -> tuple[np.ndarray, dict[str, Any]]:
    """Train the reward model(s) on ``rows`` and score π₀'s pools: (P, K) r̂, and a summary.

    ``cache`` (one sweep's) keeps each member's scores by what determines them (the rows'
    digest, the member's seed, the model and training fields, the reward input; the pools are
    the seed's): variants that differ only in how members combine (ensemble rule, k, size)
    reuse the same trained members, so their comparison is paired down to the member.
    """
    from training.methods import method_config
    from training.methods import reward_model as rm
    from training.methods.base import NullReporter, RunContext
    from training.methods.common import ensemble_combine
    from training.modeling import reward_load, reward_score

    base = _base_reward(spec)
    config = method_config("reward_model", dict(spec.rm_config))
    turns = [p.turns for p in prompts for _ in range(spec.samples_per_prompt)]
    texts = [t for pool in pools for t in pool]
    members, per_member = [], []
    for i in range(spec.ensemble_size):
        member_seed = seed * 1000 + i
        key = ("member", rows_digest, member_seed, spec.world, spec.tiny_hidden, spec.tiny_layers,
               json.dumps(spec.rm_config, sort_keys=True), spec.reward_input)
        if cache is not None and rows_digest and key in cache:
            scores, member = cache[key]
            per_member.append(scores)
            members.append(member)
            continue
        ctx = RunContext(config=config, output_dir=out_dir / f"rm-{i}", reporter=NullReporter(),
                         seed=member_seed, rows=rows, base_model=base)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        result = rm.run(ctx)
        path = result.models[0].path
        model, tokenizer = reward_load(replace(base, path=str(path), tokenizer_path=""))
        per_member.append(reward_score(model, tokenizer, turns, texts, batch_size=128))
        members.append({"seed": member_seed, "path": str(path),
                        **{k: result.metrics.get(k) for k in
                           ("eval_accuracy", "train_accuracy", "train_loss", "steps",
                            "train_pairs", "eval_pairs")}})
        if cache is not None and rows_digest:
            cache[key] = (per_member[-1], members[-1])
    rule = "mean_minus_k_std" if spec.ensemble_rule == "mean" else spec.ensemble_rule
    k = spec.ensemble_k if spec.ensemble_rule == "mean_minus_k_std" else 0.0
    if spec.ensemble_standardize and len(per_member) > 1:
        per_member = [((np.asarray(m, dtype=float) - np.mean(m)) / (np.std(m) or 1.0)).tolist()
                      for m in per_member]
    combined = ensemble_combine(per_member, k=k, rule=rule)
    proxy = np.asarray(combined, dtype=float).reshape(len(prompts), spec.samples_per_prompt)
    accs = [m["eval_accuracy"] for m in members if m["eval_accuracy"] is not None]
    return proxy, {"members": members,
                   "eval_accuracy": float(np.mean(accs)) if accs else None}


def _tilting(*, proxy: np.ndarray, true: np.ndarray, pressure: np.ndarray, n_boot: int,
             level: float, seed: int) -> Any:
    from evaluation import gap

    return gap.tilting_curve(proxy=proxy, true=true, lambdas=pressure, n_boot=n_boot,
                             level=level, seed=seed)


def _best_of_n(*, proxy: np.ndarray, true: np.ndarray, pressure: np.ndarray, n_boot: int,
               level: float, seed: int) -> Any:
    from evaluation import gap

    return gap.best_of_n_curve(proxy=proxy, true=true, ns=pressure, n_boot=n_boot, level=level,
                               seed=seed)


def _tilting_grid(spec: ExperimentSpec, proxy: np.ndarray) -> np.ndarray:
    """λ in units of 1/r̂: the spec's grid over r̂'s SD under π₀ (the whole pool's, so every
    split of the prompts is tilted with the same λ)."""
    from evaluation import gap

    sd = gap.reference_scale(reference=proxy).std
    return gap.lambda_grid(lo=spec.lambda_min, hi=spec.lambda_max, num=spec.n_lambdas) / sd


def _best_of_n_grid(spec: ExperimentSpec, proxy: np.ndarray) -> np.ndarray:
    from evaluation import gap

    return gap.n_grid(n_max=spec.n_max, num=spec.n_ns)


# The dispatch point of pressure methods: method -> (its pressure grid from the spec and π₀'s
# r̂; its curve on (P, K) proxy and true at those pressures). A trained-policy method (DPO's β
# sweep, evaluation/policy_pressure.py) adds one entry to each and to PRESSURE_METHODS.
PRESSURE_GRIDS: dict[str, Callable[[ExperimentSpec, np.ndarray], np.ndarray]] = {
    "tilting": _tilting_grid, "best_of_n": _best_of_n_grid}
PRESSURE_CURVES: dict[str, Callable[..., Any]] = {"tilting": _tilting, "best_of_n": _best_of_n}


def _curves(spec: ExperimentSpec, seed: int, proxy: np.ndarray, true: np.ndarray,
            ev: _EvalSet | None = None
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any],
                       dict[str, Any]]:
    """Per pressure method: the curve (with the Murphy features along it), its fits, the
    headline, the mirage splits, and the gap trend with its replicates (for MAPS changes)."""
    from evaluation import fits, probes

    curves, fitted, headline, splits, trends = {}, {}, {}, {}, {}
    d_limit = math.sqrt(spec.kl_limit) if spec.kl_limit > 0 else None
    boot = {"n_boot": spec.n_boot, "level": spec.level, "seed": seed}
    trend_d = spec.trend_d_max or None
    for method in (m for m in spec.pressure if m not in POLICY_METHODS):
        grid = PRESSURE_GRIDS[method](spec, proxy)
        curve = PRESSURE_CURVES[method](proxy=proxy, true=true, pressure=grid, **boot)
        if d_limit is not None:
            curve = probes.curve_truncate(curve, d_max=d_limit)
            if int((curve.d.value > 0).sum()) < 3:
                raise ValueError(f"{method}: fewer than 3 points with 0 < d <= "
                                 f"sqrt(kl_limit) = {d_limit:.3g}; raise kl_limit or refine "
                                 "the pressure grid")
        gold = fits.gold_fit_curve(curve=curve, form="bon")
        trend = fits.gap_trend(curve=curve, d_max=trend_d)
        trends[method] = trend
        data = curve.as_dict()
        headline[method] = _headline(curve, gold, trend)
        if ev is not None and method in probes.FEATURE_METHODS:
            bands = probes.feature_bands(method=method, scores=proxy, features=ev.features,
                                         masks=ev.masks, pressure=curve.pressure, **boot)
            data["features"] = {k: v for k, v in bands.items() if v is not None}
            headline[method]["feature_slopes"] = {
                k: probes.slope_per_d(d=curve.d.value, value=v["value"])
                for k, v in data["features"].items()}
        if ev is not None and ev.held_out.any() and (~ev.held_out).any():
            parts, part_heads = {}, {}
            for part, mask in (("in_distribution", ~ev.held_out), ("held_out", ev.held_out)):
                p_sub, t_sub = probes.subset(mask, proxy, true)
                sub = PRESSURE_CURVES[method](proxy=p_sub, true=t_sub, pressure=curve.pressure,
                                              **boot)
                sub_trend = fits.gap_trend(curve=sub, d_max=trend_d)
                parts[part] = probes.split_dict(sub)
                part_heads[part] = {"gap_slope": sub_trend.slope.as_dict(),
                                    "gap_intercept": sub_trend.intercept.as_dict(),
                                    "gap_at_max": float(sub.gap.value[-1]),
                                    "gold_at_max": float(sub.true.value[-1]),
                                    "n_prompts": sub.n_prompts}
            splits[method] = parts
            headline[method]["splits"] = part_heads
        curves[method] = data
        fitted[method] = {"gold": gold.as_dict(), "gap": trend.as_dict(),
                          **_gold_bands(curve, gold)}
    return curves, fitted, headline, splits, trends


def _headline(curve: Any, gold: Any, trend: Any) -> dict[str, Any]:
    """A method's headline: the gap's slope and intercept in d, the peak or "no peak", d*, and
    the curve's ends."""
    peaked = gold.peak_reported and gold.peak
    return {
        "gap_slope": trend.slope.as_dict(),
        "gap_intercept": trend.intercept.as_dict(),
        "peak": gold.peak.as_dict() if peaked else "no peak",
        "d_star": gold.peak.value if peaked else None,
        "peak_reason": gold.reason,
        "d_max": float(curve.d.value.max()),
        "proxy_at_max": float(curve.proxy.value[-1]),
        "gold_at_max": float(curve.true.value[-1]),
        "gold_max": float(curve.true.value.max()),
    }


LOW_D_SHARE = 0.6  # the low-pressure fit uses d ≤ this share of the largest d reached
BAND_POINTS = 40


def _gold_bands(curve: Any, gold: Any) -> dict[str, Any]:
    """The gold fit's bootstrap band over 0..d_max, and a fit on the low-d points only
    (d ≤ ``LOW_D_SHARE``·d_max) with its band over the whole range: where the curve went past
    the low-d data, the band is the fit's extrapolation (PREDICTIONS P3, issue 9 part 2).
    Empty where a fit is impossible (fewer than 3 points in range)."""
    from evaluation import fits

    out: dict[str, Any] = {}
    d_max = float(np.nanmax(curve.d.value))
    if not math.isfinite(d_max) or d_max <= 0:
        return out
    grid = np.linspace(0.0, d_max, BAND_POINTS)
    out["gold_band"] = fits.gold_band(fit=gold, d=grid).as_dict()
    split = LOW_D_SHARE * d_max
    if int(((curve.d.value > 0) & (curve.d.value <= split)).sum()) >= 3:
        try:
            low = fits.gold_fit_curve(curve=curve, form=gold.form, d_max=split)
        except (ValueError, np.linalg.LinAlgError):
            return out
        out["gold_low"] = low.as_dict()
        out["gold_low_band"] = fits.gold_band(fit=low, d=grid).as_dict()
    return out


def _probes(proxy: np.ndarray, ev: _EvalSet) -> dict[str, Any]:
    """P16's correlations of r̂ with each feature, over every sample and within prompts (what
    pressure, choosing among one prompt's samples, acts on); on the prompts it is defined on."""
    from evaluation import probes

    out: dict[str, Any] = {}
    for name, values in ev.features.items():
        mask = ev.masks[name].astype(bool)
        if not mask.any():
            continue
        p, v = probes.subset(mask, proxy, values)
        out[f"corr_proxy_{name}"] = probes.correlation(p, v)
        out[f"corr_within_prompt_proxy_{name}"] = probes.within_prompt_correlation(p, v)
    return out


def _arm(spec: ExperimentSpec, shared: _Shared, ev: _EvalSet, epsilon: float, out_root: Path,
         progress: Callable[[str], None], cache: dict[Any, Any] | None = None
         ) -> tuple[ArmResult, dict[str, Any]]:
    """One (ε, seed) arm; also returns its gap trends with replicates (for MAPS changes)."""
    from evaluation.worlds import get_world

    world = get_world(spec.world)
    seed = shared.seed
    timing = dict(shared.timing)
    started = time.monotonic()
    rows, utilities = shared.rows, shared.utilities
    n_before = len(rows)
    if spec.train_categories:
        keep = [i for i, r in enumerate(rows) if r.get("category") in spec.train_categories]
        if not keep:
            raise ValueError(f"no snapshot row is in train_categories {spec.train_categories}")
        rows, utilities = [rows[i] for i in keep], [utilities[i] for i in keep]
    if spec.noise_base == "truth":
        rows = rows_orient_by_truth(rows, utilities)
    rows, flipped = rows_flip(rows, rate=epsilon, seed=seed)
    arm_utils = row_utilities(world, rows)
    err = rows_error(arm_utils)
    digest = hashlib.sha256("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
                            .encode()).hexdigest()
    measured = 0.0 if spec.noise_base == "truth" else shared.epsilon_measured
    epsilon_info = {
        "injected": epsilon,
        "base": spec.noise_base,
        "measured_campaign": shared.epsilon_measured,
        "measured": epsilon_compose(measured, epsilon),
        "true": err["error"],
        "true_campaign": shared.epsilon_true_campaign,
        "true_rows_scored": err["n_scored"],
    }
    prompts, pools, true = ev.prompts, ev.pools, ev.true
    timing["rows_and_pools"] = time.monotonic() - started
    started = time.monotonic()
    if spec.reward == "utility_noise":
        progress("proxy")
        rng = np.random.default_rng(seed)
        proxy = true + spec.proxy_noise_sd * rng.standard_normal(true.shape)
        if spec.proxy_bias:
            from evaluation import probes

            tables, _ = probes.feature_tables(world, prompts, pools, names=list(spec.proxy_bias))
            proxy = proxy + sum(float(w) * tables[k] for k, w in spec.proxy_bias.items())
        rm_info: dict[str, Any] = {"kind": "utility_noise", "noise_sd": spec.proxy_noise_sd,
                                   "bias": dict(spec.proxy_bias), "eval_accuracy": None,
                                   "members": []}
    else:
        progress("reward_model")
        out_dir = out_root / f"eps{epsilon:.4f}-s{seed}"
        if spec.reward_input == "reply+checks":
            train_rows = rows_with_checks(world, rows)
            pools = [[reply_with_checks(world, p, t) for t in pool]
                     for p, pool in zip(prompts, pools, strict=True)]
        else:
            train_rows = rows
        proxy, rm_info = _train_and_score(spec, seed, train_rows, prompts, pools, out_dir,
                                          cache=cache, rows_digest=digest)
        rm_info["kind"] = "trained"
    with np.errstate(invalid="ignore"):
        corr = float(np.corrcoef(proxy.ravel(), true.ravel())[0, 1])
    rm_info |= {"clean_accuracy": pairwise_agreement(proxy, true), "corr_proxy_true": corr,
                "ensemble_size": spec.ensemble_size, "ensemble_rule": spec.ensemble_rule,
                "reward_input": spec.reward_input}
    timing["reward_model"] = time.monotonic() - started
    started = time.monotonic()
    progress("gap")
    curves, fitted, headline, splits, trends = _curves(spec, seed, proxy, true, ev)
    timing["gap"] = time.monotonic() - started
    for method in (m for m in spec.pressure if m in POLICY_METHODS):
        started = time.monotonic()
        progress(method)
        out = _policy_pressure(method, spec, seed, rows, digest, rm_info, out_root, cache,
                               progress)
        curves[method], fitted[method], headline[method], trends[method] = out
        timing[method] = time.monotonic() - started
    return ArmResult(
        seed=seed, epsilon=epsilon_info,
        rows={"n": len(rows), "n_snapshot": n_before, "flipped": len(flipped),
              "sha256": digest, "snapshot_id": shared.snapshot_id,
              "campaign_id": shared.campaign_id, "selection": shared.selection,
              "train_categories": list(spec.train_categories)},
        reward_model=rm_info, curves=curves, fits=fitted, headline=headline,
        timing={k: round(v, 3) for k, v in timing.items()}, splits=splits,
        probes=_probes(proxy, ev)), trends


def _policy_pressure(method: str, spec: ExperimentSpec, seed: int, rows: list[dict[str, Any]],
                     rows_digest: str, rm_info: dict[str, Any], out_root: Path,
                     cache: dict[Any, Any] | None, progress: Callable[[str], None]
                     ) -> tuple[dict, dict, dict, Any]:
    """A trained-policy pressure method on the arm's rows (``evaluation.policy_pressure``).

    π₀ is the world's tiny SFT policy, trained once per seed and sweep (``cache``). Every policy
    is sampled on fresh prompts, scored by the arm's first reward model (r̂) and the world's
    utility (r*), KL by Monte Carlo against π₀. 'dpo': one DPO policy per β of
    ``spec.dpo_betas``; 'rlhf': RLHF (RLOO) at each KL coefficient of ``spec.rlhf_kl_coefs``,
    optimizing that reward model; 'rest': each round of one ReST run (``spec.rest_rounds``)
    growing and filtering with it. The curve is standardized under this π₀, not under the
    reply generator the pool methods tilt: the two π₀ differ, so compare methods on their
    gap-vs-d shape, not point by point (PREDICTIONS P18). Gold is fitted with the RL form
    d(α − β log d) (Gao et al.). With the M lever (``reward_input`` "reply+checks") the scores
    read the checks, but RLHF and ReST optimize the model on bare replies.
    """
    from dataclasses import replace as dc_replace

    from evaluation import fits
    from evaluation.policy_pressure import dpo_beta_curve, sft_reference
    from evaluation.worlds import get_world
    from training.modeling import reward_load, reward_score
    from training.services.runs import model_ref

    world = get_world(spec.world)
    rm_ref = dc_replace(_base_reward(spec), path=rm_info["members"][0]["path"],
                        tokenizer_path="")
    model, tokenizer = reward_load(rm_ref)

    def scorer(turns: list[Any], texts: list[str]) -> list[float]:
        if spec.reward_input == "reply+checks":  # the M lever's model reads the checks too
            texts = [reply_with_checks(world, world.parse_prompt(list(t)), x)
                     if world.parse_prompt(list(t)) is not None else x
                     for t, x in zip(turns, texts, strict=True)]
        return reward_score(model, tokenizer, turns, texts, batch_size=128)

    key = ("dpo-pi0", seed)
    reference = cache.get(key) if cache is not None else None
    if reference is None:
        reference, _ = sft_reference(world=world, base=model_ref(_tiny_models(spec)["policy"]),
                                     out_dir=out_root / f"dpo-pi0-s{seed}", seed=seed,
                                     n_prompts=spec.dpo_sft_prompts,
                                     config=dict(spec.dpo_sft_config))
        if cache is not None:
            cache[key] = reference
    sweep = dpo_beta_curve(
        world=world, rows=rows, base=reference, reward_scorer=scorer,
        out_dir=out_root / f"{method}-{rows_digest[:12]}-s{seed}", method=method,
        reward_model=rm_ref,
        betas={"dpo": spec.dpo_betas, "rlhf": spec.rlhf_kl_coefs,
               "rest": spec.rest_rounds}[method], seed=seed, reference=reference,
        dpo_config=dict({"dpo": spec.dpo_config, "rlhf": spec.rlhf_config,
                         "rest": spec.rest_config}[method]),
        n_eval_prompts=spec.dpo_eval_prompts, samples=spec.dpo_samples, n_boot=spec.n_boot,
        level=spec.level, progress=lambda stage: progress(f"{method}: {stage}"))
    curve = sweep.curve
    gold = fits.gold_fit_curve(curve=curve, form="rl")
    trend = fits.gap_trend(curve=curve, d_max=spec.trend_d_max or None)
    data = {**curve.as_dict(), "policies": {k: v for k, v in sweep.as_dict().items()
                                            if k != "curve"}}
    return (data, {"gold": gold.as_dict(), "gap": trend.as_dict(), **_gold_bands(curve, gold)},
            _headline(curve, gold, trend), trend)


def _summary(spec: ExperimentSpec, arms: list[ArmResult]) -> dict[str, Any]:
    """Per pressure method: the median gap slope over seeds (5-95% over seeds with ≥ 2), peaks."""
    out: dict[str, Any] = {}
    for method in spec.pressure:
        slopes = np.array([a.headline[method]["gap_slope"]["value"] for a in arms])
        peaks = [a.headline[method]["d_star"] for a in arms]
        item: dict[str, Any] = {"gap_slope_median": float(np.median(slopes)),
                                "n_seeds": len(arms),
                                "peaks_reported": sum(p is not None for p in peaks)}
        if len(arms) >= 2:
            lo, hi = np.quantile(slopes, [0.05, 0.95])
            item |= {"gap_slope_lo": float(lo), "gap_slope_hi": float(hi)}
        else:
            item |= {"gap_slope_lo": arms[0].headline[method]["gap_slope"]["lo"],
                     "gap_slope_hi": arms[0].headline[method]["gap_slope"]["hi"]}
        out[method] = item
    for key in ("measured", "true", "true_campaign", "measured_campaign"):
        vals = [a.epsilon[key] for a in arms if a.epsilon[key] is not None]
        out[f"epsilon_{key}"] = float(np.median(vals)) if vals else None
    accs = [a.reward_model.get("clean_accuracy") for a in arms]
    accs = [x for x in accs if x is not None]
    out["rm_clean_accuracy"] = float(np.median(accs)) if accs else None
    return out


def _seed_mean_trend(trends: Sequence[Any]) -> Any:
    """The mean over seeds of gap trends as one Trend: value the mean, replicate b the mean of
    the seeds' replicates b (seeds are independent, so it is a bootstrap of the mean)."""
    from evaluation import fits

    if len(trends) == 1:
        return trends[0]
    boot = np.mean([t.boot for t in trends], axis=0)
    lo, hi = np.quantile(boot, [(1 - trends[0].level) / 2, (1 + trends[0].level) / 2], axis=0)

    def est(i: int, name: str) -> Any:
        return fits.Estimate(float(np.mean([getattr(t, name).value for t in trends])),
                             float(lo[i]), float(hi[i]))

    return fits.Trend(slope=est(0, "slope"), intercept=est(1, "intercept"),
                      interval_method="bootstrap", level=trends[0].level,
                      n_points=trends[0].n_points, boot=boot)


def maps_changes(*, arm_trends: Sequence[dict[str, Any]], baseline_trends: Sequence[dict[str, Any]]
                 ) -> dict[str, Any]:
    """Per method both ran: the variant's change in gap slope and intercept against the
    baseline at the same ε (``fits.trend_change`` on paired replicates: same prompts, same
    resamples), the mean over seeds, and each seed's change."""
    from evaluation import fits

    out: dict[str, Any] = {}
    methods = [m for m in arm_trends[0] if m in baseline_trends[0]]
    for method in methods:
        arm = [t[method] for t in arm_trends]
        base = [t[method] for t in baseline_trends]
        change = fits.trend_change(arm=_seed_mean_trend(arm), baseline=_seed_mean_trend(base))
        per_seed = [fits.trend_change(arm=a, baseline=b) for a, b in zip(arm, base, strict=True)]
        out[method] = {
            "slope_change": change.slope.as_dict(),
            "intercept_change": change.intercept.as_dict(),
            "interval_method": change.interval_method,
            "n_seeds": len(arm),
            "per_seed": [{"slope": c.slope.value, "intercept": c.intercept.value}
                         for c in per_seed],
        }
    return out


def experiment_noise_sweep(*, spec: ExperimentSpec,
                           epsilons: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
                           progress: Progress | None = None) -> list[ExperimentResult]:
    """Run one arm per injected ε for the baseline and then for each MAPS variant.

    Per seed the annotation is done once per set of annotation fields (and reused if a
    campaign of those fields and this seed exists) and the rows once per set of snapshot fields;
    each ε flips its own seeded rows, trains its own reward model(s) and measures its own
    curves. π₀'s evaluation pools and the bootstrap resamples are the same for every ε and
    every variant of a seed, so arms differ only by their noise or their lever (paired,
    ``fits.trend_change`` applies): each variant's ``summary["maps"]`` gives its change in gap
    slope and intercept against the baseline at the same ε. Returns one
    :class:`ExperimentResult` per (variant, ε): the baseline's first, then each variant's, ε in
    the order given. Raises ValueError for ε outside [0, 0.5) and
    ``annotation.errors.ApplicationError`` from the annotation services.
    """
    from django.conf import settings

    from training.services.runs import code_version

    if not epsilons or any(not 0 <= e < 0.5 for e in epsilons):
        raise ValueError("every epsilon must be in [0, 0.5)")
    variants = [Variant(name="baseline", lever="", spec=replace(spec, variants=()),
                        overrides={}), *variant_specs(spec)]
    n_steps = len(spec.seeds) * len(variants) * (1 + len(epsilons))
    done = 0

    def tell(stage: str) -> None:
        if progress is not None:
            progress(stage, done / n_steps)

    root = Path(settings.GAPLAB_ARTIFACT_ROOT) / "experiments"
    cells = [(v, float(e)) for v in range(len(variants)) for e in epsilons]
    arms: dict[tuple[int, float], list[ArmResult]] = {c: [] for c in cells}
    trends: dict[tuple[int, float], list[dict[str, Any]]] = {c: [] for c in cells}
    seconds: dict[tuple[int, float], float] = dict.fromkeys(cells, 0.0)
    cache: dict[Any, Any] = {}
    started = time.monotonic()
    for seed in spec.seeds:
        ev = _eval_set(spec, seed)
        for vi, variant in enumerate(variants):
            shared = _annotate(variant.spec, seed, tell, cache)
            done += 1
            for eps in epsilons:
                t0 = time.monotonic()
                arm, arm_trends = _arm(variant.spec, shared, ev, float(eps),
                                       root / variant.spec.full_key(), tell, cache)
                arms[(vi, float(eps))].append(arm)
                trends[(vi, float(eps))].append(arm_trends)
                seconds[(vi, float(eps))] += time.monotonic() - t0
                done += 1
                tell(f"{variant.name} eps={eps:g} seed={seed}")
    shared_s = (time.monotonic() - started - sum(seconds.values())) / len(cells)
    version = code_version()
    out = []
    for vi, eps in cells:
        variant = variants[vi]
        summary = _summary(variant.spec, arms[(vi, eps)])
        if vi > 0:
            summary["maps"] = maps_changes(arm_trends=trends[(vi, eps)],
                                           baseline_trends=trends[(0, eps)])
            summary["overrides"] = variant.overrides
        out.append(ExperimentResult(
            spec=json_plain(asdict(replace(variant.spec, flip_rate=eps))), epsilon_injected=eps,
            arms=arms[(vi, eps)], summary=summary, seconds=round(seconds[(vi, eps)] + shared_s, 3),
            code_version=version, variant=variant.name, lever=variant.lever))
    return out


def experiment_run(*, spec: ExperimentSpec, progress: Progress | None = None) -> ExperimentResult:
    """Run the experiment at ``spec.flip_rate``, one arm per seed (module docstring); the
    baseline's result (``experiment_noise_sweep`` gives the variants' too)."""
    return experiment_noise_sweep(spec=spec, epsilons=(spec.flip_rate,), progress=progress)[0]


def result_headline(result: ExperimentResult) -> dict[str, Any]:
    """The JSON line of ``manage.py experiment`` for one (variant, ε): variant and lever, noise
    coordinates, and per pressure method the gap's slope with its interval, peak or "no peak",
    d*, and for a variant its change in slope and intercept against the baseline."""
    s = result.summary
    line: dict[str, Any] = {
        "variant": result.variant, "lever": result.lever,
        "epsilon_injected": result.epsilon_injected,
        "epsilon_measured": s["epsilon_measured"], "epsilon_true": s["epsilon_true"],
        "rm_clean_accuracy": s["rm_clean_accuracy"],
    }
    for method in result.spec["pressure"]:
        first = result.arms[0].headline[method]
        peaks = [a.headline[method]["d_star"] for a in result.arms]
        line[method] = {
            "gap_slope": {"value": s[method]["gap_slope_median"], "lo": s[method]["gap_slope_lo"],
                          "hi": s[method]["gap_slope_hi"]},
            "peak": first["peak"] if len(result.arms) == 1 else
            (f"{s[method]['peaks_reported']}/{len(result.arms)} seeds"
             if s[method]["peaks_reported"] else "no peak"),
            "d_star": (float(np.median([p for p in peaks if p is not None]))
                       if any(p is not None for p in peaks) else None),
        }
        change = s.get("maps", {}).get(method)
        if change is not None:
            line[method] |= {"slope_change": change["slope_change"],
                             "intercept_change": change["intercept_change"]}
    return json_plain(line)
