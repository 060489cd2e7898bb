"""Fit gold-vs-d curves (Gao et al. 2022) and the gap's trend, with intervals. Pure numpy/scipy.

DESIGN section 7, PREDICTIONS P3, P4, P6. Units: d = √KL in nats^½; gold and gap standardized
under π₀ (``evaluation/gap.py``), so both forms pass through the origin (π₀: d = 0, gold 0).

**Forms** (Gao, Schulman & Hilton 2022, section 3.1, eq. 1 and 2):
best-of-n and tilting r*(d) = d(α − βd); RL r*(d) = d(α − β log d). Both are *linear* in (α, β),
with regressors (d, −d²) and (d, −d log d), so ordinary (or weighted) least squares is exact and
closed form, and fitting a thousand bootstrap replicates is one batched 2×2 solve;
scipy.optimize.curve_fit would iterate to the same answer from a starting guess. Points with
d = 0 carry no information (both regressors vanish) and are left out.

**Peak.** best-of-n form: f′ = α − 2βd = 0 at d* = α/(2β), a maximum iff β > 0 (f″ = −2β), at
gold α²/(4β). RL form: f′ = α − β(1 + log d) = 0 at log d* = α/β − 1, so d* = exp(α/β − 1), a
maximum iff β > 0 (f″ = −β/d), at gold f(d*) = d*(α − (α − β)) = β·d*.

**Intervals: say which** (``GoldFit.interval_method``). Given the bootstrap replicates of a
curve (``GapCurve`` from ``gap.py``, resampled over prompts), every replicate is refitted and
intervals are percentiles over replicates ("bootstrap"). This is the right choice for tilting
and best-of-n curves, whose points share their prompts and are strongly correlated, which
breaks the independent-residual covariance. Without replicates (independent points, e.g. a
few separately sampled trained policies) intervals come from the least-squares covariance
("covariance"): σ̂²(XᵀX)⁻¹ with t quantiles on n − 2 degrees of freedom, or (XᵀWX)⁻¹ with
normal quantiles when per-point standard errors are given; d* and the band by the delta method.

**No false peaks (P4).** A concave fit with β > 0 is not evidence of a peak: a gold curve that
rises and levels off (a bounded utility whose best answers are already chosen) fits d(α − βd)
with a peak near the plateau. A peak is reported only if all of these hold:
(1) the fit has β > 0 and d* strictly inside the fitted d range [d_lo, d_hi];
(2) it beats the best *monotone* fit by more than 2 AIC units (Burnham & Anderson 2002,
    section 2.6: ΔAIC ≤ 2 means both models are supported, so the monotone one is "not worse").
    The monotone family is (a) the same form constrained to f′ ≥ 0 on [d_lo, d_hi] (f′ is
    linear in d or log d, so two endpoint constraints suffice; an exact active-set solve), and
    (b) the saturating r*(d) = a·c·(1 − e^{−d/c}), a ≥ 0 (slope a at the origin, plateau a·c;
    c → ∞ is the line a·d), profiled over c on a log grid. Both use 2 parameters, as the
    peaked form does; AIC = n log(RSS/n) + 2k, or χ² + 2k with standard errors;
(3) the interval of d* lies inside [d_lo, d_hi]. With replicates, each replicate applies (1)
    and (2) itself and one without a peak counts as d* = +∞, so (3) holds only if at least
    1 − (1 − level)/2 of the replicates (95% at level 0.9) find an interior peak that beats the
    monotone family: a one-sided bootstrap test;
(4) **the data fall after d*** (``GoldFit.decline``): the observed gold at the fitted point
    nearest d* exceeds the observed gold at the largest d by more than its sampling error, a
    one-sided test at (1 − level)/2 (5% at level 0.9). With replicates the difference is taken
    replicate by replicate on the shared resamples (a paired bootstrap: its lower percentile
    must be > 0); without them its standard error is √(se_j² + se_last²) with given standard
    errors (normal quantile), or σ̂√2 from the peaked fit's residuals (t on n − 2).
Why (4): (1)–(3) compare *shapes*, and a shape can win where the data never turn down. Tilting
puts many points near d = √log K (the pool's top sample takes all the weight), and where a
bounded utility has already levelled off there (P4 on the arithmetic world, r̂ = r* + N(0, 0.5²):
gold 0.834, 0.950, 0.965, 0.966 at d = 0.94, 1.35, 1.55, 1.63) those points pin a parabola's
vertex inside the range and outweigh the few early points where the saturating family fits
better: d* = 1.53 [1.50, 1.56] passed (1)–(3). Over-optimisation is a claim that gold *falls*
with more pressure, so the rule now asks the data for that fall directly, at the d* the fit
claims (a point fixed by the whole fit, not the noisiest local maximum, which would carry a
winner's curse), rather than adding ever more monotone shapes.
A peak that (1) finds but (2), (3) or (4) rejects is reported as no peak with the reason.

**Measured** (seeded, ``tests/evaluation/test_fits.py`` and a 40-seed run of its worlds, K = 16,
1,500 prompts, 300 replicates): false peaks 0/40 for tilting (both forms) and best-of-n with
independent noise, 0/40 for a bounded 0/1 utility that saturates; peaks found 40/40 with a rare
exploitable feature (extremal Goodhart), and the best-of-n d* interval covered the d* fitted on
40,000 prompts in 38/40. On 12 independent points of 1 − e^{−d} (covariance path) 4% false peaks,
the one-sided 5% the rule allows. Those runs predate rule 4; rechecked with it on 10 seeds of
the same worlds: false peaks still 0/10 each, peaks with the exploitable feature still found as
before (tilting 9/10 with the best-of-n form, 10/10 with the RL form, best-of-n 10/10; the one
miss is rule 3's, unchanged); on the arithmetic world with r̂ = r* + N(0, 0.5²), 400 prompts,
tilting false peaks went from 10/10 to 0/10 (best-of-n 0/10 both); on 12 points of 1 − e^{−d}
with noise SD 0.05, from 11/200 to 1/200. **Misfit is not in the intervals:** on that same world the
tilting gold curve peaks at d = 0.51 on 40,000 prompts while the best-of-n form puts d* at 0.67
and the RL form at 0.46, each with a narrow interval: the forms are empirical (Gao et al. fit
them, they do not derive them), and an interval carries sampling error only.

**Extrapolation** (P3: fit on d ≤ √6, predict to √10): :func:`gold_band` gives the fitted curve
and its pointwise interval on any d grid, marking points beyond the fitted range. The band is
for the mean curve (parameter uncertainty), not for one new noisy observation.

**Gap trend** (MAPS, P5, P6): :func:`linear_trend` fits G = a + b·d by least squares, with
bootstrap or covariance intervals; :func:`trend_change` gives an arm's change in slope and
intercept against its baseline. Replicates of two arms are differenced index by index: arms on
the same prompts with the same seed share their resamples (a paired bootstrap), and arms on
independent prompts give independent replicates, so the difference is valid either way.

Why no library: lmfit/curve_fit fit one curve at a time and give covariance intervals only;
neither knows the monotone alternatives or the bootstrap-over-prompts replicates kept by
``gap.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from evaluation.gap import DEFAULT_LEVEL, GapCurve

FORMS = ("bon", "rl")  # d(α − βd) for best-of-n and tilting; d(α − β log d) for RL
AIC_MARGIN = 2.0  # the peaked fit must beat the monotone family by more than this (AIC units)
_SAT_GRID = np.geomspace(0.02, 50.0, 60)  # saturation scale c of a·c(1 − e^{−d/c}), × d_hi
_TINY = 1e-300


@dataclass(frozen=True)
class Estimate:
    """A number with its interval."""

    value: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


def _dlogd(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)


def _design(form: str, d: np.ndarray) -> np.ndarray:
    """Regressors (..., n, 2) so that gold = X @ (α, β)."""
    if form == "bon":
        return np.stack([d, -(d**2)], axis=-1)
    if form == "rl":
        return np.stack([d, -_dlogd(d)], axis=-1)
    raise ValueError(f"form must be one of {FORMS}")


def _slope_term(form: str, d: float) -> float:
    """g′(d) in f′(d) = α − β·g′(d)."""
    return 2.0 * d if form == "bon" else 1.0 + float(np.log(d))


def gold_model(*, form: str, d: ArrayLike, alpha: float, beta: float) -> np.ndarray:
    """Evaluate Gao et al.'s form at d: d(α − βd) ("bon") or d(α − β log d) ("rl")."""
    return _design(form, np.asarray(d, dtype=float)) @ np.array([alpha, beta])


