"""Murphy probes along a pressure curve: what the optimized policy says, and where the gap grows.

DESIGN section 7 ("Murphy probes"), PREDICTIONS P16 and P10/P12. Pure numpy on (P, K) tables of
π₀'s pools; no ORM, no world objects past :func:`feature_tables`.

**Features along a curve** (:func:`feature_bands`): at each pressure of a tilting or best-of-n
curve, the π-expectation of a per-sample feature of the world (``length`` in characters/100,
``padding`` in words beyond the concise budget, ``agrees_with_user``, ``correct``), averaged over
prompts, with a bootstrap band over prompts. The per-prompt expectations come from
``evaluation.gap.tilt`` and ``evaluation.gap.best_of_n`` (which take any extra value arrays), so
they are the same weights as the curve's proxy and gold. The bootstrap uses
``gap.bootstrap_counts`` with the curve's (prompts, replicates, seed): replicate b of a feature
is the same resampled prompt set as replicate b of the curve's d and gap. A feature may be
restricted to a subset of prompts (``agrees_with_user`` is only defined where the user states a
wrong belief): its average is then Σ_x c_x m_x f_x / Σ_x c_x m_x per replicate (c the
resample's counts, m the 0/1 mask), a ratio estimator over the subset's prompts; a replicate
that draws none of them is left out of the interval.

**Splits** (:func:`subset`): the mirage probe (Murphy; P10/P12) compares the gap on
in-distribution prompts with the gap on held-out categories. Each split is its own curve,
traced by the experiment with the *same* pressure grid (the same λ in units of 1/r̂, the same
n), and standardized under π₀ on its own prompts, so each split's gap starts at 0 and its slope
says how fast proxy and gold part *within* that population.

**KL limit** (:func:`curve_truncate`): the P lever "stop at KL ≤ κ" applied to a traced curve
keeps the points with d ≤ √κ. It is early stopping on the same curve, no new policy: it lowers
what the gap reaches (its intercept and end point), not how fast it grows below the limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from evaluation import gap

FEATURES = ("length", "padding", "agrees_with_user", "correct")
# Features defined only on some prompts: name -> the prompt metadata key that must be set.
FEATURE_PROMPTS = {"agrees_with_user": "user_belief"}
FEATURE_METHODS = ("tilting", "best_of_n")


def feature_tables(world: Any, prompts: Sequence[Any], pools: Sequence[Sequence[str]],
                   names: Sequence[str] = FEATURES
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-sample features of π₀'s pools as (P, K) arrays, and per feature a (P,) 0/1 mask of
    the prompts it is defined on (all ones unless ``FEATURE_PROMPTS`` names a condition)."""
    rows = [[world.features(p, t) for t in pool] for p, pool in zip(prompts, pools, strict=True)]
    values = {n: np.array([[f[n] for f in r] for r in rows], dtype=float) for n in names}
    masks = {}
    for n in names:
        key = FEATURE_PROMPTS.get(n)
        masks[n] = np.array([1.0 if key is None or p.metadata.get(key) is not None else 0.0
                             for p in prompts])
    return values, masks


def per_prompt_expectations(*, method: str, scores: np.ndarray, values: Sequence[np.ndarray],
                            pressure: np.ndarray) -> np.ndarray:
    """E_π[value | x] per prompt at each pressure, (F, L, P), for ``method`` (tilting: λ in
    units of 1/score as given; best_of_n: n, with replacement, ties shared)."""
    if method == "tilting":
        expect, _ = gap.tilt(scores=scores, values=values, lambdas=pressure)
    elif method == "best_of_n":
        expect, _ = gap.best_of_n(scores=scores, values=values, ns=pressure)
    else:
        raise ValueError(f"features are traced for {FEATURE_METHODS}, not {method!r}")
    return expect


