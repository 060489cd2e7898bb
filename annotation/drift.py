"""Sequential change-point detection on one annotator's streams. Pure numpy, no ORM.

DESIGN section 4: each annotator has a stream of gold errors and a stream per bias (position:
chose the left response; length: chose the longer one; sycophancy: chose the one agreeing with
the user). All are 0/1 streams.

**Gold errors: Bernoulli CUSUM** (Page 1954; Reynolds & Stoumbos 1999). With increments equal
to the log-likelihood ratio of the post-change error rate p1 against the in-control rate p0,

    S_0 = 0,  S_t = max(0, S_{t-1} + x_t log(p1/p0) + (1 - x_t) log((1-p1)/(1-p0)))   [nats],

an alarm is raised when S_t > h, and the onset is estimated as the observation after the last
time S was 0 before the alarm (the maximum-likelihood change point under the chart's model).
After an alarm S restarts at 0, so one stream can report several change points. The run-length
distribution is exact on a Markov chain (Brook & Evans 1972): :func:`cusum_run_length` gives
the ARL and P(alarm within a horizon), :func:`cusum_threshold` picks h for a false-alarm budget
("at most 1% of steady annotators flagged within 500 gold items").

PREDICTIONS P17 (p0 = 0.10, p1 = 0.25, h = 4): the chain gives in-control ARL 1,025 and drifted
ARL 37.0 gold items; 20,000 simulated streams give 1,025 +/- 7 (``benchmarks/drift_detection.py``
reports both). An ARL of 1,000 still flags 38% of steady annotators within 500 gold items, so a
campaign that wants few false alarms must raise h: delay and false alarms trade off along a
frontier the benchmark prints. For a fall from 90% to 70% gold accuracy, a 1% false-alarm rate
over 500 gold items costs a median delay of about 42 gold items whatever p1 is chosen
(p1 = 0.25-0.35, h = 7.7-8.3), 2% about 38, 5% about 32; the P17 point detects in about 20.

**Bias streams: GLR scan** (:func:`detect_bernoulli_glr`). An annotator's steady bias is not
drift, and its level is unknown, so the detector must not assume a baseline: the generalised
likelihood ratio of "one rate" against "the rate changed j observations ago" is maximised over j
(both rates estimated). A fixed-baseline two-sided CUSUM is available too (``bias_method=
"cusum"``); a CUSUM whose baseline is estimated from the first N observations was tried and
rejected (:class:`DriftConfig` gives the numbers).

Why not river: river 0.26 has ``drift.PageHinkley`` (a CUSUM on deviations from the running
mean, fading factor, threshold in raw units, per-sample ``update``), ``ADWIN``, ``KSWIN`` and the
binary ``drift.binary.DDM/EDDM/HDDM_A/HDDM_W``. None gives an onset estimate or a threshold that
maps to a false-alarm rate, both of which DESIGN asks for ("a target false-alarm rate ... an
alert records the estimated onset"). ADWIN (default delta) was run on the bias task in the
benchmark: no false alarms on steady streams, but for a shift from 0.5 to 0.75 a median delay
of about 200 observations, with a third of the shifts still undetected 250 observations later; the
GLR scan here has a median delay of about 70 at under 1% false alarms.

:func:`drift_scan` recomputes an annotator's streams from scratch in the quality recompute job;
nothing of it runs on the submit path. :class:`CusumState` is the O(1) incremental form of the
same statistic, priced by the benchmarks.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from annotation.quality import CHOICE_A, CHOICE_B, N_CHOICES, DawidSkeneFit, JudgmentFrame

T = TypeVar("T")

STREAM_GOLD_ERROR = "gold_error"
STREAM_ACCURACY = "accuracy"
STREAM_POSITION = "position"
STREAM_LENGTH = "length"
STREAM_SYCOPHANCY = "sycophancy"
BIAS_STREAMS = (STREAM_POSITION, STREAM_LENGTH, STREAM_SYCOPHANCY)


@dataclass(frozen=True)
class ChangePoint:
    """One alarm: indices into the stream (0-based), and the statistic that crossed h (nats).

    ``direction`` is "up" (rate rose: more gold errors, more left/longer/agreeing choices) or
    "down". ``detector`` names the test and its settings (at most 60 characters, for
    ``DriftAlert.detector``); ``message`` gives the rates before and after the onset.
    """

    onset_index: int
    detected_index: int
    statistic: float
    direction: str = "up"
    detector: str = ""
    message: str = ""


def _message(x: np.ndarray, since: int, onset: int, detected: int) -> str:
    """Rates of ones before the onset (since the last restart) and from it to the alarm."""
    after = f"{x[onset:detected + 1].mean():.0%} from #{onset} to the alarm at #{detected}"
    if onset > since:
        return f"rate {x[since:onset].mean():.0%} before, {after}"
    return f"rate {after}"


def _llr_weights(p0: float, p1: float) -> tuple[float, float]:
    """Log-likelihood-ratio increments (nats) for x = 1 and x = 0."""
    if not (0.0 < p0 < 1.0 and 0.0 < p1 < 1.0) or p0 == p1:
        raise ValueError("need 0 < p0, p1 < 1 and p0 != p1")
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


def llr_cusum_path(llr: np.ndarray) -> np.ndarray:
    """The CUSUM statistic S_1..S_n (no restarts) of log-likelihood-ratio increments.

    Uses the Lindley identity S_t = C_t - min(0, min_{s<=t} C_s) with C the cumulative sum of
    the increments, so a stream costs two numpy scans instead of a Python loop. Works on a 2-D
    array too (one stream per row).
    """
    c = np.cumsum(llr, axis=-1)
    return c - np.minimum(np.minimum.accumulate(c, axis=-1), 0.0)


def cusum_path(x: np.ndarray, *, p0: float, p1: float) -> np.ndarray:
    """The Bernoulli CUSUM statistic S_1..S_n (no restarts) of a 0/1 stream, vectorised."""
    w1, w0 = _llr_weights(p0, p1)
    return llr_cusum_path(np.where(np.asarray(x).astype(bool), w1, w0))


def detect_llr_cusum(
    llr: np.ndarray, *, h: float, detector: str, direction: str = "up",
    rates: np.ndarray | None = None,
) -> list[ChangePoint]:
    """All change points of a stream of log-likelihood-ratio increments (nats), restarting the
    CUSUM after each alarm.

    S_t = max(0, S_{t-1} + llr_t); alarm when S_t > ``h``; onset = the observation after the
    last zero of S before the alarm. ``rates`` (the 0/1 or expected-rate values behind the
    increments) only feed the alert's message.
    """
    llr = np.asarray(llr, dtype=float)
    if np.isnan(llr).any():
        raise ValueError("stream has nan entries")
    rates = llr if rates is None else np.asarray(rates, dtype=float)
    points: list[ChangePoint] = []
    start = 0
    n = llr.size
    while start < n:
        c = np.cumsum(llr[start:])
        running_min = np.minimum(np.minimum.accumulate(c), 0.0)
        s = c - running_min
        above = np.flatnonzero(s > h)
        if above.size == 0:
            break
        t = int(above[0])
        # S_j == 0 exactly where C_j is the running minimum (<= 0); both sides are the same
        # stored float, so the comparison is exact.
        zeros = np.flatnonzero(c[:t] <= running_min[:t])
        onset = int(zeros[-1]) + 1 if zeros.size else 0
        points.append(ChangePoint(
            onset_index=start + onset, detected_index=start + t, statistic=float(s[t]),
            direction=direction, detector=detector,
            message=_message(rates, start, start + onset, start + t)))
        start += t + 1
    return points


def detect_bernoulli_cusum(
    x: np.ndarray, *, p0: float, p1: float, h: float, direction: str | None = None,
) -> list[ChangePoint]:
    """All change points of a 0/1 stream, restarting the CUSUM after each alarm.

    ``p1 > p0`` watches for a rise in the rate of ones, ``p1 < p0`` for a fall. Alarm when the
    statistic exceeds ``h`` (nats); onset = the observation after the last zero of the
    statistic before the alarm. nan entries are not allowed (drop them first).
    """
    x = np.asarray(x, dtype=float)
    if np.isnan(x).any():
        raise ValueError("stream has nan entries")
    w1, w0 = _llr_weights(p0, p1)
    if direction is None:
        direction = "up" if p1 > p0 else "down"
    return detect_llr_cusum(np.where(x > 0.5, w1, w0), h=h, direction=direction, rates=x,
                            detector=f"bernoulli_cusum p0={p0:g} p1={p1:g} h={h:.3g}")


# --------------------------------------------------------------------------------------------
# Accuracy evidence from every judgment: gold items and the peers' answers on regular items
# --------------------------------------------------------------------------------------------


def answer_llr(p_right: np.ndarray, *, p0: float, p1: float,
               n_choices: int = N_CHOICES) -> np.ndarray:
    """Log-likelihood ratio (nats) of error rate ``p1`` against ``p0`` for each answer, given
    the probability ``p_right`` that the answer is the true label.

    Symmetric error model: an annotator of accuracy a gives the true label with probability a
    and each of the other ``n_choices - 1`` labels with (1 - a) / (n_choices - 1), so

        P(answer | a) = a * p_right + (1 - a) / (n_choices - 1) * (1 - p_right).

    For a gold item p_right is 1 or 0 and this is the Bernoulli CUSUM's increment exactly
    (log(a1/a0) or log((1-a1)/(1-a0))); an item whose truth is uncertain moves the statistic
    less, and never by more than a gold item would.
    """
    p = np.clip(np.asarray(p_right, dtype=float), 0.0, 1.0)
    a0, a1 = 1.0 - p0, 1.0 - p1
    other = 1.0 / (n_choices - 1)
    return np.log((a1 * p + (1.0 - a1) * other * (1.0 - p))
                  / (a0 * p + (1.0 - a0) * other * (1.0 - p)))


def peer_evidence(frame: JudgmentFrame, ds: DawidSkeneFit, *, min_peers: int = 1
                  ) -> np.ndarray:
    """Per frame row, P(this answer is the true label | every *other* answer to the item).

    Gold rows: ``gold_ok`` (1 or 0). Regular rows answered by at least ``min_peers`` others:
    the leave-one-out Dawid-Skene posterior of the item's label, from the class prior and the
    other annotators' confusion matrices, read at the label this annotator gave. Everything
    else (re-shows, transitivity closers, items nobody else has answered yet): nan.

    This is what lets drift detection use the nine regular judgments between two gold items:
    a drop in accuracy shows up as disagreement with confident peers long before enough gold
    errors pile up. The confusion matrices are the campaign's fit (``ds``), so the evidence is
    only as good as the peers; an item where they disagree carries little weight.
    """
    out = frame.gold_ok.copy()  # 1/0 on gold rows, nan elsewhere
    rows = np.flatnonzero(~frame.is_calibration)
    if rows.size == 0 or ds.items.size == 0:
        return out
    item = np.searchsorted(ds.items, frame.item[rows])
    label = np.searchsorted(ds.labels, frame.choice[rows])
    worker = frame.annotator[rows]
    with np.errstate(divide="ignore"):
        # errors[w, observed, true]; every (w, observed) cell of a real row was fitted (> 0).
        log_err = np.log(np.maximum(ds.errors[worker, label, :], 1e-300))  # (rows, K)
        log_prior = np.log(np.maximum(ds.priors, 1e-300))
    k = ds.labels.size
    total = np.zeros((ds.items.size, k))
    for j in range(k):
        total[:, j] = np.bincount(item, weights=log_err[:, j], minlength=ds.items.size)
    peers = np.bincount(item, minlength=ds.items.size)[item] - 1
    loo = total[item] - log_err + log_prior
    loo -= loo.max(axis=1, keepdims=True)
    post = np.exp(loo)
    post /= post.sum(axis=1, keepdims=True)
    p_right = post[np.arange(rows.size), label]
    out[rows] = np.where(peers >= min_peers, p_right, np.nan)
    return out


def detect_two_sided(
    x: np.ndarray, *, q0: float, shift: float, h: float,
) -> list[ChangePoint]:
    """Change points of a 0/1 stream drifting either way from rate ``q0`` by ``shift``.

    Two one-sided Bernoulli CUSUMs (q0 -> q0 + shift and q0 -> q0 - shift, each clipped into
    [0.01, 0.99]) run together; the first to exceed ``h`` raises the alarm and both restart.
    Each side has about half the two-sided false-alarm rate, so pick ``h`` with
    :func:`cusum_threshold` at half the budget for each.
    """
    x = np.asarray(x, dtype=float)
    q_up = min(q0 + shift, 0.99)
    q_down = max(q0 - shift, 0.01)
    points: list[ChangePoint] = []
    start = 0
    while start < x.size:
        found = []
        if q_up > q0:
            found += detect_bernoulli_cusum(x[start:], p0=q0, p1=q_up, h=h)[:1]
        if q_down < q0:
            found += detect_bernoulli_cusum(x[start:], p0=q0, p1=q_down, h=h)[:1]
        if not found:
            break
        first = min(found, key=lambda cp: cp.detected_index)
        onset, detected = start + first.onset_index, start + first.detected_index
        points.append(ChangePoint(
            onset_index=onset, detected_index=detected, statistic=first.statistic,
            direction=first.direction,
            detector=f"two_sided_cusum q0={q0:.3g} shift={shift:g} h={h:.3g}",
            message=_message(x, start, onset, detected)))
        start += first.detected_index + 1
    return points


# --------------------------------------------------------------------------------------------
# GLR scan for streams with an unknown baseline (the bias streams)
# --------------------------------------------------------------------------------------------


def _klogk(n: int) -> np.ndarray:
    """k log k for k = 0..n (0 at k = 0)."""
    k = np.arange(n + 1, dtype=float)
    return k * np.log(np.maximum(k, 1.0))


def _segment_loglik(ones: np.ndarray, n: np.ndarray, klogk: np.ndarray) -> np.ndarray:
    """Maximised Bernoulli log-likelihood of segments with ``ones`` ones in ``n`` draws.

    s log(s/n) + (n-s) log((n-s)/n) = s log s + (n-s) log(n-s) - n log n; with integer counts
    the three terms are table look-ups, several times faster than evaluating the logs.
    """
    return klogk[ones] + klogk[n - ones] - klogk[n]


@functools.lru_cache(maxsize=32)
def _glr_lags_cached(min_segment: int, max_lookback: int, ratio: float) -> tuple[int, ...]:
    lags = {min_segment}
    lag = float(min_segment)
    while lag < max_lookback:
        lag *= ratio
        lags.add(min(int(round(lag)), max_lookback))
    return tuple(sorted(lags))


def glr_lags(min_segment: int, max_lookback: int, ratio: float = 1.1) -> np.ndarray:
    """Candidate post-change segment lengths: a geometric grid from min_segment to max_lookback.

    Scanning every split costs O(n^2) per stream; a geometric grid of change times keeps the
    scan O(n log n) and loses little power, because the GLR changes slowly in the split for
    long segments (the window-limited GLR of Lai 1995, section 3, with the sparse grid of
    Lai & Shan 1999). The onset is refined over every split once an alarm is raised.
    """
    return np.array(_glr_lags_cached(min_segment, max_lookback, ratio))


def glr_path(
    x: np.ndarray, *, min_segment: int = 20, max_lookback: int = 400,
) -> np.ndarray:
    """GLR statistic G_t for a change in a Bernoulli rate, on the lag grid, no restarts.

    G_t = max over lags j of LL(x_0..x_{t-j}) + LL(x_{t-j+1}..x_t) - LL(x_0..x_t) (nats),
    with both rates unknown and each segment at least ``min_segment`` long; -inf where no
    split is allowed yet. ``x`` is 0/1 and may carry leading batch axes (one stream per row).
    """
    x = np.asarray(x) > 0.5
    n = x.shape[-1]
    csum = np.concatenate([np.zeros(x.shape[:-1] + (1,), np.int64),
                           np.cumsum(x, axis=-1, dtype=np.int64)], axis=-1)
    klogk = _klogk(n)
    t = np.arange(n)[:, None]  # segment end, inclusive
    split = t + 1 - glr_lags(min_segment, max_lookback)[None, :]  # first post-change index
    ok = split >= min_segment
    split_c = np.where(ok, split, 0)
    ones_all = csum[..., 1:, None]
    ones_pre = np.take(csum, split_c, axis=-1)
    stat = (_segment_loglik(ones_pre, split_c, klogk)
            + _segment_loglik(ones_all - ones_pre, t + 1 - split_c, klogk)
            - _segment_loglik(ones_all, t + 1, klogk))
    return np.where(ok, stat, -np.inf).max(axis=-1)


def _best_split(x: np.ndarray, t: int, *, min_segment: int, max_lookback: int) -> int:
    """Exact maximum-likelihood split of x[0..t] over every allowed k (the onset estimate)."""
    csum = np.concatenate([[0], np.cumsum(np.asarray(x[: t + 1]) > 0.5, dtype=np.int64)])
    k = np.arange(max(min_segment, t + 1 - max_lookback), t + 2 - min_segment)
    if k.size == 0:
        return t
    klogk = _klogk(t + 1)
    stat = (_segment_loglik(csum[k], k, klogk)
            + _segment_loglik(csum[t + 1] - csum[k], t + 1 - k, klogk))
    return int(k[np.argmax(stat)])


def detect_bernoulli_glr(
    x: np.ndarray, *, h: float, min_segment: int = 20, max_lookback: int = 400,
) -> list[ChangePoint]:
    """Change points of a 0/1 stream whose in-control rate is unknown (two-sided GLR scan).

    At each observation t the generalised likelihood ratio of "one rate" against "a change
    ``j`` observations ago" is maximised over the lag grid of :func:`glr_lags` (Siegmund &
    Venkatraman 1995; Lai 1995, section 3); alarm when it exceeds ``h`` nats. The onset is the
    exact maximum-likelihood split at the alarm, the direction the sign of the rate change.
    After an alarm the scan restarts after it with no memory, so the new regime becomes the
    baseline. Pick ``h`` with :func:`glr_threshold`.
    """
    x = np.asarray(x, dtype=float)
    if np.isnan(x).any():
        raise ValueError("stream has nan entries")
    points: list[ChangePoint] = []
    start = 0
    while x.size - start >= 2 * min_segment:
        seg = x[start:]
        g = glr_path(seg, min_segment=min_segment, max_lookback=max_lookback)
        above = np.flatnonzero(g > h)
        if above.size == 0:
            break
        t = int(above[0])
        k = _best_split(seg, t, min_segment=min_segment, max_lookback=max_lookback)
        before, after = seg[:k].mean(), seg[k:t + 1].mean()
        points.append(ChangePoint(
            onset_index=start + k, detected_index=start + t, statistic=float(g[t]),
            direction="up" if after > before else "down",
            detector=f"bernoulli_glr h={h:.3g} min={min_segment} lookback={max_lookback}",
            message=_message(x, start, start + k, start + t)))
        start += t + 1
    return points


def glr_threshold(
    *, false_alarm_rate: float, horizon: int, rates: tuple[float, ...] = (0.2, 0.5, 0.8),
    min_segment: int = 20, max_lookback: int = 400, n_sim: int = 4000, seed: int = 0,
) -> float:
    """h such that P(GLR alarm within ``horizon`` | constant rate) <= target at every rate.

    There is no exact chain as for the CUSUM, so this is the (1 - target) quantile of the
    simulated max_t G_t over ``horizon`` observations, the largest over ``rates`` (the GLR is
    nearly pivotal in the rate, so they differ little). Monte Carlo error: with n_sim = 4000
    and a 1% target the quantile rests on about 40 exceedances per rate.
    """
    rng = np.random.default_rng(seed)
    worst = 0.0
    for rate in rates:
        maxima = []
        for lo in range(0, n_sim, 500):
            sims = (rng.random((min(500, n_sim - lo), horizon)) < rate).astype(float)
            maxima.append(glr_path(sims, min_segment=min_segment,
                                   max_lookback=max_lookback).max(axis=-1))
        worst = max(worst, float(np.quantile(np.concatenate(maxima), 1.0 - false_alarm_rate)))
    return worst


# --------------------------------------------------------------------------------------------
# Run-length distribution and threshold choice
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLength:
    """Run-length summary of a Bernoulli CUSUM at true rate p (from the Markov chain).

    ``arl``: expected observations until the first alarm (the alarm observation counted);
    ``p_alarm_by_horizon``: P(first alarm within ``horizon`` observations), nan without one.
    """

    arl: float
    p_alarm_by_horizon: float


def _chain(p0: float, p1: float, h: float, resolution: int) -> tuple[int, int, int]:
    """Integer lattice for the CUSUM: (up steps, down steps, number of non-alarm states).

    The smaller increment in absolute value is ``resolution`` lattice steps; the other is
    rounded to the lattice (relative error < 0.5 / its step count), as in Brook & Evans (1972).
    """
    w1, w0 = _llr_weights(p0, p1)
    # For a falling-rate chart (p1 < p0) a one is the "good" event; mirror so "up" is the
    # positive increment.
    up_w, down_w = (w1, -w0) if w1 > 0 else (w0, -w1)
    delta = min(up_w, down_w) / resolution
    up = max(int(round(up_w / delta)), 1)
    down = max(int(round(down_w / delta)), 1)
    n_states = int(math.floor(h / delta)) + 1  # states 0..floor(h/delta): S <= h, no alarm
    return up, down, n_states


def cusum_run_length(
    p: float, *, p0: float, p1: float, h: float, horizon: int | None = None,
    resolution: int = 200,
) -> RunLength:
    """ARL and P(alarm within horizon) of the CUSUM started at 0 when ones occur at rate p.

    Exact up to rounding the two increments to a lattice with ``resolution`` steps for the
    smaller one (Brook & Evans 1972); with the default the ARLs agree with simulation to well
    under 1%. The ARL solves (I - Q) L = 1 on the transient states (a sparse banded system).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    up, down, m = _chain(p0, p1, h, resolution)
    w1, _ = _llr_weights(p0, p1)
    p_up = p if w1 > 0 else 1.0 - p  # probability of the positive increment
    idx = np.arange(m)
    to_up = idx + up
    stay = to_up < m
    to_down = np.maximum(idx - down, 0)
    rows = np.concatenate([idx[stay], idx])
    cols = np.concatenate([to_up[stay], to_down])
    vals = np.concatenate([np.full(stay.sum(), p_up), np.full(m, 1.0 - p_up)])
    q = sp.csr_matrix((vals, (rows, cols)), shape=(m, m))
    arl = float(spsolve((sp.identity(m, format="csc") - q.tocsc()), np.ones(m))[0])
    p_alarm = math.nan
    if horizon is not None:
        # survival[i] = P(no alarm in the next k steps | state i), iterated k = 1..horizon.
        survival = np.ones(m)
        for _ in range(horizon):
            nxt = (1.0 - p_up) * survival[to_down]
            nxt[stay] += p_up * survival[to_up[stay]]
            survival = nxt
        p_alarm = float(1.0 - survival[0])
    return RunLength(arl=arl, p_alarm_by_horizon=p_alarm)