def peak_location(*, form: str, alpha: ArrayLike, beta: ArrayLike) -> np.ndarray:
    """Return d* of the form's maximum (α/(2β) or exp(α/β − 1)); +inf where it has none."""
    a = np.asarray(alpha, dtype=float)
    b = np.asarray(beta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if form == "bon":
            d = np.where(b > 0, a / (2 * b), np.inf)
            return np.where(d > 0, d, np.inf)
        if form == "rl":
            return np.where(b > 0, np.exp(a / b - 1), np.inf)
    raise ValueError(f"form must be one of {FORMS}")


def _solve(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares per leading index: x (..., n, 2), y (..., n), w (n,) → (..., 2).

    A pseudo-inverse, not ``solve``: a bootstrap replicate whose points coincide in d (a few
    prompts, a replicate that drew the same ones) has a singular normal matrix, and one such
    replicate must not fail the whole fit (it gets the minimum-norm solution)."""
    xtw = x.swapaxes(-1, -2) * w
    return (np.linalg.pinv(xtw @ x) @ (xtw @ y[..., None]))[..., 0]


def _rss(x: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray) -> np.ndarray:
    r = y - (x @ theta[..., None])[..., 0]
    return (w * r**2).sum(axis=-1)


def _monotone_rss(
    form: str, d: np.ndarray, y: np.ndarray, w: np.ndarray, d_lo: float, d_hi: float
) -> np.ndarray:
    """Least RSS over the monotone family (constrained same form; saturating exponential)."""
    x = _design(form, d)
    best = (w * y**2).sum(axis=-1)  # θ = 0, the both-constraints-active candidate
    cons = np.array([[1.0, -_slope_term(form, dd)] for dd in (d_lo, d_hi)])  # a·θ ≥ 0
    # Exact active-set solve of min RSS s.t. a_i·θ ≥ 0: try none active, then each one active.
    candidates = [_solve(x, y, w)]
    for con in cons:
        v = np.array([-con[1], 1.0])  # con·v = 0: the boundary line θ = t·v
        xv = x @ v
        t = (w * xv * y).sum(axis=-1) / np.maximum((w * xv**2).sum(axis=-1), _TINY)
        candidates.append(t[..., None] * v)
    for theta in candidates:
        feasible = np.all(theta @ cons.T >= -1e-12 * (1 + np.abs(theta).sum(-1))[..., None], -1)
        best = np.where(feasible, np.minimum(best, _rss(x, y, w, theta)), best)
    # Saturating a·c(1 − e^{−d/c}), a ≥ 0, profiled over c; the line a·d is its c → ∞ limit.
    c = (_SAT_GRID * d_hi)[:, None]
    g = np.concatenate([c * -np.expm1(-d[..., None, :] / c), d[..., None, :]], axis=-2)
    gy = (w * g * y[..., None, :]).sum(axis=-1)
    gg = np.maximum((w * g**2).sum(axis=-1), _TINY)
    a = np.maximum(gy / gg, 0.0)
    sat = (w * y**2).sum(axis=-1)[..., None] - 2 * a * gy + a**2 * gg
    return np.minimum(best, sat.min(axis=-1))


def _aic(rss: np.ndarray, n: int, known_se: bool, k: int = 2) -> np.ndarray:
    if known_se:
        return rss + 2 * k
    with np.errstate(divide="ignore"):
        return n * np.log(np.maximum(rss, 0.0) / n) + 2 * k


def _decline(
    d: np.ndarray, y: np.ndarray, d_star: float, level: float, *, boot: np.ndarray | None,
    se: np.ndarray | None, sigma: float, dof: int,
) -> Estimate:
    """Rule 4: gold at the point nearest d* minus gold at the largest d, with a two-sided
    interval at ``level`` whose lower end is the one-sided test at (1 − level)/2."""
    j, last = int(np.argmin(np.abs(d - d_star))), int(np.argmax(d))
    value = float(y[j] - y[last])
    if j == last:
        return Estimate(0.0, 0.0, 0.0)  # d* sits at the last point: nothing after it to fall
    if boot is not None:
        lo, hi = _quantiles(boot[:, j] - boot[:, last], level)
        return Estimate(value, float(lo), float(hi))
    if se is not None:
        s, q = float(np.hypot(se[j], se[last])), float(stats.norm.ppf((1 + level) / 2))
    else:
        s, q = sigma * np.sqrt(2.0), float(stats.t.ppf((1 + level) / 2, max(dof, 1)))
    return Estimate(value, value - q * s, value + q * s)


def _quantiles(x: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2
    # No interpolation: d* replicates hold +inf for "no peak", and inf − inf is nan.
    lo, hi = np.quantile(x, [tail, 1 - tail], axis=0, method="inverted_cdf")
    return lo, hi


@dataclass(frozen=True)
class GoldFit:
    """A fitted Gao et al. form with intervals, and whether the data show a peak."""

    form: str
    alpha: Estimate
    beta: Estimate
    interval_method: str  # "bootstrap" (over prompts) or "covariance"
    level: float
    d_range: tuple[float, float]  # fitted points' smallest and largest d
    n_points: int
    aic: float
    aic_monotone: float  # best monotone fit's AIC (same number of parameters)
    peak: Estimate | None  # d* and its interval, when a peak is reported
    peak_gold: Estimate | None  # gold at d*, when reported
    peak_reported: bool
    reason: str  # why a peak is, or is not, reported
    peak_share: float | None  # share of bootstrap replicates with an interior peak
    # gold at the point nearest d* minus gold at the largest d, with its interval (rule 4);
    # None when the fit has no interior d*
    decline: Estimate | None = None
    params_boot: np.ndarray | None = field(default=None, repr=False)  # (B, 2)
    covariance: np.ndarray | None = field(default=None, repr=False)  # (2, 2)
    dof: int | None = None  # t degrees of freedom when σ was estimated; None: normal

    def as_dict(self) -> dict[str, Any]:
        """Return the fit as JSON-ready data."""
        return {
            "form": self.form,
            "alpha": self.alpha.as_dict(),
            "beta": self.beta.as_dict(),
            "interval_method": self.interval_method,
            "level": self.level,
            "d_range": list(self.d_range),
            "n_points": self.n_points,
            "aic": self.aic,
            "aic_monotone": self.aic_monotone,
            "peak": self.peak.as_dict() if self.peak else None,
            "peak_gold": self.peak_gold.as_dict() if self.peak_gold else None,
            "peak_reported": self.peak_reported,
            "reason": self.reason,
            "peak_share": self.peak_share,
            "decline": self.decline.as_dict() if self.decline else None,
        }


def _points(
    d: ArrayLike, y: ArrayLike, d_max: float | None, d_boot: ArrayLike | None,
    y_boot: ArrayLike | None, se: ArrayLike | None, form: str,
) -> tuple[np.ndarray, ...]:
    d = np.asarray(d, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if d.shape != y.shape:
        raise ValueError("d and gold must have the same length")
    keep = (d > 0) & np.isfinite(d) & np.isfinite(y)
    if d_max is not None:
        keep &= d <= d_max
    if keep.sum() < 3:
        raise ValueError("need at least 3 points with d > 0 in the fitted range")
    w = np.ones(keep.sum())
    if se is not None:
        s = np.asarray(se, dtype=float).ravel()[keep]
        if np.any(~(s > 0)):
            raise ValueError("standard errors must be positive")
        w = 1.0 / s**2
    db = yb = None
    if (d_boot is None) != (y_boot is None):
        raise ValueError("give both d_boot and gold_boot, or neither")
    if d_boot is not None and y_boot is not None:
        db = np.broadcast_to(np.asarray(d_boot, dtype=float), np.shape(y_boot))[:, keep]
        yb = np.asarray(y_boot, dtype=float)[:, keep]
        if form == "rl":
            db = np.maximum(db, _TINY)  # a replicate's d can touch 0 where the estimate does not
    return d[keep], y[keep], w, db, yb


def gold_fit(
    *,
    d: ArrayLike,
    gold: ArrayLike,
    form: str,
    d_boot: ArrayLike | None = None,
    gold_boot: ArrayLike | None = None,
    se: ArrayLike | None = None,
    d_max: float | None = None,
    level: float = DEFAULT_LEVEL,
) -> GoldFit:
    """Fit gold = d(α − βd) or d(α − β log d) and decide whether it shows a peak.

    ``d``, ``gold``: the curve (L,); ``d_boot``, ``gold_boot``: its bootstrap replicates (B, L)
    (``d_boot`` may be (L,) when d is fixed, as for best-of-n); with them intervals are bootstrap
    percentiles, without them least-squares covariance. ``se``: optional per-point standard
    errors (weights 1/se²). ``d_max``: fit only points with d ≤ d_max (a low-KL fit).
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    x_d, y, w, db, yb = _points(d, gold, d_max, d_boot, gold_boot, se, form)
    n = x_d.size
    d_lo, d_hi = float(x_d.min()), float(x_d.max())
    x = _design(form, x_d)
    theta = _solve(x, y, w)
    rss = float(_rss(x, y, w, theta))
    rss_mono = float(_monotone_rss(form, x_d, y, w, d_lo, d_hi))
    known = se is not None
    se_kept = 1.0 / np.sqrt(w) if known else None
    aic = float(_aic(np.array(rss), n, known))
    aic_mono = float(_aic(np.array(rss_mono), n, known))
    d_star = float(peak_location(form=form, alpha=theta[0], beta=theta[1]))
    interior = bool(theta[1] > 0 and d_lo < d_star < d_hi)
    better = bool(aic_mono - aic > AIC_MARGIN)

    def gold_at(th: np.ndarray, dd: np.ndarray) -> np.ndarray:
        dd = np.where(np.isfinite(dd), dd, 0.0)
        return th[..., 0] * dd - th[..., 1] * (dd**2 if form == "bon" else _dlogd(dd))

    params_boot = covariance = None
    dof: int | None = None
    share: float | None = None
    if db is not None and yb is not None:
        method = "bootstrap"
        xb = _design(form, db)
        tb = _solve(xb, yb, w)
        params_boot = tb
        a_lo, a_hi = _quantiles(tb, level)
        rss_b = _rss(xb, yb, w, tb)
        mono_b = _monotone_rss(form, db, yb, w, d_lo, d_hi)
        ds_b = peak_location(form=form, alpha=tb[:, 0], beta=tb[:, 1])
        ok_b = (d_lo < ds_b) & (ds_b < d_hi)
        ok_b &= _aic(mono_b, n, known) - _aic(rss_b, n, known) > AIC_MARGIN
        share = float(ok_b.mean())
        ds_b = np.where(ok_b, ds_b, np.inf)
        p_lo, p_hi = _quantiles(ds_b, level)
        peak_iv = (float(p_lo), float(p_hi))
        g_b = np.where(ok_b, gold_at(tb, ds_b), np.nan)
        gold_iv = (
            tuple(float(v) for v in np.nanquantile(g_b, [(1 - level) / 2, (1 + level) / 2]))
            if ok_b.any() else (np.nan, np.nan)
        )
        alpha = Estimate(float(theta[0]), float(a_lo[0]), float(a_hi[0]))
        beta = Estimate(float(theta[1]), float(a_lo[1]), float(a_hi[1]))
    else:
        if n < 3:
            raise ValueError("need at least 3 points for covariance intervals")
        xtwx_inv = np.linalg.inv((x.T * w) @ x)
        if known:
            covariance = xtwx_inv
            q = float(stats.norm.ppf((1 + level) / 2))
        else:
            dof = n - 2
            covariance = xtwx_inv * rss / dof
            q = float(stats.t.ppf((1 + level) / 2, dof))
        method = "covariance"
        se_th = np.sqrt(np.diag(covariance))
        alpha = Estimate(float(theta[0]), *(float(theta[0] + s * q * se_th[0]) for s in (-1, 1)))
        beta = Estimate(float(theta[1]), *(float(theta[1] + s * q * se_th[1]) for s in (-1, 1)))
        if np.isfinite(d_star):
            a, b = theta
            # Delta method: gradients of d* and of gold at d* in (α, β).
            if form == "bon":
                grad = np.array([1 / (2 * b), -a / (2 * b**2)])
                g_grad = np.array([a / (2 * b), -(a**2) / (4 * b**2)])
            else:
                grad = d_star * np.array([1 / b, -a / b**2])
                g_grad = np.array([d_star, d_star * (1 - a / b)])  # gold at d* is β·d*
            s_d = float(np.sqrt(grad @ covariance @ grad))
            s_g = float(np.sqrt(g_grad @ covariance @ g_grad))
            peak_iv = (d_star - q * s_d, d_star + q * s_d)
            g_star = float(gold_at(theta, np.array(d_star)))
            gold_iv = (g_star - q * s_g, g_star + q * s_g)
        else:
            peak_iv = (np.inf, np.inf)
            gold_iv = (np.nan, np.nan)

    inside = d_lo < peak_iv[0] and peak_iv[1] < d_hi
    decline = _decline(x_d, y, d_star, level, boot=yb, se=se_kept,
                       sigma=float(np.sqrt(rss / (n - 2))) if n > 2 else np.inf,
                       dof=n - 2) if interior else None
    falls = decline is not None and decline.lo > 0
    reported = interior and better and inside and falls
    if not theta[1] > 0 or not np.isfinite(d_star):
        reason = "no peak: the fit is not concave (beta <= 0)"
    elif not interior:
        reason = (f"no peak: d* = {d_star:.3g} lies outside the fitted range "
                  f"[{d_lo:.3g}, {d_hi:.3g}]")
    elif not better:
        reason = (f"no peak: a monotone fit is not worse (AIC {aic_mono:.4g} vs "
                  f"{aic:.4g} for the peaked fit, margin {AIC_MARGIN:g})")
    elif not inside:
        reason = (f"no peak: the {level:.0%} interval of d* [{peak_iv[0]:.3g}, {peak_iv[1]:.3g}] "
                  f"leaves the fitted range [{d_lo:.3g}, {d_hi:.3g}]")
    elif not falls:
        assert decline is not None
        reason = (f"no peak: the data do not fall after d* = {d_star:.3g}: gold there minus "
                  f"gold at d = {d_hi:.3g} is {decline.value:.3g} "
                  f"[{decline.lo:.3g}, {decline.hi:.3g}]")
    else:
        reason = f"peak at d* = {d_star:.3g} in [{peak_iv[0]:.3g}, {peak_iv[1]:.3g}]"
    peak = peak_gold = None
    if reported:
        peak = Estimate(d_star, *peak_iv)
        peak_gold = Estimate(float(gold_at(theta, np.array(d_star))), *gold_iv)
    return GoldFit(
        form=form, alpha=alpha, beta=beta, interval_method=method, level=level,
        d_range=(d_lo, d_hi), n_points=n, aic=aic, aic_monotone=aic_mono, peak=peak,
        peak_gold=peak_gold, peak_reported=reported, reason=reason, peak_share=share,
        decline=decline, params_boot=params_boot, covariance=covariance, dof=dof,
    )


def gold_fit_curve(*, curve: GapCurve, form: str, d_max: float | None = None) -> GoldFit:
    """Fit a ``GapCurve``'s gold against d with bootstrap intervals from its replicates."""
    return gold_fit(
        d=curve.d.value, gold=curve.true.value, form=form, d_boot=curve.d.boot,
        gold_boot=curve.true.boot, d_max=d_max, level=curve.level,
    )


@dataclass(frozen=True)
class GoldBand:
    """A fitted gold curve and its pointwise interval on a d grid."""

    d: np.ndarray
    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    extrapolated: np.ndarray  # True where d lies outside the fitted range

    def as_dict(self) -> dict[str, list[Any]]:
        return {k: getattr(self, k).tolist() for k in ("d", "value", "lo", "hi", "extrapolated")}


def gold_band(*, fit: GoldFit, d: ArrayLike) -> GoldBand:
    """Evaluate a fit and its interval over d (inside or beyond the fitted range)."""
    grid = np.asarray(d, dtype=float).ravel()
    x = _design(fit.form, grid)
    value = x @ np.array([fit.alpha.value, fit.beta.value])
    if fit.params_boot is not None:
        lo, hi = _quantiles(fit.params_boot @ x.T, fit.level)
    else:
        assert fit.covariance is not None
        q = (stats.t.ppf((1 + fit.level) / 2, fit.dof) if fit.dof
             else stats.norm.ppf((1 + fit.level) / 2))
        s = np.sqrt(np.einsum("ni,ij,nj->n", x, fit.covariance, x))
        lo, hi = value - q * s, value + q * s
    extrapolated = (grid < fit.d_range[0]) | (grid > fit.d_range[1])
    return GoldBand(d=grid, value=value, lo=np.asarray(lo), hi=np.asarray(hi),
                    extrapolated=extrapolated)


@dataclass(frozen=True)
class Trend:
    """y = intercept + slope·x fitted by least squares, with intervals."""

    slope: Estimate
    intercept: Estimate
    interval_method: str  # "bootstrap" or "covariance"
    level: float
    n_points: int
    boot: np.ndarray | None = field(default=None, repr=False)  # (B, 2): slope, intercept
    covariance: np.ndarray | None = field(default=None, repr=False)  # slope, intercept
    dof: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"slope": self.slope.as_dict(), "intercept": self.intercept.as_dict(),
                "interval_method": self.interval_method, "level": self.level,
                "n_points": self.n_points}


def linear_trend(
    *,
    x: ArrayLike,
    y: ArrayLike,
    x_boot: ArrayLike | None = None,
    y_boot: ArrayLike | None = None,
    se: ArrayLike | None = None,
    x_max: float | None = None,
    level: float = DEFAULT_LEVEL,
) -> Trend:
    """Fit y = a + b·x (the gap against d); bootstrap intervals from replicates, else covariance."""
    xv = np.asarray(x, dtype=float).ravel()
    yv = np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(xv) & np.isfinite(yv)
    if x_max is not None:
        keep &= xv <= x_max
    n = int(keep.sum())
    if n < 3:
        raise ValueError("need at least 3 points")
    w = np.ones(n) if se is None else 1.0 / np.asarray(se, dtype=float).ravel()[keep] ** 2
    if not np.all(np.isfinite(w)):
        raise ValueError("standard errors must be positive")

    def design(v: np.ndarray) -> np.ndarray:
        return np.stack([v, np.ones_like(v)], axis=-1)

    xs = design(xv[keep])
    theta = _solve(xs, yv[keep], w)
    if (x_boot is None) != (y_boot is None):
        raise ValueError("give both x_boot and y_boot, or neither")
    if x_boot is not None and y_boot is not None:
        yb = np.asarray(y_boot, dtype=float)[:, keep]
        xb = np.broadcast_to(np.asarray(x_boot, dtype=float), np.shape(y_boot))[:, keep]
        tb = _solve(design(xb), yb, w)
        lo, hi = _quantiles(tb, level)
        return Trend(
            slope=Estimate(float(theta[0]), float(lo[0]), float(hi[0])),
            intercept=Estimate(float(theta[1]), float(lo[1]), float(hi[1])),
            interval_method="bootstrap", level=level, n_points=n, boot=tb,
        )
    inv = np.linalg.inv((xs.T * w) @ xs)
    if se is None:
        dof: int | None = n - 2
        cov = inv * float(_rss(xs, yv[keep], w, theta)) / (n - 2)
        q = float(stats.t.ppf((1 + level) / 2, n - 2))
    else:
        dof, cov = None, inv
        q = float(stats.norm.ppf((1 + level) / 2))
    s = np.sqrt(np.diag(cov))
    return Trend(
        slope=Estimate(float(theta[0]), float(theta[0] - q * s[0]), float(theta[0] + q * s[0])),
        intercept=Estimate(float(theta[1]), float(theta[1] - q * s[1]),
                           float(theta[1] + q * s[1])),
        interval_method="covariance", level=level, n_points=n, covariance=cov, dof=dof,
    )


def gap_trend(*, curve: GapCurve, d_max: float | None = None) -> Trend:
    """Fit a ``GapCurve``'s gap against d (slope and intercept) with bootstrap intervals."""
    return linear_trend(x=curve.d.value, y=curve.gap.value, x_boot=curve.d.boot,
                        y_boot=curve.gap.boot, x_max=d_max, level=curve.level)


@dataclass(frozen=True)
class TrendChange:
    """An arm's change against its baseline: arm − baseline, slope and intercept."""

    slope: Estimate
    intercept: Estimate
    interval_method: str

    def as_dict(self) -> dict[str, Any]:
        return {"slope": self.slope.as_dict(), "intercept": self.intercept.as_dict(),
                "interval_method": self.interval_method}


def trend_change(*, arm: Trend, baseline: Trend) -> TrendChange:
    """Return arm − baseline in slope and intercept with an interval at the arm's level.

    Bootstrap trends are differenced replicate by replicate (paired when they share prompts and
    seed); covariance trends treat the arms as independent. Mixing the two raises ValueError.
    """
    level = arm.level
    diff: Callable[[int], Estimate]
    if arm.boot is not None and baseline.boot is not None:
        if arm.boot.shape != baseline.boot.shape:
            raise ValueError("both trends need the same number of bootstrap replicates")
        delta = arm.boot - baseline.boot
        lo, hi = _quantiles(delta, level)
        est = np.array([arm.slope.value - baseline.slope.value,
                        arm.intercept.value - baseline.intercept.value])

        def diff(i: int) -> Estimate:
            return Estimate(float(est[i]), float(lo[i]), float(hi[i]))

        method = "bootstrap"
    elif arm.covariance is not None and baseline.covariance is not None:
        est = np.array([arm.slope.value - baseline.slope.value,
                        arm.intercept.value - baseline.intercept.value])
        s = np.sqrt(np.diag(arm.covariance) + np.diag(baseline.covariance))
        q = float(stats.norm.ppf((1 + level) / 2))

        def diff(i: int) -> Estimate:
            return Estimate(float(est[i]), float(est[i] - q * s[i]), float(est[i] + q * s[i]))

        method = "covariance"
    else:
        raise ValueError("both trends must have bootstrap replicates, or both a covariance")
    return TrendChange(slope=diff(0), intercept=diff(1), interval_method=method)