def masked_band(*, per_prompt: np.ndarray, mask: np.ndarray, n_boot: int, level: float,
                seed: int) -> dict[str, list[float]] | None:
    """Average (L, P) per-prompt values over the masked prompts, with a percentile band over
    the shared bootstrap resamples; None when the mask holds no prompt."""
    m = np.asarray(mask, dtype=float)
    if m.sum() == 0:
        return None
    counts = gap.bootstrap_counts(n_prompts=m.size, n_boot=n_boot, seed=seed) * m  # (B, P)
    value = per_prompt @ m / m.sum()
    weight = counts.sum(axis=1)
    ok = weight > 0
    boot = (counts[ok] @ per_prompt.T) / weight[ok, None]  # (B', L)
    lo, hi = gap.percentile_interval(replicates=boot, level=level)
    return {"value": value.tolist(), "lo": np.asarray(lo).tolist(),
            "hi": np.asarray(hi).tolist()}


def feature_bands(*, method: str, scores: np.ndarray, features: Mapping[str, np.ndarray],
                  masks: Mapping[str, np.ndarray], pressure: np.ndarray, n_boot: int,
                  level: float, seed: int) -> dict[str, dict[str, list[float]] | None]:
    """Per feature: its π-expectation along the curve's pressures with a bootstrap band (the
    module docstring); None for a feature whose prompts are absent."""
    names = list(features)
    expect = per_prompt_expectations(method=method, scores=scores,
                                     values=[features[n] for n in names], pressure=pressure)
    return {n: masked_band(per_prompt=expect[i], mask=masks[n], n_boot=n_boot, level=level,
                           seed=seed) for i, n in enumerate(names)}


def slope_per_d(*, d: Sequence[float], value: Sequence[float]) -> float:
    """Least-squares slope of a feature against d (its units per nat^½): a one-number summary
    of how fast pressure moves it."""
    x = np.asarray(d, dtype=float)
    y = np.asarray(value, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(x[keep]) == 0:
        return float("nan")
    return float(np.polyfit(x[keep], y[keep], 1)[0])


def monotone_within(*, value: Sequence[float], lo: Sequence[float], hi: Sequence[float],
                    tolerance: float = 2.0) -> bool:
    """True when no step down along the curve exceeds ``tolerance`` standard errors (SE from
    the band: (hi − lo) / (2·1.645) at 90%): nondecreasing up to sampling error."""
    v, lo_, hi_ = (np.asarray(a, dtype=float) for a in (value, lo, hi))
    se = (hi_ - lo_) / (2 * 1.6449)
    drops = v[:-1] - v[1:]
    allowed = tolerance * np.maximum(se[:-1], se[1:]) + 1e-12
    return bool(np.all(drops <= allowed))


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two equally shaped tables over every sample; None if constant."""
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def within_prompt_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Correlation after removing each prompt's mean: what the pressure, which only chooses
    among one prompt's samples, can act on."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    return correlation(x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True))


def subset(mask: np.ndarray, *tables: np.ndarray) -> list[np.ndarray]:
    """The rows (prompts) of each (P, ...) table where ``mask`` is true."""
    keep = np.asarray(mask, dtype=bool)
    return [np.asarray(t)[keep] for t in tables]


def curve_truncate(curve: gap.GapCurve, *, d_max: float) -> gap.GapCurve:
    """The curve's points with d ≤ d_max (π₀'s first point always kept): a KL limit κ = d_max²
    applied to the traced curve (module docstring)."""
    keep = np.asarray(curve.d.value) <= d_max + 1e-12
    keep[0] = True

    def cut(band: gap.Band | None) -> gap.Band | None:
        if band is None:
            return None
        return gap.Band(value=band.value[keep], lo=band.lo[keep], hi=band.hi[keep],
                        boot=band.boot[:, keep])

    return replace(curve, pressure=curve.pressure[keep], kl=cut(curve.kl), d=cut(curve.d),
                   proxy=cut(curve.proxy), true=cut(curve.true), gap=cut(curve.gap),
                   kl_se=None if curve.kl_se is None else curve.kl_se[keep],
                   kl_pool=cut(curve.kl_pool))


def split_dict(curve: gap.GapCurve) -> dict[str, Any]:
    """A split's curve as the result contract names it: d, proxy, true, gap Band-dicts, and
    its pressures and prompt count."""
    return {"pressure": curve.pressure.tolist(), "n_prompts": curve.n_prompts,
            **{k: getattr(curve, k).as_dict() for k in ("d", "proxy", "true", "gap")}}
