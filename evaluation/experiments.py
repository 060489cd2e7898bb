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

PRESSURE_METHODS = ("tilting", "best_of_n")
NOISE_BASES = ("snapshot", "truth")
REWARDS = ("trained", "utility_noise")
ENSEMBLE_RULES = ("mean", "mean_minus_k_std", "min")
AGGREGATIONS = ("majority", "gold_weighted", "dawid_skene", "dawid_skene_plain", "bradley_terry")

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
    ensemble_size: int = opt(1, "Reward models trained on the same rows with different seeds "
                                "(1 = a single model).", min=1, max=10)
    ensemble_rule: str = opt("mean", "How members' scores combine: mean, mean_minus_k_std or "
                                     "min (Coste et al. 2023).", choices=ENSEMBLE_RULES)
    ensemble_k: float = opt(1.0, "k of mean_minus_k_std, in member-score SDs.",
                            min=0.0, max=10.0)
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

    def __post_init__(self) -> None:
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

        get_world(self.world)
        parse_pool(self.pool)

    def key(self) -> str:
        """A short hash of everything but the noise and seeds: arms that share it share data."""
        shared = {k: v for k, v in asdict(self).items() if k not in ("flip_rate", "seeds")}
        return hashlib.sha256(json.dumps(shared, sort_keys=True, default=list).encode()
                              ).hexdigest()[:10]


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


@dataclass
class ExperimentResult:
    """An experiment at one injected ε: one arm per seed, and the seeds' summary."""

    spec: dict[str, Any]
    epsilon_injected: float
    arms: list[ArmResult]
    summary: dict[str, Any]
    seconds: float
    code_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
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


def reference_pools(world: Any, *, n_prompts: int, k: int, seed: int
                    ) -> tuple[list[Any], list[list[str]]]:
    """π₀'s samples: ``n_prompts`` fresh prompts and K i.i.d. replies each (module docstring 5)."""
    prompts = world.generate_prompts(n_prompts, seed)
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
class _Shared:
    """What every ε arm of one seed shares: the campaign's annotation and its snapshot."""

    seed: int
    rows: list[dict[str, Any]]
    utilities: list[tuple[float, float] | None]
    epsilon_measured: float | None
    epsilon_true_campaign: float | None
    snapshot_id: int
    campaign_id: int
    timing: dict[str, float] = field(default_factory=dict)


def _annotate(spec: ExperimentSpec, seed: int, progress: Callable[[str], None]) -> _Shared:
    """Campaign, simulated pool, quality, snapshot; reused when this spec and seed already ran."""
    from annotation.models import Campaign, CampaignQuality
    from annotation.services.quality import campaign_quality_recompute
    from annotation.services.snapshots import snapshot_create, snapshot_rows
    from evaluation.services import simulate_campaign, simulated_truth, world_campaign_create
    from evaluation.worlds import get_world

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
    started = time.monotonic()
    snapshot = snapshot_create(campaign=campaign, method=spec.aggregation)
    rows = snapshot_rows(snapshot)
    timing["snapshot"] = time.monotonic() - started
    world = get_world(spec.world)
    return _Shared(seed=seed, rows=rows, utilities=row_utilities(world, rows),
                   epsilon_measured=quality.noise_epsilon,
                   epsilon_true_campaign=truth["totals"]["true_error"],
                   snapshot_id=snapshot.pk, campaign_id=campaign.pk, timing=timing)


def _base_reward(spec: ExperimentSpec) -> Any:
    """The tiny untrained reward model of the world (built once, registered by name)."""
    from evaluation.corpus import world_corpus
    from training.services.models import tiny_models_build
    from training.services.runs import model_ref

    built = tiny_models_build(corpus=world_corpus(spec.world, n_prompts=300, seed=0),
                              name=f"experiment-{spec.world}-h{spec.tiny_hidden}"
                                   f"-l{spec.tiny_layers}",
                              seed=0, hidden=spec.tiny_hidden, layers=spec.tiny_layers)
    return model_ref(built["reward"])


