"""The alignment gap under pressure: tilting, best-of-n and trained policies. Pure numpy, no ORM.

DESIGN sections 2 and 7. Every estimator here takes, for P prompts, π₀'s samples scored by the
proxy r̂ (a reward model) and the true utility r* (a world's utility, or a gold model), as
``(P, K)`` arrays (row = prompt), and returns a :class:`GapCurve`: at each pressure the KL to π₀,
d = √KL, the proxy E_π[r̂], the gold E_π[r*] and the gap G = E_π[r̂] − E_π[r*], each with a
bootstrap interval over prompts.

**Units.** KL in nats; d = √KL (PREDICTIONS conventions, the axis of Gao et al. 2022 and
Rafailov et al. 2023). Rewards are standardized under π₀: r̂ and r* each minus its mean, over
its standard deviation (ddof 0) over every reference sample (:func:`reference_scale`), so at π₀
both are 0 and the gap is 0. A prompt-level average is E_x with x uniform over the P prompts,
and KL(π‖π₀) of a policy over prompts is E_x KL(π(·|x)‖π₀(·|x)): KL is averaged over prompts
*first* and d is the square root of that mean (never a mean of per-prompt square roots).

**KL-tilting** (:func:`tilt`, :func:`tilting_curve`): π_λ(y|x) ∝ π₀(y|x)·exp(λ r̂), exact for the
empirical pool of K samples: w_k = softmax_k(λ r̂_k), E_λ[f] = Σ w_k f_k,
KL_λ = Σ w_k log(K w_k) = λA′(λ) − A(λ) with A the pool's log-partition (PREDICTIONS P2). With
a = λ(r̂ − max r̂) ≤ 0, KL_λ = Σ e^a a / Σ e^a − log Σ e^a + log K: every exponent is ≤ 0 and the
sum is ≥ 1, so nothing overflows at any finite λ (Σ e^a a is computed as λ·Σ e^a (r̂ − max r̂):
an exponent that overflows to −∞ gives e^a = 0 and never 0·∞); at λ → ∞ the weights fall on the
pool's top sample and KL → log K (log(K/m) with m tied top samples). λ multiplies r̂ in the
reward model's own units, a fixed knob; λ = 0 is π₀. Scaling λ by an SD estimated from the same
samples would make the knob itself random, and an interval at a fixed λ would then miss that
variance (a seeded simulation gave 60% coverage of d for a nominal 90%; with the fixed knob
90%). dKL/dλ = λ·Var_λ(r̂) ≥ 0, so KL is nondecreasing in λ ≥ 0, ≈ ½λ²·E_x Var_pool(r̂|x) at
small λ.

**Best-of-n** (:func:`best_of_n`, :func:`best_of_n_curve`): the expectation of f at the kept
sample when n draws are made from a prompt's pool and the one with the highest r̂ is kept, ties
broken uniformly at random. By order statistics, with lo_k = #{j: r̂_j < r̂_k} and
hi_k = #{j: r̂_j ≤ r̂_k}, the kept sample is k with probability (G(hi_k) − G(lo_k))/(hi_k − lo_k),
where G(c) = P(all n draws among the c lowest) = (c/K)ⁿ with replacement (the exact best-of-n of
the empirical pool, the default, any n), or C(c, n)/C(K, n) without (the unbiased estimator of
best-of-n under π₀ for n ≤ K used by Nakano et al. 2021 and Gao et al. 2022). The tie-group's
probability is shared evenly among its members, which is what a uniform tie-break gives. The
curve's KL is the analytic log n − (n−1)/n (Stiennon et al. 2020, appendix G.3), an upper bound
that is tight when samples rarely tie (Beirami et al. 2024), so its d = √(log n − (n−1)/n) as
PREDICTIONS says; ``kl_pool`` beside it gives the exact KL of the pool's best-of-n to the
uniform pool, Σ w log(K w) ≤ log K, which shows when n has outgrown the pool (the pool's
curve then stops moving while the analytic d keeps growing).

**Trained policies** (:func:`policy_curve`): a policy's own samples on the same prompts, scored
by r̂ and r*, and per sample ℓ = log π(y|x) − log π₀(y|x) (sequence log-probabilities, nats).
KL = E_π[ℓ] by Monte Carlo ("k1"), or Schulman's (2020) nonnegative unbiased
"k3" = E_π[(e^{−ℓ} − 1) + ℓ]; its standard error treats prompts as the independent unit (the SD of
per-prompt means over √P), since samples of one prompt are not independent draws of x. A small
true KL can come out negative by noise; d is then clipped to 0 and the interval says so.
Standardization uses separate π₀ reference samples on the same prompt rows.

**Bootstrap over prompts** (Efron & Tibshirani 1993, chapter 6; percentile intervals, section
13.3): every curve reduces to prompt-level averages of per-prompt quantities (tilted or
best-of-n means, per-prompt KL, π₀'s first and second moments), so a resample of prompts is a
row of multinomial counts and all replicates of every quantity at every pressure are one matrix
product, counts (B×P) @ per-prompt table (P×Q) / P. Standardization is recomputed inside each
replicate (the π₀ mean and SD are estimated from the same resampled prompts), so its
uncertainty is in the interval, and at π₀ the gap is exactly 0 in every replicate. The counts
depend only on (P, B, seed): curves on the same prompt rows with the same seed are resampled
*jointly*, so replicate b of a tilting curve, a best-of-n curve and a policy sweep are the same
resampled prompts; ``fits`` relies on this to fit each replicate and to difference arms.

Why no library: scipy.stats.bootstrap calls a statistic per resample batch and returns one
statistic's interval; here hundreds of curve points share one resample matrix and the
replicates themselves are kept for fits (``evaluation/fits.py``). No package gives the
pool-exact tilting and tie-aware best-of-n estimators above; each is a few lines of numpy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln
from scipy.stats import rankdata

DEFAULT_LEVEL = 0.9  # PREDICTIONS conventions: 90% intervals
DEFAULT_N_BOOT = 1000
KL_ESTIMATORS = ("k1", "k3")
# Elements per (pressure, prompt, sample) block held at once: bounds memory at ~64 MB a temporary.
_BLOCK = 1 << 23
# Elements per tilting block: 2 MB of float64, so the exponentials are summed while in cache.
_CACHE = 1 << 18


@dataclass(frozen=True)
class Scale:
    """A score's mean and standard deviation under π₀ (ddof 0, over every reference sample)."""

    mean: float
    std: float

    def apply(self, values: ArrayLike) -> np.ndarray:
        """Return (values − mean) / std."""
        return (np.asarray(values, dtype=float) - self.mean) / self.std