def cusum_threshold(
    *, p0: float, p1: float, false_alarm_rate: float, horizon: int,
    resolution: int = 100,
) -> float:
    """Smallest h (to 1e-3 nats) with P(alarm within ``horizon`` | rate p0) <= the target.

    Use it to turn a campaign's false-alarm budget ("at most 1% of steady annotators flagged
    over their first 500 gold items") into a threshold. Bisection on the Markov chain of
    :func:`cusum_run_length`.
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError("false_alarm_rate must be in (0, 1)")

    def p_alarm(h: float) -> float:
        return cusum_run_length(p0, p0=p0, p1=p1, h=h, horizon=horizon,
                                resolution=resolution).p_alarm_by_horizon

    lo, hi = 0.0, 1.0
    while p_alarm(hi) > false_alarm_rate:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-3:
        mid = 0.5 * (lo + hi)
        if p_alarm(mid) > false_alarm_rate:
            lo = mid
        else:
            hi = mid
    return hi


def cusum_threshold_for_arl(
    *, p0: float, p1: float, arl0: float, resolution: int = 100,
) -> float:
    """Smallest h (to 1e-3 nats) whose in-control ARL is at least ``arl0``."""

    def arl(h: float) -> float:
        return cusum_run_length(p0, p0=p0, p1=p1, h=h, resolution=resolution).arl

    lo, hi = 0.0, 1.0
    while arl(hi) < arl0:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-3:
        mid = 0.5 * (lo + hi)
        if arl(mid) < arl0:
            lo = mid
        else:
            hi = mid
    return hi


# --------------------------------------------------------------------------------------------
# Incremental state for the submit path
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CusumState:
    """Running Bernoulli CUSUM of one stream: O(1) per observation (the submit path).

    ``n`` observations seen, ``statistic`` the current S, ``last_zero`` the index of the last
    observation after which S was 0 (-1 for "before the first"). Persist the three numbers.
    """

    n: int = 0
    statistic: float = 0.0
    last_zero: int = -1

    def step(self, x: bool, *, p0: float, p1: float, h: float
             ) -> tuple[CusumState, ChangePoint | None]:
        """Add one observation; on an alarm return the change point and a restarted state."""
        w1, w0 = _llr_weights(p0, p1)
        s = max(0.0, self.statistic + (w1 if x else w0))
        index = self.n
        if s > h:
            point = ChangePoint(
                onset_index=self.last_zero + 1, detected_index=index, statistic=s,
                direction="up" if p1 > p0 else "down",
                detector=f"bernoulli_cusum p0={p0:g} p1={p1:g} h={h:.3g}",
                message=f"CUSUM {s:.2f} > {h:.3g} since #{self.last_zero + 1}")
            return CusumState(n=index + 1, statistic=0.0, last_zero=index), point
        last_zero = index if s == 0.0 else self.last_zero
        return CusumState(n=index + 1, statistic=s, last_zero=last_zero), None


# --------------------------------------------------------------------------------------------
# Streams of one annotator and the full scan
# --------------------------------------------------------------------------------------------


# The 1% false-alarm budget over 500 gold items is split between the two accuracy detectors
# that run side by side. Gold CUSUM: 0.5% by the chain (cusum_threshold). Accuracy CUSUM (gold
# plus peers): 0.44% by simulation at a calibration rate of 0.1 with two peers of 90% accuracy
# per regular item; 0.92% for either alarming (benchmarks/drift_detection.py, "peer evidence").
GOLD_H_DEFAULT = 8.75
ACCURACY_H_DEFAULT = 11.2


@dataclass(frozen=True)
class DriftConfig:
    """Detector settings for :func:`drift_scan`; stored as JSON on the campaign.

    Accuracy is watched by two one-sided CUSUMs for an error rate rising from ``gold_p0`` to
    ``gold_p1`` (0.10 -> 0.30), side by side, each with half of a 1% false-alarm budget over 500
    gold items:

    * gold errors alone (``gold_h`` = 8.75: 0.5% by :func:`cusum_threshold`). Spending the whole
      1% on it (h = 8.06) gives a median delay of 41-42 gold items for a 90% -> 70% drop; no
      choice of p1 does better at that budget, the CUSUM being near-optimal for one stream.
    * accuracy on every judgment (``peer_evidence``; ``accuracy_h`` = 11.2): gold items plus
      regular items scored against the peers' answers (:func:`peer_evidence`,
      :func:`answer_llr`). With a calibration rate of 0.1 and two peers of 90% accuracy, the
      nine regular judgments between two gold items carry most of the evidence: median delay
      7-8 gold items at 0.44% false alarms (benchmarks/drift_detection.py). Where peers are
      noisy the evidence thins out and the gold detector does the work.

    PREDICTIONS P17's point (0.10 -> 0.25, h = 4; ARLs 1,025 and 37) alarms faster but on
    about 38% of steady annotators within 500 gold items, too many for alerts that pause people.

    Bias streams (``bias_method``):

    * "glr" (default): :func:`detect_bernoulli_glr`, which needs no baseline. Annotators have
      steady biases of their own (that is ``AnnotatorStats``' job), and drift is a *change*
      from it. ``bias_h`` = 10 nats keeps false alarms at about 1% of steady annotators over
      500 A/B judgments at rates 0.2-0.8 (:func:`glr_threshold`, 12,000 simulated streams).
    * "cusum": :func:`detect_two_sided` around the fixed ``bias_baseline`` (0.5 = no bias), so a
      steadily biased annotator alarms too. Estimating the baseline from the annotator's first
      N observations instead was measured and rejected: with N = 50, shift 0.2 and h = 7 a
      third of steady annotators raised a false alarm within 500 observations, because the
      estimation error of the baseline is as large as the shift being watched for.
    """

    gold_p0: float = field(default=0.10, metadata={"help": "In-control gold error rate."})
    gold_p1: float = field(default=0.30, metadata={"help": "Gold error rate to detect."})
    gold_h: float = field(default=GOLD_H_DEFAULT,
                          metadata={"help": "Gold CUSUM threshold (nats)."})
    peer_evidence: bool = field(
        default=True,
        metadata={"help": "Watch accuracy on every judgment (gold plus peers), not gold alone."},
    )
    accuracy_h: float = field(
        default=ACCURACY_H_DEFAULT, metadata={"help": "Accuracy CUSUM threshold (nats)."}
    )
    bias_method: str = field(default="glr", metadata={"help": "'glr' or 'cusum'."})
    bias_h: float = field(default=10.0, metadata={"help": "Bias detector threshold (nats)."})
    bias_min_segment: int = field(
        default=20, metadata={"help": "GLR: fewest observations on each side of a change."}
    )
    bias_max_lookback: int = field(
        default=400, metadata={"help": "GLR: oldest change considered, in observations."}
    )
    bias_shift: float = field(default=0.2, metadata={"help": "CUSUM: rate change to detect."})
    bias_baseline: float = field(default=0.5, metadata={"help": "CUSUM: fixed baseline rate."})


@dataclass(frozen=True)
class AnnotatorStreams:
    """0/1 streams of one annotator plus, per stream, the frame row of each observation."""

    values: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]


def _stream_rows(
    frame: JudgmentFrame, evidence: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per stream: a mask of the rows it uses and the value of every row.

    With ``evidence`` (:func:`peer_evidence`) there is one more stream, accuracy: P(answer
    right) on gold rows and on regular rows with peers.
    """
    ab = frame.choice <= CHOICE_B
    chose_a = frame.choice == CHOICE_A
    masks = {
        STREAM_GOLD_ERROR: np.isfinite(frame.gold_ok),
        STREAM_POSITION: ab,
        STREAM_LENGTH: ab & np.isfinite(frame.len_diff) & (np.nan_to_num(frame.len_diff) != 0),
        STREAM_SYCOPHANCY: ab & np.isfinite(frame.agree_diff)
        & (np.nan_to_num(frame.agree_diff) != 0),
    }
    values = {
        STREAM_GOLD_ERROR: 1.0 - frame.gold_ok,
        STREAM_POSITION: (chose_a == frame.a_on_left).astype(float),
        STREAM_LENGTH: (chose_a == (frame.len_diff > 0)).astype(float),
        STREAM_SYCOPHANCY: (chose_a == (frame.agree_diff > 0)).astype(float),
    }
    if evidence is not None:
        masks[STREAM_ACCURACY] = np.isfinite(evidence)
        values[STREAM_ACCURACY] = evidence
    return masks, values


def annotator_streams(frame: JudgmentFrame, annotator: int,
                      evidence: np.ndarray | None = None) -> AnnotatorStreams:
    """Gold-error and bias streams of one annotator, in the frame's (chronological) order.

    gold_error: 1 - gold_ok on gold rows. position: chose the left response, on A/B rows.
    length: chose the longer response, on A/B rows with a length difference. sycophancy: chose
    the response agreeing with the user, on A/B probe rows. For every annotator at once use
    :func:`annotator_streams_all` (one sort instead of one pass over the frame each).
    """
    masks, values = _stream_rows(frame, evidence)
    mine = frame.annotator == annotator
    rows = {name: np.flatnonzero(mask & mine) for name, mask in masks.items()}
    return AnnotatorStreams(values={name: values[name][rows[name]] for name in rows}, rows=rows)


def annotator_streams_all(frame: JudgmentFrame, n_annotators: int,
                          evidence: np.ndarray | None = None) -> list[AnnotatorStreams]:
    """:func:`annotator_streams` of annotators 0..n_annotators-1, with one stable sort per
    stream (O(n log n) in the rows) rather than a pass over the frame per annotator."""
    masks, values = _stream_rows(frame, evidence)
    split: dict[str, list[np.ndarray]] = {}
    for name, mask in masks.items():
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(frame.annotator[rows], kind="stable")]  # keeps time order
        bounds = np.cumsum(np.bincount(frame.annotator[rows], minlength=n_annotators))[:-1]
        split[name] = np.split(rows, bounds)
    return [
        AnnotatorStreams(values={name: values[name][split[name][w]] for name in masks},
                         rows={name: split[name][w] for name in masks})
        for w in range(n_annotators)
    ]


