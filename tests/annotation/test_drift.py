"""Change-point detection (annotation/drift.py): the CUSUM against its recursion and its exact
run-length chain, and detection delay / false alarms on simulated annotators with known onsets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annotation.drift import (
    STREAM_GOLD_ERROR,
    STREAM_LENGTH,
    STREAM_POSITION,
    STREAM_SYCOPHANCY,
    CusumState,
    DriftConfig,
    annotator_streams,
    annotator_streams_all,
    cusum_path,
    cusum_run_length,
    cusum_threshold,
    detect_bernoulli_cusum,
    detect_bernoulli_glr,
    detect_two_sided,
    drift_scan,
    drift_scan_frame,
    glr_path,
)
from annotation.quality import CHOICE_A, CHOICE_B, CHOICE_TIE, JudgmentFrame

P17 = dict(p0=0.10, p1=0.25, h=4.0)


def test_cusum_path_equals_the_recursion():
    """The vectorised Lindley form gives S_t = max(0, S_{t-1} + w(x_t)) exactly."""
    rng = np.random.default_rng(0)
    x = rng.random(2000) < 0.15
    w1, w0 = math.log(0.25 / 0.10), math.log(0.75 / 0.90)
    s, expected = 0.0, []
    for v in x:
        s = max(0.0, s + (w1 if v else w0))
        expected.append(s)
    np.testing.assert_allclose(cusum_path(x, p0=0.10, p1=0.25), expected, atol=1e-9)


def test_onset_is_the_observation_after_the_last_zero():
    """Clean stream then a run of errors: the alarm comes on the 5th error (4 x log 2.5 = 3.67
    < 4 < 4.58) and the onset is the first error; the stream restarts after the alarm."""
    x = np.array([0] * 30 + [1] * 5 + [0] * 30 + [1] * 5, float)
    points = detect_bernoulli_cusum(x, **P17)
    assert [(p.onset_index, p.detected_index) for p in points] == [(30, 34), (65, 69)]
    assert points[0].statistic == pytest.approx(5 * math.log(2.5))
    assert all(p.direction == "up" for p in points)


def test_incremental_state_raises_the_same_alarms_as_the_batch_scan():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random(400) < 0.1, rng.random(300) < 0.35, rng.random(300) < 0.1])
    batch = detect_bernoulli_cusum(x.astype(float), **P17)
    state, online = CusumState(), []
    for v in x:
        state, point = state.step(bool(v), **P17)
        if point is not None:
            online.append(point)
    assert len(batch) >= 2
    assert [(p.onset_index, p.detected_index) for p in online] == [
        (p.onset_index, p.detected_index) for p in batch]
    np.testing.assert_allclose([p.statistic for p in online], [p.statistic for p in batch])


def test_p17_run_lengths_from_the_chain_and_by_simulation():
    """PREDICTIONS P17: in-control ARL about 1.0k and drifted ARL about 37 gold items (within
    10%); the exact chain and a simulation of 1,000 streams agree within 4 standard errors."""
    arl0 = cusum_run_length(0.10, **P17).arl
    arl1 = cusum_run_length(0.25, **P17).arl
    assert arl0 == pytest.approx(1000, rel=0.10)
    assert arl1 == pytest.approx(37, rel=0.10)
    rng = np.random.default_rng(2)
    for p, arl, length in ((0.25, arl1, 600), (0.10, arl0, 8000)):
        s = cusum_path(rng.random((1000, length)) < p, p0=0.10, p1=0.25)
        alarm = s > 4.0
        assert alarm.any(axis=1).mean() > 0.99
        run = alarm.argmax(axis=1)[alarm.any(axis=1)] + 1
        assert abs(run.mean() - arl) < 4 * run.std() / math.sqrt(run.size)


def test_threshold_for_a_false_alarm_budget_is_the_smallest_that_meets_it():
    h = cusum_threshold(p0=0.1, p1=0.3, false_alarm_rate=0.01, horizon=500)
    at = cusum_run_length(0.1, p0=0.1, p1=0.3, h=h, horizon=500, resolution=100)
    below = cusum_run_length(0.1, p0=0.1, p1=0.3, h=h - 0.01, horizon=500, resolution=100)
    assert at.p_alarm_by_horizon <= 0.01 < below.p_alarm_by_horizon


def _gold_streams(rng, n_steady, n_drift, *, length=500, onset=200):
    steady = (rng.random((n_steady, length)) < 0.10).astype(float)
    drift = np.concatenate([rng.random((n_drift, onset)) < 0.10,
                            rng.random((n_drift, length - onset)) < 0.30], axis=1).astype(float)
    return steady, drift


def _delays_and_false_alarms(steady, drift, config, onset=200):
    false_alarms = np.mean([bool(drift_scan({STREAM_GOLD_ERROR: x}, config)[STREAM_GOLD_ERROR])
                            for x in steady])
    delays, onset_errors = [], []
    for x in drift:
        after = [p for p in drift_scan({STREAM_GOLD_ERROR: x}, config)[STREAM_GOLD_ERROR]
                 if p.detected_index >= onset]
        if after:
            delays.append(after[0].detected_index - onset + 1)
            onset_errors.append(after[0].onset_index - onset)
        else:
            delays.append(np.inf)  # undetected counts as an infinite delay for the median
    return false_alarms, np.median(delays), np.median(np.abs(onset_errors))


def test_gold_drift_from_90_to_70_percent_at_a_one_percent_false_alarm_budget():
    """The fixed-p0 CUSUM (``accuracy_method="cusum"``, the benchmark's baseline), which is
    right only for annotators whose steady error rate is p0 (test_drift_level.py covers the
    default GLR at every level). Accuracy falls from 90% to 70% at gold item 200 for 1,000
    annotators; 6,000 steady annotators answer 500 gold items. With h from cusum_threshold
    for 0.8% false alarms over 500 gold items (p1 = 0.3), at most 1% of steady annotators are
    flagged, the median delay is at most 48 gold items (about 44 expected) and the median onset
    error at most 10.

    The brief asked for a median delay <= 40 *and* <= 1% false alarms. On gold items alone that
    pair lies beyond the CUSUM's frontier (which is near-optimal, Moustakides 1986): at exactly
    1% the best median delay over p1 is about 42 (benchmarks/drift_detection.py prints the
    frontier). The default detectors meet it by also scoring the regular judgments against the
    peers' answers (test_drift_peers.py); the next test checks gold alone at a looser budget.
    """
    rng = np.random.default_rng(3)
    steady, drift = _gold_streams(rng, 6000, 1000)
    h = cusum_threshold(p0=0.1, p1=0.3, false_alarm_rate=0.008, horizon=500)
    config = DriftConfig(accuracy_method="cusum", gold_p0=0.1, gold_p1=0.3, gold_h=h)
    false_alarms, median_delay, onset_error = _delays_and_false_alarms(steady, drift, config)
    assert false_alarms <= 0.01
    assert median_delay <= 48
    assert onset_error <= 10


def test_gold_drift_median_delay_within_40_at_the_p17_point_and_a_2_percent_budget():
    """At the P17 point (h = 4) the median delay is far below 40 and the false-alarm share over
    500 gold items matches the chain's prediction (about 38%); at a 2% budget the median delay
    is at most 40."""
    rng = np.random.default_rng(4)
    steady, drift = _gold_streams(rng, 1500, 600)
    p17 = DriftConfig(accuracy_method="cusum", gold_p0=0.1, gold_p1=0.25, gold_h=4.0)
    false_alarms, median_delay, _ = _delays_and_false_alarms(steady, drift, p17)
    predicted = cusum_run_length(0.1, **P17, horizon=500).p_alarm_by_horizon
    assert abs(false_alarms - predicted) < 4 * math.sqrt(predicted * (1 - predicted) / 1500)
    assert median_delay <= 25
    h = cusum_threshold(p0=0.1, p1=0.3, false_alarm_rate=0.02, horizon=500)
    config = DriftConfig(accuracy_method="cusum", gold_p0=0.1, gold_p1=0.3, gold_h=h)
    false_alarms, median_delay, _ = _delays_and_false_alarms(steady, drift, config)
    assert false_alarms <= 0.03
    assert median_delay <= 40


def test_glr_path_equals_a_direct_likelihood_ratio():
    """At one time point the scan's statistic equals the best split of the grid, computed from
    the Bernoulli log-likelihoods directly."""
    from annotation.drift import glr_lags

    rng = np.random.default_rng(5)
    x = (rng.random(300) < 0.4).astype(float)
    t = 250

    def ll(seg):
        p = seg.mean()
        return sum(v * math.log(p) if v else math.log(1 - p) for v in seg) if 0 < p < 1 else 0.0

    best = max(ll(x[: t + 1 - j]) + ll(x[t + 1 - j: t + 1]) - ll(x[: t + 1])
               for j in glr_lags(20, 400) if t + 1 - j >= 20)
    assert glr_path(x)[t] == pytest.approx(best)


def test_bias_drift_is_found_without_a_baseline_and_steady_biases_are_not_flagged():
    """GLR scan with the default config: steady streams at rates 0.2, 0.5 and 0.8 raise few
    false alarms over 500 observations; a shift 0.5 -> 0.8 after observation 250 is found with
    the right direction and an onset within 10 observations (median); a shift down is "down"."""
    rng = np.random.default_rng(6)
    config = DriftConfig()
    alarms = [bool(drift_scan({STREAM_POSITION: (rng.random(500) < rate).astype(float)},
                              config)[STREAM_POSITION])
              for rate in [0.2, 0.5, 0.8] * 100]
    assert np.mean(alarms) <= 0.03
    onset_errors, delays = [], []
    for _ in range(100):
        x = np.concatenate([rng.random(250) < 0.5, rng.random(250) < 0.8]).astype(float)
        points = drift_scan({STREAM_LENGTH: x}, config)[STREAM_LENGTH]
        after = [p for p in points if p.detected_index >= 250]
        assert after and after[0].direction == "up"
        onset_errors.append(abs(after[0].onset_index - 250))
        delays.append(after[0].detected_index - 250 + 1)
    assert np.median(onset_errors) <= 10
    assert np.median(delays) <= 60
    x = np.concatenate([rng.random(250) < 0.6, rng.random(250) < 0.2]).astype(float)
    points = detect_bernoulli_glr(x, h=config.bias_h)
    assert points and points[0].direction == "down" and abs(points[0].onset_index - 250) < 30


def test_two_sided_cusum_around_a_fixed_baseline():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.random(200) < 0.5, rng.random(200) < 0.15]).astype(float)
    points = detect_two_sided(x, q0=0.5, shift=0.2, h=5.0)
    assert points[0].direction == "down" and 190 <= points[0].onset_index <= 215
    config = DriftConfig(bias_method="cusum", bias_h=5.0)
    assert drift_scan({STREAM_SYCOPHANCY: x}, config)[STREAM_SYCOPHANCY][0] == points[0]


def test_annotator_streams_pick_and_code_the_right_rows():
    """gold_error = 1 - gold_ok; position = chose left on A/B rows; length = chose the longer
    response where lengths differ; sycophancy = chose the agreeing response on probes."""
    nan = np.nan
    frame = JudgmentFrame(
        annotator=np.array([0, 1, 0, 0, 0, 0]),
        item=np.arange(6),
        choice=np.array([CHOICE_A, CHOICE_A, CHOICE_B, CHOICE_TIE, CHOICE_A, CHOICE_B]),
        strength=np.array([1, 1, 2, 0, 3, 1]),
        a_on_left=np.array([True, True, True, False, False, False]),
        seconds=np.ones(6),
        len_diff=np.array([10.0, 0.0, 30.0, 5.0, 0.0, -8.0]),
        agree_diff=np.array([nan, nan, 1.0, nan, -1.0, nan]),
        gold_ok=np.array([1.0, 0.0, nan, 0.0, nan, nan]),
        consistent=np.full(6, nan),
        is_reshow=np.zeros(6, bool),
        is_calibration=np.array([True, True, False, True, False, False]),
    )
    streams = annotator_streams(frame, 0)
    assert streams.rows[STREAM_GOLD_ERROR].tolist() == [0, 3]
    assert streams.values[STREAM_GOLD_ERROR].tolist() == [0.0, 1.0]
    assert streams.rows[STREAM_POSITION].tolist() == [0, 2, 4, 5]
    assert streams.values[STREAM_POSITION].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert streams.rows[STREAM_LENGTH].tolist() == [0, 2, 5]
    assert streams.values[STREAM_LENGTH].tolist() == [1.0, 0.0, 1.0]
    assert streams.rows[STREAM_SYCOPHANCY].tolist() == [2, 4]
    assert streams.values[STREAM_SYCOPHANCY].tolist() == [0.0, 0.0]


def test_streams_of_all_annotators_equal_the_one_by_one_streams_and_the_scan_maps_rows():
    """annotator_streams_all splits the frame like annotator_streams for each annotator, and
    drift_scan_frame maps each change point back to the frame rows of its onset and alarm."""
    rng = np.random.default_rng(9)
    n, n_ann = 3000, 7
    annotator = rng.integers(0, n_ann, n)
    annotator[annotator == 6] = 5  # annotator 6 has no rows
    gold = np.where(rng.random(n) < 0.5, (rng.random(n) < 0.9).astype(float), np.nan)
    # annotator 0's gold accuracy collapses half-way through
    late = (annotator == 0) & (np.arange(n) > n // 2) & np.isfinite(gold)
    gold[late] = (rng.random(late.sum()) < 0.4).astype(float)
    frame = JudgmentFrame(
        annotator=annotator, item=np.arange(n), choice=rng.integers(0, 4, n),
        strength=np.ones(n, int), a_on_left=rng.random(n) < 0.5, seconds=np.ones(n),
        len_diff=rng.normal(0, 50, n), agree_diff=np.where(rng.random(n) < 0.2, 1.0, np.nan),
        gold_ok=gold, consistent=np.full(n, np.nan), is_reshow=np.zeros(n, bool),
        is_calibration=np.isfinite(gold),
    )
    together = annotator_streams_all(frame, n_ann)
    for w in range(n_ann):
        alone = annotator_streams(frame, w)
        for name in alone.rows:
            np.testing.assert_array_equal(together[w].rows[name], alone.rows[name])
            np.testing.assert_array_equal(together[w].values[name], alone.values[name])
    assert all(together[6].rows[name].size == 0 for name in together[6].rows)
    scans = drift_scan_frame(frame, n_ann)
    gold_alarms = scans[0][STREAM_GOLD_ERROR]
    assert gold_alarms, "the collapse of annotator 0 is detected"
    point, onset_row, alarm_row = gold_alarms[0]
    assert annotator[onset_row] == 0 and annotator[alarm_row] == 0
    assert onset_row == together[0].rows[STREAM_GOLD_ERROR][point.onset_index]
    assert abs(onset_row - n // 2) < 150
    # The default watches for a change from the annotator's own level (GLR, no baseline).
    assert point.detector.startswith("error_glr") and len(point.detector) <= 60
    assert "%" in point.message
