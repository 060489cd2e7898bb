"""Acceptance tests for PREDICTIONS P3, P9 and P18 on a model-B world with known truth (no DB).

**The world (model B: a rare region the proxy over-rates, where true utility is low).** Each
π₀ reply has content quality U ~ N(0, 1). A rare 1% of replies use an exploit (H = 1; a reward-
model blind spot such as a template it over-rates): their true utility is U − 2 (the exploit
costs two SDs of quality) and the proxy adds a bonus of 3 (as large as the best ordinary replies'
lead). Every reply's proxy also has regressional error N(0, 1):

    r̂ = U + ε + 3H,   r* = U − 2H,   ε ~ N(0, 1),  H ~ Bernoulli(0.01)

Why these numbers (chosen from the physics, not to make a fit pass): ε ~ N(0, 1) makes the
proxy's correlation with U on ordinary replies 0.71 (pairwise accuracy 75%, near the ~70% RM
realism default); the exploit is rare under π₀ (the "extremal" component of Gao et al. §1 /
Manheim & Garrabrant: the proxy's error is large only in a rare region, so only strong
optimisation finds it); with a bonus of 3 exploits and ordinary replies are equally dense at
r̂ ≈ 4.6, the typical best of n ≈ 500 (d ≈ 2.3), inside Gao's range n ≤ 60,000 (d ≤ √10), so
"is there an interior peak, and does a low-KL fit see the fall coming" is asked where the
data can answer it. The exact curves of three other model-B settings (5% exploits with bonus
and cost 3, the world of ``test_fits``; a bonus of 2; a variable bonus N(1, 2²)) misfit the
Gao form the same way: the finding below is not this world's accident.

**Truth.** Best-of-n of the continuous distribution is exact by quadrature:
E_n[r*] = ∫ m(s) n F(s)^{n−1} f(s) ds, with f, F the two-component Gaussian mixture of r̂ and
m(s) = E[r* | r̂ = s] in closed form; standardized by r*'s exact mean and SD.

**Findings (measured here, seed 0; see the report in the tests' docstrings):** under model B the
best-of-n gold vs d is *not* a parabola: it rises, falls while exploits take over the top of r̂
(a logistic takeover in r̂, hence a sigmoid-shaped fall in d), bottoms out and rises again,
because an exploit's own proxy still tracks its U. Gao's d(α − βd) fitted to all points puts
d* a little below the true argmax; fitted on d ≤ √6 it misplaces d* clearly and predicts the
gold at √10 far below the truth, outside its band: the band carries sampling error only, and
the form's misfit dominates (the same lesson as fits.py's tilting note, 0.67/0.46 vs 0.51).
P9 (``evaluation/pool_rl.py``): the KL penalty moves along one curve under natural-gradient
RL; under plain policy gradient it does for the gap but not for the gold (see the test).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import optimize, stats

from evaluation import fits, gap, pool_rl

P_HACK, BONUS, COST, NOISE = 0.01, 3.0, 2.0, 1.0
SQRT6, SQRT10 = math.sqrt(6.0), math.sqrt(10.0)


def _world(seed: int, prompts: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """π₀ pools (P, K) of the model-B world: proxy r̂ and true utility r*."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(prompts, k))
    hack = rng.random((prompts, k)) < P_HACK
    return u + NOISE * rng.normal(size=u.shape) + BONUS * hack, u - COST * hack


def _exact_bon_gold(ns: np.ndarray) -> np.ndarray:
    """Standardized E[r*] of best-of-n on the continuous world, by quadrature over r̂ (n real)."""
    v0, sd0 = 1 + NOISE**2, math.sqrt(1 + NOISE**2)
    s = np.linspace(-8.0, 14.0, 22_001)
    f0 = (1 - P_HACK) * stats.norm.pdf(s, 0.0, sd0)
    f1 = P_HACK * stats.norm.pdf(s, BONUS, sd0)
    cdf = (1 - P_HACK) * stats.norm.cdf(s, 0.0, sd0) + P_HACK * stats.norm.cdf(s, BONUS, sd0)
    m = (f0 * s / v0 + f1 * ((s - BONUS) / v0 - COST)) / (f0 + f1)  # E[r* | r̂ = s]
    log_cdf, log_f = np.log(np.maximum(cdf, 1e-300)), np.log(f0 + f1)
    out = np.empty(len(ns))
    for i, n in enumerate(ns):
        lw = (n - 1) * log_cdf + log_f
        w = np.exp(lw - lw.max())
        out[i] = (w @ m) / w.sum()
    mean, sd = -P_HACK * COST, math.sqrt(1 + COST**2 * P_HACK * (1 - P_HACK))
    return (out - mean) / sd