def drift_scan(
    streams: dict[str, np.ndarray], config: DriftConfig | None = None,
) -> dict[str, list[ChangePoint]]:
    """Change points of every stream of one annotator (keys as in :func:`annotator_streams`).

    ``gold_error`` uses the one-sided CUSUM of the config; ``accuracy`` (P(answer right) per
    judgment, :func:`peer_evidence`) the CUSUM of :func:`answer_llr` increments with the same
    p0 -> p1 and threshold ``accuracy_h``; every other key is a bias stream and uses the
    config's ``bias_method``. Indices are indices into each stream; map them to frame
    rows with ``AnnotatorStreams.rows``.
    """
    config = config or DriftConfig()
    out: dict[str, list[ChangePoint]] = {}
    for name, x in streams.items():
        x = np.asarray(x, dtype=float)
        if name == STREAM_GOLD_ERROR:
            out[name] = detect_bernoulli_cusum(x, p0=config.gold_p0, p1=config.gold_p1,
                                               h=config.gold_h)
        elif name == STREAM_ACCURACY:
            p0, p1, h = config.gold_p0, config.gold_p1, config.accuracy_h
            out[name] = detect_llr_cusum(
                answer_llr(x, p0=p0, p1=p1), h=h, rates=1.0 - x,
                detector=f"accuracy_cusum p0={p0:g} p1={p1:g} h={h:.3g}")
        elif config.bias_method == "glr":
            out[name] = detect_bernoulli_glr(x, h=config.bias_h,
                                             min_segment=config.bias_min_segment,
                                             max_lookback=config.bias_max_lookback)
        elif config.bias_method == "cusum":
            out[name] = detect_two_sided(x, q0=config.bias_baseline, shift=config.bias_shift,
                                         h=config.bias_h)
        else:
            raise ValueError(f"unknown bias_method {config.bias_method!r}")
    return out