def _train_and_score(spec: ExperimentSpec, seed: int, rows: list[dict[str, Any]],
                     prompts: list[Any], pools: list[list[str]], out_dir: Path
                     ) -> tuple[np.ndarray, dict[str, Any]]:
    """Train the reward model(s) on ``rows`` and score π₀'s pools: (P, K) r̂, and a summary."""
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
    rule = "mean_minus_k_std" if spec.ensemble_rule == "mean" else spec.ensemble_rule
    k = spec.ensemble_k if spec.ensemble_rule == "mean_minus_k_std" else 0.0
    combined = ensemble_combine(per_member, k=k, rule=rule)
    proxy = np.asarray(combined, dtype=float).reshape(len(prompts), spec.samples_per_prompt)
    accs = [m["eval_accuracy"] for m in members if m["eval_accuracy"] is not None]
    return proxy, {"members": members,
                   "eval_accuracy": float(np.mean(accs)) if accs else None}


def _curves(spec: ExperimentSpec, seed: int, proxy: np.ndarray, true: np.ndarray
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from evaluation import fits, gap

    curves, fitted, headline = {}, {}, {}
    sd = gap.reference_scale(reference=proxy).std
    for method in spec.pressure:
        if method == "tilting":
            lams = gap.lambda_grid(lo=spec.lambda_min, hi=spec.lambda_max, num=spec.n_lambdas)
            curve = gap.tilting_curve(proxy=proxy, true=true, lambdas=lams / sd,
                                      n_boot=spec.n_boot, level=spec.level, seed=seed)
        else:
            curve = gap.best_of_n_curve(proxy=proxy, true=true,
                                        ns=gap.n_grid(n_max=spec.n_max, num=spec.n_ns),
                                        n_boot=spec.n_boot, level=spec.level, seed=seed)
        gold = fits.gold_fit_curve(curve=curve, form="bon")
        trend = fits.gap_trend(curve=curve, d_max=spec.trend_d_max or None)
        curves[method] = curve.as_dict()
        fitted[method] = {"gold": gold.as_dict(), "gap": trend.as_dict()}
        headline[method] = {
            "gap_slope": trend.slope.as_dict(),
            "gap_intercept": trend.intercept.as_dict(),
            "peak": gold.peak.as_dict() if gold.peak_reported and gold.peak else "no peak",
            "d_star": gold.peak.value if gold.peak_reported and gold.peak else None,
            "peak_reason": gold.reason,
            "d_max": float(curve.d.value.max()),
            "proxy_at_max": float(curve.proxy.value[-1]),
            "gold_at_max": float(curve.true.value[-1]),
        }
    return curves, fitted, headline


def _arm(spec: ExperimentSpec, shared: _Shared, epsilon: float, out_root: Path,
         progress: Callable[[str], None]) -> ArmResult:
    from evaluation.worlds import get_world

    world = get_world(spec.world)
    seed = shared.seed
    timing = dict(shared.timing)
    started = time.monotonic()
    rows, utilities = shared.rows, shared.utilities
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
    prompts, pools = reference_pools(world, n_prompts=spec.n_eval_prompts,
                                     k=spec.samples_per_prompt, seed=10_000 + seed)
    true = np.array([[world.utility(p, t) for t in pool] for p, pool in zip(prompts, pools,
                                                                               strict=True)])
    timing["rows_and_pools"] = time.monotonic() - started
    started = time.monotonic()
    if spec.reward == "utility_noise":
        progress("proxy")
        rng = np.random.default_rng(seed)
        proxy = true + spec.proxy_noise_sd * rng.standard_normal(true.shape)
        rm_info: dict[str, Any] = {"kind": "utility_noise", "noise_sd": spec.proxy_noise_sd,
                                   "eval_accuracy": None, "members": []}
    else:
        progress("reward_model")
        out_dir = out_root / f"eps{epsilon:.4f}-s{seed}"
        proxy, rm_info = _train_and_score(spec, seed, rows, prompts, pools, out_dir)
        rm_info["kind"] = "trained"
    with np.errstate(invalid="ignore"):
        corr = float(np.corrcoef(proxy.ravel(), true.ravel())[0, 1])
    rm_info |= {"clean_accuracy": pairwise_agreement(proxy, true), "corr_proxy_true": corr,
                "ensemble_size": spec.ensemble_size, "ensemble_rule": spec.ensemble_rule}
    timing["reward_model"] = time.monotonic() - started
    started = time.monotonic()
    progress("gap")
    curves, fitted, headline = _curves(spec, seed, proxy, true)
    timing["gap"] = time.monotonic() - started
    return ArmResult(
        seed=seed, epsilon=epsilon_info,
        rows={"n": len(rows), "flipped": len(flipped), "sha256": digest,
              "snapshot_id": shared.snapshot_id, "campaign_id": shared.campaign_id},
        reward_model=rm_info, curves=curves, fits=fitted, headline=headline,
        timing={k: round(v, 3) for k, v in timing.items()})


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


def experiment_noise_sweep(*, spec: ExperimentSpec,
                           epsilons: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
                           progress: Progress | None = None) -> list[ExperimentResult]:
    """Run one arm per injected ε, every arm on the same world, pool, campaign and snapshot.

    Per seed the annotation is done once (and reused if a campaign of this spec and seed exists)
    and each ε flips its own seeded rows, trains its own reward model(s) and measures its own
    curves; π₀'s evaluation pools and the bootstrap resamples are the same for every ε of a seed,
    so arms differ only by their noise (paired, ``fits.trend_change`` applies). Returns one
    :class:`ExperimentResult` per ε, in the order given. Raises ValueError for ε outside
    [0, 0.5) and ``annotation.errors.ApplicationError`` from the annotation services.
    """
    from django.conf import settings

    from training.services.runs import code_version

    if not epsilons or any(not 0 <= e < 0.5 for e in epsilons):
        raise ValueError("every epsilon must be in [0, 0.5)")
    n_steps = len(spec.seeds) * (1 + len(epsilons))
    done = 0

    def tell(stage: str) -> None:
        if progress is not None:
            progress(stage, done / n_steps)

    out_root = Path(settings.GAPLAB_ARTIFACT_ROOT) / "experiments" / spec.key()
    started = time.monotonic()
    arms: dict[float, list[ArmResult]] = {e: [] for e in epsilons}
    seconds: dict[float, float] = dict.fromkeys(epsilons, 0.0)
    for seed in spec.seeds:
        shared = _annotate(spec, seed, tell)
        done += 1
        for eps in epsilons:
            t0 = time.monotonic()
            arms[eps].append(_arm(spec, shared, float(eps), out_root, tell))
            seconds[eps] += time.monotonic() - t0
            done += 1
            tell(f"arm eps={eps:g} seed={seed}")
    annotate_s = (time.monotonic() - started - sum(seconds.values())) / len(epsilons)
    version = code_version()
    return [ExperimentResult(
        spec=_plain(asdict(replace(spec, flip_rate=float(eps)))), epsilon_injected=float(eps),
        arms=arms[eps], summary=_summary(spec, arms[eps]),
        seconds=round(seconds[eps] + annotate_s, 3), code_version=version,
    ) for eps in epsilons]


def experiment_run(*, spec: ExperimentSpec, progress: Progress | None = None) -> ExperimentResult:
    """Run the experiment at ``spec.flip_rate``, one arm per seed (module docstring)."""
    return experiment_noise_sweep(spec=spec, epsilons=(spec.flip_rate,), progress=progress)[0]


def result_headline(result: ExperimentResult) -> dict[str, Any]:
    """The JSON line of ``manage.py experiment`` for one ε: noise coordinates, and per pressure
    method the gap's slope with its interval, peak or "no peak", d*."""
    s = result.summary
    line: dict[str, Any] = {
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
    return _plain(line)