@functools.lru_cache(maxsize=1)
def _p3_curve() -> gap.GapCurve:
    """Best-of-n to n = 60,000 on 16 prompts × 100,000 pooled samples (with replacement)."""
    proxy, true = _world(seed=0, prompts=16, k=100_000)
    ns = gap.n_grid(n_max=60_000, num=16)
    return gap.best_of_n_curve(proxy=proxy, true=true, ns=ns, n_boot=300, seed=0)


def test_p3_interior_peak_and_extrapolation():
    """P3 on model B. Holds: an interior maximum of the observed gold; the all-points fit
    d(α − βd) has α, β > 0, reports a peak, and puts d* within 0.15 of the true argmax.
    Findings (asserted as measured): the true curve is not concave on [0, √10] (it bottoms out
    and rises again); the all-points d* lies *below* the true argmax; the fit on d ≤ √6
    misplaces d* (its interval excludes the truth) and predicts gold at √10 far below both the
    truth and the observation, outside its extrapolation band.

    Measured (seed 0; 16 prompts × 100,000 samples, 16 n from 1 to 60,000, 300 replicates):
    true argmax d = 1.573 (n ≈ 31), gold there 1.02, minimum −0.02 at d = 2.73, 0.27 at √10.
    All points: α = 1.06 [0.98, 1.14], β = 0.355 [0.314, 0.396], d* = 1.50 [1.45, 1.56].
    d ≤ √6: α = 1.41 [1.39, 1.43], β = 0.524 [0.512, 0.538], d* = 1.34 [1.33, 1.36];
    at d = √10 it predicts −0.79 [−0.87, −0.72]; true +0.27; observed +0.33 [0.06, 0.62].
    (RL form d(α − β log d): d* = 1.13 [1.08, 1.19] on all points; on d ≤ √6 it predicts
    0.035 [−0.022, 0.092] at √10, closer, still outside.) Seeds 0-3: the all-points d* was
    1.44-1.54 (its interval covered 1.57 once in four), the d ≤ √6 band never covered. The
    exact curve at the same 16 n, fitted without noise, gives d* = 1.50 (all) and 1.35
    (d ≤ √6, predicting −0.78 at √10): the error is the form's misfit, not sampling.
    """
    curve = _p3_curve()
    d, gold = curve.d.value, curve.true.value
    assert curve.kl_pool is not None and curve.kl_pool.value[-1] > 0.95 * curve.kl.value[-1]
    dense_n = np.geomspace(1.0, 60_000.0, 80)
    dense_d = np.sqrt(gap.kl_best_of_n(dense_n))
    truth = _exact_bon_gold(dense_n)
    best = optimize.minimize_scalar(lambda x: -_exact_bon_gold(np.array([math.exp(x)]))[0],
                                    bounds=(math.log(2.0), math.log(1000.0)), method="bounded",
                                    options={"xatol": 1e-4})
    true_argmax = float(np.sqrt(gap.kl_best_of_n(math.exp(best.x))))
    assert -best.fun >= truth.max() - 1e-9
    for n, reps in ((30, 20_000), (1_000, 1_000)):  # the quadrature against direct simulation
        proxy_n, true_n = _world(seed=n, prompts=reps, k=n)
        kept = true_n[np.arange(reps), proxy_n.argmax(axis=1)]
        z = (kept + P_HACK * COST) / math.sqrt(1 + COST**2 * P_HACK * (1 - P_HACK))
        assert abs(z.mean() - _exact_bon_gold(np.array([float(n)]))[0]) < 4 * z.std() / reps**0.5
    assert 1.4 < true_argmax < 1.75  # interior, and well below √6

    # Interior maximum in the data: the top beats both ends by more than its interval.
    top = int(gold.argmax())
    assert 0 < top < d.size - 1
    assert curve.true.lo[top] > curve.true.hi[-1] and curve.true.lo[top] > 0.9

    # Finding: the true curve is not concave: it bottoms out after the takeover and rises again.
    low = int(truth.argmin())
    assert dense_d[low] < SQRT10 - 0.2 and truth[-1] > truth[low] + 0.2

    full = fits.gold_fit_curve(curve=curve, form="bon")
    assert full.alpha.lo > 0 and full.beta.lo > 0
    assert full.peak_reported and full.peak is not None, full.reason
    assert abs(full.peak.value - true_argmax) < 0.15
    assert full.peak.value < true_argmax  # finding: biased low (misfit, not sampling error)

    low_kl = fits.gold_fit_curve(curve=curve, form="bon", d_max=SQRT6)
    assert low_kl.d_range[1] <= SQRT6 and low_kl.alpha.lo > 0 and low_kl.beta.lo > 0
    assert low_kl.peak is not None and low_kl.peak.hi < true_argmax  # finding: misplaced d*
    band = fits.gold_band(fit=low_kl, d=[SQRT10])
    true_at_10 = float(_exact_bon_gold(np.array([60_000.0]))[0])
    assert band.extrapolated[0]
    # Finding: the low-KL prediction at √10 misses, far outside its band.
    assert band.hi[0] < true_at_10 - 0.5 and band.hi[0] < curve.true.lo[-1]
    assert curve.true.lo[-1] - 0.3 < true_at_10 < curve.true.hi[-1] + 0.3  # the data do see it
    # The miss is the form's, not sampling error: the exact curve at the same n fits alike.
    exact = fits.gold_fit(d=d, gold=_exact_bon_gold(curve.pressure), form="bon", d_max=SQRT6)
    assert abs(exact.alpha.value - low_kl.alpha.value) < 0.05
    predicted = fits.gold_model(form="bon", d=SQRT10, alpha=exact.alpha.value,
                                beta=exact.beta.value)
    assert predicted < true_at_10 - 0.5