def first_new_alarm(
    points: list[tuple[ChangePoint, T, T]], *, reported_until: T | None,
) -> tuple[ChangePoint, T, T] | None:
    """The first change point of one stream that is not an episode already reported.

    ``points`` are (change point, onset time, alarm time) in stream order, as from
    :func:`drift_scan_frame` with times attached; ``reported_until`` is the latest alarm time
    already reported for the stream. A point whose onset is not after it belongs to that
    episode: a rescan moves onsets and alarms a little (the accuracy stream's evidence changes
    as peers answer and the Dawid-Skene fit is redone), and re-reporting them would flood
    admins with one alert per recompute.
    """
    for point in points:
        if reported_until is None or point[1] > reported_until:
            return point
    return None


def drift_scan_frame(
    frame: JudgmentFrame, n_annotators: int, config: DriftConfig | None = None,
    ds: DawidSkeneFit | None = None,
) -> list[dict[str, list[tuple[ChangePoint, int, int]]]]:
    """Drift scan of every annotator: per annotator and stream, (change point, frame row of the
    onset, frame row of the alarm). Streams come from :func:`annotator_streams_all`; given the
    campaign's Dawid-Skene fit and ``config.peer_evidence``, accuracy is also watched on every
    judgment (:func:`peer_evidence`), beside gold items alone."""
    config = config or DriftConfig()
    evidence = peer_evidence(frame, ds) if ds is not None and config.peer_evidence else None
    out = []
    for streams in annotator_streams_all(frame, n_annotators, evidence):
        found = drift_scan(streams.values, config)
        out.append({
            name: [(p, int(streams.rows[name][p.onset_index]),
                    int(streams.rows[name][p.detected_index])) for p in points]
            for name, points in found.items()
        })
    return out