def reference_scale(*, reference: ArrayLike) -> Scale:
    """Return the mean and SD of π₀'s scores; ValueError if they are constant or not finite."""
    x = np.asarray(reference, dtype=float).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise ValueError("reference scores must be at least two finite numbers")
    std = float(x.std())
    if not std > 0:
        raise ValueError("reference scores are constant: nothing to standardize by")
    return Scale(mean=float(x.mean()), std=std)


def standardize(*, values: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """Standardize values by the mean and SD of the reference (π₀) scores."""
    return reference_scale(reference=reference).apply(values)


def lambda_grid(
    *, lo: float = 1e-2, hi: float = 1e2, num: int = 64, include_zero: bool = True
) -> np.ndarray:
    """Return tilting pressures log-spaced from lo to hi, with 0 (π₀) first if asked."""
    if not 0 < lo < hi or num < 1:
        raise ValueError("need 0 < lo < hi and num >= 1")
    grid = np.geomspace(lo, hi, num)
    return np.concatenate([[0.0], grid]) if include_zero else grid


def n_grid(*, n_max: int, num: int = 24) -> np.ndarray:
    """Return distinct integers from 1 to n_max, roughly log-spaced (best-of-n pressures)."""
    if n_max < 1:
        raise ValueError("n_max must be >= 1")
    return np.unique(np.round(np.geomspace(1, n_max, num)).astype(np.int64))


def kl_best_of_n(n: ArrayLike) -> np.ndarray:
    """Return log n − (n−1)/n nats, the analytic KL of best-of-n to π₀ (an upper bound)."""
    n = np.asarray(n, dtype=float)
    if np.any(n < 1):
        raise ValueError("n must be >= 1")
    return np.log(n) - (n - 1) / n


def _scores(scores: ArrayLike) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[1] < 1 or s.shape[0] < 1:
        raise ValueError("scores must be a (prompts, samples) array")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s


def _values(values: Sequence[ArrayLike], shape: tuple[int, ...]) -> np.ndarray:
    v = np.stack([np.asarray(x, dtype=float) for x in values])
    if v.shape[1:] != shape:
        raise ValueError(f"every value array must have the scores' shape {shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite")
    return v


def _tilt_table(s: np.ndarray, v: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """For λ ≥ 0 return (P, F+1, L): per prompt E_λ[v_f] for each value array, then KL_λ.

    With d = s − max_k s ≤ 0 and e = exp(λd): every exponent is ≤ 0 (an overflow of λd is
    −inf, e = 0) and the top sample's e is 1, so z = Σe ≥ 1; KL = λ·Σed/z − log z + log K.
    Prompts go in blocks small enough to stay in cache, laid out (prompt, sample, λ) so that
    the exponential runs over long rows and the sums Σe·[1, d, v] are one batched matrix
    product, (F+2, K) @ (K, L) per prompt; each block is finished before the next starts.
    """
    n_p, k = s.shape
    n_f = v.shape[0]
    d = s - s.max(axis=1, keepdims=True)
    rows = np.empty((n_p, n_f + 2, k))
    rows[:, 0] = 1.0
    rows[:, 1] = d
    rows[:, 2:] = v.transpose(1, 0, 2)
    out = np.empty((n_p, n_f + 1, lam.size))
    log_k = math.log(k)
    span = max(1, min(lam.size, _BLOCK // k))  # λ per pass: bounds memory at huge K·L
    for j in range(0, lam.size, span):
        lj = lam[j : j + span]
        step = max(1, _CACHE // (k * lj.size))
        buf = np.empty((min(step, n_p), k, lj.size))
        sums = np.empty((min(step, n_p), n_f + 2, lj.size))
        for i in range(0, n_p, step):
            m = min(step, n_p - i)
            e, sm = buf[:m], sums[:m]
            with np.errstate(over="ignore"):
                np.multiply(d[i : i + m, :, None], lj, out=e)
            np.exp(e, out=e)
            np.matmul(rows[i : i + m], e, out=sm)
            z = sm[:, 0]
            dest = out[i : i + m, :, j : j + span]
            kl = dest[:, n_f]
            np.log(z, out=kl)
            np.reciprocal(z, out=z)  # z is not needed after this: 1/z
            np.multiply(sm[:, 2:], z[:, None], out=dest[:, :n_f])
            np.subtract(log_k, kl, out=kl)
            kl += sm[:, 1] * lj * z
    np.maximum(out[:, n_f], 0.0, out=out[:, n_f])  # rounding below 0 at λ ≈ 0
    return out


def tilt(
    *, scores: ArrayLike, values: Sequence[ArrayLike], lambdas: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Tilt each prompt's pool by exp(λ·score); return E_λ[values] and KL_λ per prompt.

    ``scores`` and each of ``values`` are (P, K); returns expectations of shape (F, L, P) for
    F value arrays and L pressures, and KL (L, P) in nats, exact for the pool, for any finite λ
    (negative λ tilts toward low scores: it is −λ applied to −score, whose exponents are ≤ 0
    too). Both are views of one (P, F+1, L) table.
    """
    s = _scores(scores)
    v = _values(values, s.shape)
    lam = np.asarray(lambdas, dtype=float).ravel()
    if not np.all(np.isfinite(lam)):
        raise ValueError("lambdas must be finite")
    neg = lam < 0
    if neg.any():
        table = np.empty((s.shape[0], v.shape[0] + 1, lam.size))
        table[:, :, ~neg] = _tilt_table(s, v, lam[~neg])
        table[:, :, neg] = _tilt_table(-s, v, -lam[neg])
    else:
        table = _tilt_table(s, v, lam)
    return table[:, :-1].transpose(1, 2, 0), table[:, -1].T


def _bon_cdf(c: np.ndarray, n: np.ndarray, k: int, replace: bool) -> np.ndarray:
    """P(all n draws among the c lowest of k): (c/k)^n, or C(c, n)/C(k, n) without replacement."""
    if replace:
        return (c / k) ** n
    with np.errstate(invalid="ignore"):
        log_g = gammaln(c + 1) - gammaln(c - n + 1) - gammaln(k + 1) + gammaln(k - n + 1)
    return np.where(c >= n, np.exp(np.where(c >= n, log_g, 0.0)), 0.0)


def best_of_n(
    *, scores: ArrayLike, values: Sequence[ArrayLike], ns: ArrayLike, replace: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the best of n draws from each prompt's pool; return E[values] and the pool's KL.

    Expectations (F, N, P) by order statistics (ties share their group's probability evenly),
    and the exact KL of that choice distribution to the uniform pool (N, P), in nats. With
    ``replace=False``, every n must be ≤ K.
    """
    s = _scores(scores)
    v = _values(values, s.shape)
    n_arr = np.asarray(ns, dtype=float).ravel()
    n_p, k = s.shape
    if np.any(n_arr < 1) or np.any(n_arr != np.round(n_arr)):
        raise ValueError("n must be positive integers")
    if not replace and np.any(n_arr > k):
        raise ValueError(f"without replacement n must be <= K = {k}")
    lo = rankdata(s, method="min", axis=1).astype(float) - 1.0  # samples strictly below
    hi = rankdata(s, method="max", axis=1).astype(float)  # samples at or below
    expect = np.empty((v.shape[0], n_arr.size, n_p))
    kl = np.empty((n_arr.size, n_p))
    step = max(1, _BLOCK // s.size)
    for i in range(0, n_arr.size, step):
        nc = n_arr[i : i + step, None, None]
        w = (_bon_cdf(hi, nc, k, replace) - _bon_cdf(lo, nc, k, replace)) / (hi - lo)
        expect[:, i : i + step] = np.einsum("npk,fpk->fnp", w, v)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl[i : i + step] = np.where(w > 0, w * np.log(k * w), 0.0).sum(axis=2)
    np.maximum(kl, 0.0, out=kl)
    return expect, kl


@functools.lru_cache(maxsize=4)
def _counts(n_prompts: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_prompts, size=(n_boot, n_prompts), dtype=np.int64)
    out = np.empty((n_boot, n_prompts))
    for b in range(n_boot):  # a row at a time stays in cache: twice as fast as one bincount
        out[b] = np.bincount(idx[b], minlength=n_prompts)
    out.flags.writeable = False
    return out


def bootstrap_counts(*, n_prompts: int, n_boot: int, seed: int) -> np.ndarray:
    """Return (n_boot, n_prompts) multinomial counts: how often each prompt is in each resample.

    Deterministic in (n_prompts, n_boot, seed) and cached, so curves on the same prompts with
    the same seed share their resamples. Read-only.
    """
    if n_prompts < 1 or n_boot < 1:
        raise ValueError("n_prompts and n_boot must be >= 1")
    return _counts(int(n_prompts), int(n_boot), int(seed))


def percentile_interval(*, replicates: ArrayLike, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the equal-tailed percentile interval over axis 0 of bootstrap replicates."""
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    r = np.asarray(replicates, dtype=float)
    tail = (1 - level) / 2
    lo, hi = np.quantile(r, [tail, 1 - tail], axis=0)
    return lo, hi


@dataclass(frozen=True)
class Band:
    """A quantity along a curve: point estimates, their interval, and the bootstrap replicates."""

    value: np.ndarray  # (L,)
    lo: np.ndarray  # (L,)
    hi: np.ndarray  # (L,)
    boot: np.ndarray  # (B, L), replicate b = resampled prompt set b

    def as_dict(self) -> dict[str, list[float]]:
        """Return the estimate and interval as JSON-ready lists (replicates left out)."""
        return {"value": self.value.tolist(), "lo": self.lo.tolist(), "hi": self.hi.tolist()}


@dataclass(frozen=True)
class GapCurve:
    """Proxy, gold and gap against d = √KL at each pressure, with bootstrap intervals.

    ``proxy``, ``true`` and ``gap`` are standardized under π₀; ``kl`` in nats.
    """

    method: str  # "tilting", "best_of_n" or "policy"
    pressure: np.ndarray  # λ (units 1/r̂), n, or the policies' own knob (e.g. 1/β)
    kl: Band
    d: Band
    proxy: Band
    true: Band
    gap: Band
    n_prompts: int
    n_samples: int  # samples per prompt behind each point
    level: float
    seed: int
    kl_se: np.ndarray | None = None  # policy: Monte Carlo SE of KL, prompts as the unit
    kl_pool: Band | None = None  # best-of-n: exact KL of the pool's best-of-n

    @property
    def n_boot(self) -> int:
        return int(self.d.boot.shape[0])

    def as_dict(self) -> dict[str, Any]:
        """Return the curve as JSON-ready data (no replicates)."""
        out: dict[str, Any] = {
            "method": self.method,
            "pressure": self.pressure.tolist(),
            "n_prompts": self.n_prompts,
            "n_samples": self.n_samples,
            "level": self.level,
            "seed": self.seed,
            "n_boot": self.n_boot,
        }
        for name in ("kl", "d", "proxy", "true", "gap"):
            out[name] = getattr(self, name).as_dict()
        if self.kl_se is not None:
            out["kl_se"] = self.kl_se.tolist()
        if self.kl_pool is not None:
            out["kl_pool"] = self.kl_pool.as_dict()
        return out


def _reference_moments(*, proxy: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-prompt π₀ moments (P, 4): mean and mean square of r̂, then of r* (already centred)."""
    return np.stack(
        [proxy.mean(axis=1), (proxy**2).mean(axis=1), true.mean(axis=1), (true**2).mean(axis=1)],
        axis=1,
    )


def _standardized(expect: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    var = np.maximum(m2 - m1**2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (expect - m1[:, None]) / np.sqrt(var)[:, None]


def _assemble(
    *,
    method: str,
    pressure: np.ndarray,
    e_proxy: np.ndarray,
    e_true: np.ndarray,
    kl: np.ndarray | None,
    fixed_kl: np.ndarray | None,
    moments: np.ndarray,
    extra_kl: np.ndarray | None,
    n_samples: int,
    n_boot: int,
    level: float,
    seed: int,
    kl_se: np.ndarray | None = None,
) -> GapCurve:
    """Average per-prompt (P, L) tables over prompts and over every bootstrap resample."""
    n_p, n_l = e_proxy.shape
    blocks = [e_proxy, e_true] + [b for b in (kl, extra_kl) if b is not None] + [moments]
    table = np.concatenate(blocks, axis=1)
    counts = bootstrap_counts(n_prompts=n_p, n_boot=n_boot, seed=seed)
    means = np.concatenate([table.mean(axis=0, keepdims=True), counts @ table / n_p])  # (1+B, Q)

    def cut(j: int) -> np.ndarray:
        return means[:, j * n_l : (j + 1) * n_l]

    m = means[:, -4:]
    proxy = _standardized(cut(0), m[:, 0], m[:, 1])
    true = _standardized(cut(1), m[:, 2], m[:, 3])
    j = 2
    if kl is not None:
        kl_all = cut(j)
        j += 1
    else:
        assert fixed_kl is not None
        kl_all = np.broadcast_to(fixed_kl, (means.shape[0], n_l))
    pool_all = cut(j) if extra_kl is not None else None

    def band(x: np.ndarray) -> Band:
        lo, hi = percentile_interval(replicates=x[1:], level=level)
        return Band(value=np.array(x[0]), lo=lo, hi=hi, boot=np.array(x[1:]))

    return GapCurve(
        method=method,
        pressure=np.asarray(pressure, dtype=float),
        kl=band(kl_all),
        d=band(np.sqrt(np.maximum(kl_all, 0.0))),
        proxy=band(proxy),
        true=band(true),
        gap=band(proxy - true),
        n_prompts=n_p,
        n_samples=n_samples,
        level=level,
        seed=seed,
        kl_se=kl_se,
        kl_pool=band(pool_all) if pool_all is not None else None,
    )


def _pool(proxy: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return π₀'s pool as (standardized r̂, centred r*); both (P, K) and finite."""
    p = _scores(proxy)
    t = _scores(true)
    if p.shape != t.shape:
        raise ValueError("proxy and true must have the same (prompts, samples) shape")
    return reference_scale(reference=p).apply(p), t - t.mean()


def tilting_curve(
    *,
    proxy: ArrayLike,
    true: ArrayLike,
    lambdas: ArrayLike | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> GapCurve:
    """Trace the gap along exponential tilting of π₀'s pools (no training).

    ``proxy`` and ``true`` are (P, K) scores of π₀'s samples. ``lambdas`` multiply r̂ as given
    (units 1/r̂); by default :func:`lambda_grid` divided by r̂'s SD under π₀, so the grid spans
    π₀ to the pools' top samples whatever the reward model's scale.
    """
    raw = _scores(proxy)
    s, t = _pool(proxy, true)
    sd = reference_scale(reference=raw).std
    lam = lambda_grid() / sd if lambdas is None else np.asarray(lambdas, dtype=float).ravel()
    (e_p, e_t), kl = tilt(scores=raw, values=[s, t], lambdas=lam)
    return _assemble(
        method="tilting", pressure=lam, e_proxy=e_p.T, e_true=e_t.T, kl=kl.T, fixed_kl=None,
        moments=_reference_moments(proxy=s, true=t), extra_kl=None, n_samples=s.shape[1],
        n_boot=n_boot, level=level, seed=seed,
    )


def best_of_n_curve(
    *,
    proxy: ArrayLike,
    true: ArrayLike,
    ns: ArrayLike | None = None,
    replace: bool = True,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> GapCurve:
    """Trace the gap along best-of-n over π₀'s pools, against d = √(log n − (n−1)/n).

    ``ns`` default to :func:`n_grid` up to K (the pool size); larger n is allowed with
    replacement, and ``kl_pool`` then shows the pool saturating.
    """
    s, t = _pool(proxy, true)
    n_arr = n_grid(n_max=s.shape[1]) if ns is None else np.asarray(ns).ravel()
    (e_p, e_t), kl_pool = best_of_n(scores=s, values=[s, t], ns=n_arr, replace=replace)
    return _assemble(
        method="best_of_n", pressure=n_arr, e_proxy=e_p.T, e_true=e_t.T, kl=None,
        fixed_kl=kl_best_of_n(n_arr), moments=_reference_moments(proxy=s, true=t),
        extra_kl=kl_pool.T, n_samples=s.shape[1], n_boot=n_boot, level=level, seed=seed,
    )


def policy_curve(
    *,
    pressure: ArrayLike,
    proxy: Sequence[ArrayLike],
    true: Sequence[ArrayLike],
    log_ratio: Sequence[ArrayLike],
    ref_proxy: ArrayLike,
    ref_true: ArrayLike,
    kl_estimator: str = "k1",
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> GapCurve:
    """Measure trained policies (one per pressure): gold, proxy, gap and Monte Carlo KL.

    For policy i, ``proxy[i]``, ``true[i]`` and ``log_ratio[i]`` (log π − log π₀ per sample,
    nats) are (P, M_i) on the same P prompt rows as the π₀ reference samples ``ref_proxy`` and
    ``ref_true`` (P, K), which set the standardization. Prompts are resampled jointly across
    policies. ``kl_se`` is the Monte Carlo SE of each KL with prompts as the unit.
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}")
    rp = _scores(ref_proxy)
    rt = _scores(ref_true)
    if rp.shape != rt.shape:
        raise ValueError("ref_proxy and ref_true must have the same shape")
    if not (len(proxy) == len(true) == len(log_ratio) == np.size(pressure)) or not len(proxy):
        raise ValueError("one proxy, true and log_ratio array per pressure")
    p_scale = reference_scale(reference=rp)
    t_mean = float(rt.mean())
    cols: list[list[np.ndarray]] = [[], [], []]
    n_samples = 0
    for p, t, lr in zip(proxy, true, log_ratio, strict=True):
        p_arr, t_arr, l_arr = _scores(p), _scores(t), _scores(lr)
        if not (p_arr.shape == t_arr.shape == l_arr.shape) or p_arr.shape[0] != rp.shape[0]:
            raise ValueError("each policy's arrays must be (P, M) on the reference's P prompts")
        n_samples = max(n_samples, p_arr.shape[1])
        per_sample_kl = l_arr if kl_estimator == "k1" else np.expm1(-l_arr) + l_arr
        cols[0].append(p_scale.apply(p_arr).mean(axis=1))
        cols[1].append((t_arr - t_mean).mean(axis=1))
        cols[2].append(per_sample_kl.mean(axis=1))
    e_p, e_t, kl = (np.stack(c, axis=1) for c in cols)  # (P, L)
    n_p = rp.shape[0]
    kl_se = kl.std(axis=0, ddof=1) / math.sqrt(n_p) if n_p > 1 else np.full(kl.shape[1], np.nan)
    return _assemble(
        method="policy", pressure=np.asarray(pressure, dtype=float).ravel(), e_proxy=e_p,
        e_true=e_t, kl=kl, fixed_kl=None,
        moments=_reference_moments(proxy=p_scale.apply(rp), true=rt - t_mean), extra_kl=None,
        n_samples=n_samples, n_boot=n_boot, level=level, seed=seed, kl_se=kl_se,
    )