BETAS = (1.0, 0.5, 0.25, 0.125, 0.0625)


@functools.lru_cache(maxsize=1)
def _p9_runs() -> tuple[np.ndarray, np.ndarray, dict[str, list[pool_rl.Trajectory]]]:
    """Model-B pools (100 prompts × 128 samples, r̂ standardized) and RL runs for every β."""
    proxy, true = _world(seed=1, prompts=100, k=128)
    proxy = gap.standardize(values=proxy, reference=proxy)
    runs = {
        "npg": pool_rl.train(proxy=proxy, true=true, betas=BETAS, steps=200, lr=0.02,
                             method="npg", record_every=2),
        "pg": pool_rl.train(proxy=proxy, true=true, betas=BETAS, steps=800, lr=0.005,
                            method="pg", record_every=2),
    }
    return proxy, true, runs


def test_pool_rl_gradient_is_exact_and_long_runs_reach_the_tilt():
    """The PG step is the exact gradient of E_π[r̂] − β·KL (finite differences), and both
    methods converge to the tilt at λ = 1/β."""
    rng = np.random.default_rng(3)
    proxy, true = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    beta, k = 0.7, proxy.shape[1]

    def softmax(theta: np.ndarray) -> np.ndarray:
        pi = np.exp(theta - theta.max(axis=1, keepdims=True))
        return pi / pi.sum(axis=1, keepdims=True)

    def objective(theta: np.ndarray) -> np.ndarray:
        pi = softmax(theta)
        return (pi * proxy).sum(axis=1) - beta * (pi * np.log(k * pi)).sum(axis=1)

    def fd_grad(theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        cols = []
        for j in range(k):
            e = np.zeros_like(theta)
            e[:, j] = eps
            cols.append((objective(theta + e) - objective(theta - e)) / (2 * eps))
        return np.stack(cols, axis=1)

    # Two PG steps from θ = 0 (the second away from π₀, where the penalty's gradient is not 0)
    # are θ ← θ + lr·K·∇J by finite differences.
    lr = 0.05
    two = pool_rl.train(proxy=proxy, true=true, betas=[beta], steps=2, lr=lr)[0]
    theta = np.zeros_like(proxy)
    for _ in range(2):
        theta = theta + lr * k * fd_grad(theta)
    pi2 = softmax(theta)
    np.testing.assert_allclose(two.proxy[-1], (pi2 * proxy).sum(axis=1), atol=1e-8)
    np.testing.assert_allclose(two.kl[-1], (pi2 * np.log(k * pi2)).sum(axis=1), atol=1e-8)
    (e_t,), kl = gap.tilt(scores=proxy, values=[true], lambdas=[1 / beta])
    # NPG contracts geometrically; softmax PG converges only at rate O(1/t) (Mei et al. 2020).
    for method, lr, steps, tol in (("pg", 0.2, 4000, 1e-3), ("npg", 0.2, 400, 1e-9)):
        run = pool_rl.train(proxy=proxy, true=true, betas=[beta], steps=steps, lr=lr,
                            method=method, record_every=steps)[0]
        np.testing.assert_allclose(run.kl[-1], kl[0], atol=tol)
        np.testing.assert_allclose(run.true[-1], e_t[0], atol=tol)
    with pytest.raises(ValueError):
        pool_rl.train(proxy=proxy, true=true, betas=[0.0], steps=1, lr=0.1)
    with pytest.raises(ValueError):  # NPG past ηβ = 1 would oscillate around the tilt
        pool_rl.train(proxy=proxy, true=true, betas=[beta], steps=1, lr=2.0, method="npg")


def _upward(curve: gap.GapCurve, band: str, grid: np.ndarray) -> np.ndarray:
    """Interpolate a trajectory's value (and its replicates) at d on its way up (first passage)."""
    top = int(curve.d.value.argmax())
    x, b = np.maximum.accumulate(curve.d.value[: top + 1]), getattr(curve, band)
    rows = np.vstack([b.value[None, : top + 1], b.boot[:, : top + 1]])
    return np.stack([np.interp(grid, x, r) for r in rows])


def test_p9_kl_penalty_moves_along_the_curve():
    """P9 with RL on π₀'s pools, β from 1 to 1/16, a fixed step budget.

    Holds for both updates: the final KL rises as β falls (the penalty sets where training
    stops). Natural gradient (mirror descent): every policy on every trajectory is a tilt, so
    at matched KL the gold and the gap agree across β to rounding; the penalty moves along the
    one tilting curve, exactly as P9 says. Plain policy gradient (the expected PPO/RLOO update
    of a tabular softmax): the endpoints land on the tilting curve (within its band), but the
    way there is not that curve. Finding: with PG, the penalty is not early stopping. A run
    with a large β that has settled at its KL has a much higher gold than a small-β run passing
    the same KL on its way up (PG concentrates on each pool's current leaders, rich-get-richer,
    and in this world the leaders are often exploits), far outside the bootstrap band; the gap
    differs less, because proxy and gold fall together.

    Measured (seed 1; 100 prompts × 128 samples; β = 1 … 1/16): final KL, NPG 0.51, 1.51,
    2.51, 3.04, 3.29; PG 0.51, 1.86, 3.90, 4.66, 4.79 nats. Gold at matched KL, largest
    difference from the β = 1/16 run: NPG < 0.001 (interpolation); PG 0.33: β = 1 settled at
    d = 0.71 has gold 0.55, the β = 1/16 run passes d = 0.71 at 0.22 (6.8 × the band's half-
    width 0.049); β = 1/2 at d = 1.36: 0.78 vs 0.45 (2.5 ×). Gap at matched KL: PG's largest
    difference 0.07, 0.46 × its half-width. Seeds 0, 2, 3 alike (Δgold 0.30-0.40, gap < 0.7 ×).
    """
    proxy, true, runs = _p9_runs()
    report = {}
    for method, trs in runs.items():
        final = np.array([tr.final_kl for tr in trs])
        assert np.all(np.diff(final) > 0.05), (method, final)  # β falls → training stops later
        curves = [pool_rl.trajectory_curve(trajectory=tr, proxy=proxy, true=true, n_boot=300,
                                           seed=0) for tr in trs]
        sweep = pool_rl.sweep_curve(trajectories=trs, proxy=proxy, true=true, n_boot=300, seed=0)
        np.testing.assert_allclose(sweep.kl.value, final)
        assert np.all(np.diff(sweep.d.value) > 0)
        # Compare every trajectory with the lowest-β one (it passes every smaller KL) on the
        # way up, and each settled endpoint with the point where that run passes the same KL.
        base = curves[-1]
        deltas, ratios, gap_ratios = [], [], []
        for c in curves[:-1]:
            grid = np.append(np.linspace(0.05, c.d.value.max(), 25), c.d.value[-1])
            for band, out in (("true", ratios), ("gap", gap_ratios)):
                v_c, v_b = _upward(c, band, grid), _upward(base, band, grid)
                v_c[0, -1] = getattr(c, band).value[-1]  # the settled endpoint, not its passage
                v_c[1:, -1] = getattr(c, band).boot[:, -1]
                lo, hi = np.quantile(v_b[1:], [0.05, 0.95], axis=0)
                diff = np.abs(v_c[0] - v_b[0])
                out.append((diff / np.maximum((hi - lo) / 2, 1e-12)).max())
                if band == "true":
                    deltas.append(diff.max())
        report[method] = (final, max(deltas), max(ratios), max(gap_ratios))
        tilt = gap.tilting_curve(proxy=proxy, true=true, lambdas=np.geomspace(1e-2, 1e2, 400),
                                 n_boot=300, seed=0)
        on_tilt = np.interp(sweep.d.value, tilt.d.value, tilt.true.value)
        half = np.interp(sweep.d.value, tilt.d.value, (tilt.true.hi - tilt.true.lo) / 2)
        assert np.all(np.abs(sweep.true.value - on_tilt) <= half), method  # endpoints on it

    final, delta, ratio, gap_ratio = report["npg"]
    assert delta < 0.01 and ratio < 0.1 and gap_ratio < 0.1, report["npg"]  # interpolation only
    for tr in runs["npg"]:  # every NPG policy is exactly the tilt at λ_t = (1 − (1 − ηβ)^t)/β
        lam = -np.expm1(tr.steps * np.log1p(-tr.lr * tr.beta)) / tr.beta
        (e_t,), kl = gap.tilt(scores=proxy, values=[true], lambdas=lam)
        np.testing.assert_allclose(tr.true, e_t, atol=1e-9)
        np.testing.assert_allclose(tr.kl, kl, atol=1e-9)
    final, delta, ratio, gap_ratio = report["pg"]
    assert delta > 0.25 and ratio > 2, report["pg"]  # finding: the penalty is not early stopping
    assert gap_ratio < 1, report["pg"]  # ... but the gap at a given KL is unchanged


def test_p18_best_of_n_reaches_higher_gold_than_rl_at_equal_kl():
    """P18, measured on the P9 pools with paired replicates (same prompts, same seed).

    Best-of-n (d from log n − (n−1)/n, an upper bound on its KL, which only flatters RL) against
    two RL paths: the KL-penalized optimum (the tilt, where NPG runs and every settled run ends)
    and plain PG from π₀ with a weak penalty (β = 1/16, the path "early stopping" samples).
    Holds: for d from 0.75 to 1.75, best-of-n's gold is above both, with paired 90% intervals
    above 0; above PG's path at every d from 0.25 to 2. Near d = √log K both best-of-n and the
    tilt converge on each pool's top sample, so there the difference fades (on another seed
    its interval reached below 0 at d = 2). Finding: at the smallest d (0.25) the tilt is
    slightly ahead of best-of-n (−0.010 [−0.013, −0.006]); "early on" means d ≳ 0.5 here.

    Measured (seed 1), gold at d = 0.25, 0.5, 1.0, 1.5, 2.0: best-of-n 0.21, 0.42, 0.81, 1.06,
    1.08; tilt 0.22, 0.42, 0.70, 0.87, 1.01; PG path 0.17, 0.21, 0.22, 0.57, 0.94.
    """
    proxy, true, runs = _p9_runs()
    bon = gap.best_of_n_curve(proxy=proxy, true=true, ns=np.arange(1, 129), n_boot=300, seed=0)
    tilt = gap.tilting_curve(proxy=proxy, true=true, lambdas=np.geomspace(1e-2, 1e2, 400),
                             n_boot=300, seed=0)
    pg = pool_rl.trajectory_curve(trajectory=runs["pg"][-1], proxy=proxy, true=true, n_boot=300,
                                  seed=0)
    grid = np.array([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    b, t, p = (_upward(c, "true", grid) for c in (bon, tilt, pg))
    vs_tilt, vs_pg = b - t, b - p
    lo_t = np.quantile(vs_tilt[1:], 0.05, axis=0)
    hi_t = np.quantile(vs_tilt[1:], 0.95, axis=0)
    lo_p = np.quantile(vs_pg[1:], 0.05, axis=0)
    assert np.all(lo_t[2:7] > 0), (vs_tilt[0], lo_t)  # d = 0.75 … 1.75
    assert np.all(lo_p > 0), (vs_pg[0], lo_p)
    assert hi_t[0] < 0, (vs_tilt[0, 0], hi_t[0])  # finding: at d = 0.25 the tilt is ahead
