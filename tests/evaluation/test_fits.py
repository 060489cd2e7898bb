"""Gao et al. fits, peak reporting and gap trends on curves with known truth (no database)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evaluation import fits, gap

D = np.linspace(0.1, 3.0, 30)


def _noisy(y: np.ndarray, sd: float, seed: int, reps: int = 0) -> tuple[np.ndarray, ...]:
    """An observed curve, and (if reps) replicates that scatter around it as a bootstrap would."""
    rng = np.random.default_rng(seed)
    obs = y + rng.normal(scale=sd, size=y.shape)
    if not reps:
        return (obs,)
    return obs, obs + rng.normal(scale=sd, size=(reps, y.size))


@pytest.mark.parametrize(("form", "alpha", "beta"), [("bon", 1.2, 0.3), ("rl", 1.0, 0.4)])
def test_peak_location_is_the_argmax_of_the_form(form, alpha, beta):
    """d* = α/(2β) for d(α − βd) and exp(α/β − 1) for d(α − β log d): the dense-grid argmax."""
    grid = np.linspace(1e-4, 20, 400_001)
    y = fits.gold_model(form=form, d=grid, alpha=alpha, beta=beta)
    d_star = float(fits.peak_location(form=form, alpha=alpha, beta=beta))
    expected = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    assert d_star == pytest.approx(expected)
    assert grid[y.argmax()] == pytest.approx(d_star, abs=1e-3)
    assert math.isinf(float(fits.peak_location(form=form, alpha=alpha, beta=-beta)))


@pytest.mark.parametrize(("form", "alpha", "beta"), [("bon", 1.0, 0.25), ("rl", 0.8, 0.5)])
def test_covariance_intervals_recover_alpha_beta_at_about_the_nominal_rate(form, alpha, beta):
    """Independent noisy points: α and β fall inside their 90% intervals ~90% of the time."""
    truth = fits.gold_model(form=form, d=D, alpha=alpha, beta=beta)
    hits = np.zeros(2)
    runs = 300
    for seed in range(runs):
        (obs,) = _noisy(truth, 0.05, seed)
        fit = fits.gold_fit(d=D, gold=obs, form=form)
        hits += [fit.alpha.lo <= alpha <= fit.alpha.hi, fit.beta.lo <= beta <= fit.beta.hi]
    assert fit.interval_method == "covariance"
    assert np.all((hits / runs >= 0.85) & (hits / runs <= 0.95)), hits / runs


@pytest.mark.parametrize(("form", "alpha", "beta"), [("bon", 1.0, 0.25), ("rl", 0.8, 0.5)])
def test_bootstrap_intervals_recover_alpha_beta_and_the_peak(form, alpha, beta):
    """Refitting replicates brackets the true α, β and d*; the peak is reported inside."""
    truth = fits.gold_model(form=form, d=D, alpha=alpha, beta=beta)
    obs, boot = _noisy(truth, 0.03, seed=4, reps=400)
    fit = fits.gold_fit(d=D, gold=obs, form=form, d_boot=D, gold_boot=boot)
    assert fit.interval_method == "bootstrap"
    assert fit.alpha.lo <= alpha <= fit.alpha.hi and fit.beta.lo <= beta <= fit.beta.hi
    d_star = float(fits.peak_location(form=form, alpha=alpha, beta=beta))
    assert fit.peak_reported and fit.peak is not None and fit.peak_gold is not None
    assert fit.peak.lo <= d_star <= fit.peak.hi
    assert fit.peak.lo <= fit.peak.value <= fit.peak.hi
    gold_star = float(fits.gold_model(form=form, d=d_star, alpha=alpha, beta=beta))
    assert fit.peak_gold.lo <= gold_star <= fit.peak_gold.hi
    assert fit.peak_share is not None and fit.peak_share >= 0.95
    json.dumps(fit.as_dict())


def test_peaked_curve_with_covariance_intervals_reports_the_peak():
    """Without replicates the delta-method interval of d* covers the truth."""
    truth = fits.gold_model(form="bon", d=D, alpha=1.0, beta=0.3)
    (obs,) = _noisy(truth, 0.03, seed=9)
    fit = fits.gold_fit(d=D, gold=obs, form="bon")
    assert fit.peak_reported and fit.peak is not None
    assert fit.peak.lo <= 1.0 / 0.6 <= fit.peak.hi
    assert fit.decline is not None and fit.decline.lo > 0  # rule 4 from the residual SD


@pytest.mark.parametrize("form", fits.FORMS)
@pytest.mark.parametrize("with_boot", [False, True])
def test_monotone_line_reports_no_peak(form, with_boot):
    """Gold rising linearly in d (pure independent noise, P4) shows no peak."""
    truth = 0.8 * D
    obs, boot = _noisy(truth, 0.05, seed=2, reps=300)
    kwargs = {"d_boot": D, "gold_boot": boot} if with_boot else {}
    fit = fits.gold_fit(d=D, gold=obs, form=form, **kwargs)
    assert not fit.peak_reported and fit.peak is None
    assert fit.reason.startswith("no peak")


@pytest.mark.parametrize("form", fits.FORMS)
def test_saturating_curve_is_not_a_false_peak(form):
    """Gold that rises and levels off fits a concave form with an interior d*, but a monotone
    fit is not worse, so no peak is reported."""
    d = np.linspace(0.1, 4.0, 40)
    obs, boot = _noisy(1 - np.exp(-d), 0.01, seed=0, reps=300)
    fit = fits.gold_fit(d=d, gold=obs, form=form, d_boot=d, gold_boot=boot)
    naive = float(fits.peak_location(form=form, alpha=fit.alpha.value, beta=fit.beta.value))
    assert 0.1 < naive < 4.0  # the form alone would have called this a peak
    assert not fit.peak_reported
    assert "monotone fit is not worse" in fit.reason
    assert fit.aic_monotone < fit.aic


def test_tilting_on_a_saturated_two_level_utility_is_not_a_false_peak():
    """P4, rule 4: r* ∈ {1, −0.5} (right or wrong, as in the arithmetic world), r̂ = r* +
    N(0, 0.5²). Tilting's points crowd near d = √log K where gold has levelled off, and there
    d(α − βd) beats the monotone family by more than 2 AIC units with a narrow interior d*
    (rules 1-3 passed: a peak was reported on every seed tried). Gold does not fall after d*,
    so no peak is reported."""
    rng = np.random.default_rng(0)
    true = np.where(rng.random((400, 16)) < 0.5, 1.0, -0.5)
    proxy = true + 0.5 * rng.normal(size=true.shape)
    curve = gap.tilting_curve(proxy=proxy, true=true, n_boot=300, seed=0)
    fit = fits.gold_fit_curve(curve=curve, form="bon")
    lo, hi = fit.d_range
    assert fit.aic_monotone - fit.aic > fits.AIC_MARGIN  # the shape alone prefers a peak
    naive = float(fits.peak_location(form="bon", alpha=fit.alpha.value, beta=fit.beta.value))
    assert lo < naive < hi
    assert not fit.peak_reported and fit.peak is None
    assert fit.reason.startswith("no peak: the data do not fall after d*"), fit.reason
    assert fit.decline is not None and fit.decline.lo <= 0
    assert json.loads(json.dumps(fit.as_dict()))["decline"]["lo"] <= 0


def test_low_kl_fit_extrapolates_within_its_band():
    """A fit on d ≤ √6 predicts the gold at d ≈ √10 inside its band (P3); the band widens
    beyond the fitted range and marks those points as extrapolated."""
    d = np.linspace(0.1, math.sqrt(10), 40)
    truth = fits.gold_model(form="bon", d=d, alpha=1.0, beta=0.2)
    obs, boot = _noisy(truth, 0.02, seed=5, reps=400)
    fit = fits.gold_fit(d=d, gold=obs, form="bon", d_boot=d, gold_boot=boot, d_max=math.sqrt(6))
    assert fit.d_range[1] <= math.sqrt(6)
    grid = np.array([1.0, math.sqrt(10)])
    for f in (fit, fits.gold_fit(d=d, gold=obs, form="bon", d_max=math.sqrt(6))):
        band = fits.gold_band(fit=f, d=grid)
        target = float(fits.gold_model(form="bon", d=grid[1], alpha=1.0, beta=0.2))
        assert band.lo[1] <= target <= band.hi[1]
        assert band.hi[1] - band.lo[1] > band.hi[0] - band.lo[0]
        assert band.extrapolated.tolist() == [False, True]
        json.dumps(band.as_dict())


def test_linear_trend_recovers_slope_and_intercept_and_trend_change_sees_a_lever():
    """Gap = a + b·d: both intervals cover the truth; an arm with a lower slope shows a slope
    change whose interval excludes 0, and an identical arm one that includes 0."""
    base = 0.1 + 0.5 * D
    obs, boot = _noisy(base, 0.03, seed=1, reps=400)
    trend = fits.linear_trend(x=D, y=obs, x_boot=D, y_boot=boot)
    assert trend.slope.lo <= 0.5 <= trend.slope.hi
    assert trend.intercept.lo <= 0.1 <= trend.intercept.hi
    arm_obs, arm_boot = _noisy(0.1 + 0.3 * D, 0.03, seed=2, reps=400)
    arm = fits.linear_trend(x=D, y=arm_obs, x_boot=D, y_boot=arm_boot)
    change = fits.trend_change(arm=arm, baseline=trend)
    assert change.slope.hi < 0 and change.slope.lo <= -0.2 <= change.slope.hi
    assert change.intercept.lo <= 0 <= change.intercept.hi
    covered = 0
    for seed in range(100, 300):  # no lever: the change's interval covers 0 ~90% of the time
        same_obs, same_boot = _noisy(base, 0.03, seed=seed, reps=400)
        same = fits.linear_trend(x=D, y=same_obs, x_boot=D, y_boot=same_boot)
        delta = fits.trend_change(arm=same, baseline=trend).slope
        covered += delta.lo <= 0 <= delta.hi
    assert 0.8 <= covered / 200 <= 0.97
    cov = fits.linear_trend(x=D, y=obs)
    assert cov.interval_method == "covariance" and cov.slope.lo <= 0.5 <= cov.slope.hi
    with pytest.raises(ValueError):
        fits.trend_change(arm=cov, baseline=trend)
    json.dumps(change.as_dict())


def _pools(seed: int, hack: float, prompts: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """π₀ pools where r̂ = r* + independent noise, plus (if hack) a rare exploitable feature
    that r̂ rewards and r* punishes (Gao's extremal Goodhart)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(prompts, 16))
    h = hack * (rng.random(u.shape) < 0.05)
    return u + rng.normal(size=u.shape) + h, u - h


def test_tilting_with_independent_noise_shows_no_peak_and_a_rising_gap():
    """P4 on the pure estimators: gold rises, no peak in either form; the gap's slope > 0 (P5)."""
    proxy, true = _pools(seed=0, hack=0.0)
    curve = gap.tilting_curve(proxy=proxy, true=true, n_boot=300)
    for form in fits.FORMS:
        assert not fits.gold_fit_curve(curve=curve, form=form).peak_reported
    assert not fits.gold_fit_curve(
        curve=gap.best_of_n_curve(proxy=proxy, true=true, n_boot=300), form="bon"
    ).peak_reported
    assert fits.gap_trend(curve=curve).slope.lo > 0


def test_an_exploitable_bias_shows_a_peak_and_best_of_n_locates_it():
    """P3 on the pure estimators. Tilting: gold rises then falls and both forms report a peak
    inside the observed range. Best-of-n with Gao's best-of-n form: the d* interval from 1,500
    prompts covers the d* that the same fit finds on 40,000 prompts."""
    proxy, true = _pools(seed=1, hack=3.0)
    curve = gap.tilting_curve(proxy=proxy, true=true, n_boot=300)
    assert curve.true.value[-1] < curve.true.value.max() - 0.2
    for form in fits.FORMS:
        fit = fits.gold_fit_curve(curve=curve, form=form)
        assert fit.peak_reported and fit.peak is not None
        assert fit.d_range[0] < fit.peak.lo <= fit.peak.value <= fit.peak.hi < fit.d_range[1]
        assert fit.decline is not None and fit.decline.lo > 0  # rule 4: the data fall
    ns = np.arange(1, 17)
    fit = fits.gold_fit_curve(
        curve=gap.best_of_n_curve(proxy=proxy, true=true, ns=ns, n_boot=300), form="bon")
    big_proxy, big_true = _pools(seed=2, hack=3.0, prompts=40_000)
    big = gap.best_of_n_curve(proxy=big_proxy, true=big_true, ns=ns, n_boot=2)
    target = fits.gold_fit(d=big.d.value, gold=big.true.value, form="bon")
    assert fit.peak_reported and fit.peak is not None and target.peak is not None
    assert fit.peak.lo <= target.peak.value <= fit.peak.hi
