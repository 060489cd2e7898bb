"""Sequential change-point detection on one annotator's streams. Pure numpy, no ORM.

DESIGN section 4: each annotator has a stream of gold errors, a stream of accuracy on every
judgment (gold items plus regular items scored against the peers), and a stream per bias
(position: chose the left response; length: chose the longer one; sycophancy: chose the one
agreeing with the user).

**Drift means change, not level.** An alert says that *this annotator's own* rate changed: the
estimated onset, and the rates before and after. It never says that an annotator is steadily
bad: an annotator who is 25% wrong from the first item to the last raises no drift alert. That
level is the gold threshold's job (the Wilson interval below the campaign's threshold pauses
the annotator, ``quality.py``), shown apart from drift.

**Accuracy: one-sided GLR scans with no baseline** (:func:`detect_bernoulli_glr`,
``side="up"``). At each observation the generalised likelihood ratio of "one error rate"
against "the error rate rose j observations ago" is maximised over j on a geometric grid, both
rates estimated from the annotator's own stream (Siegmund & Venkatraman 1995; Lai 1995,
section 3). Estimating the before-rate is what the test pays for with its "one rate for the
whole stream" term, so a noisy annotator does not look like a drifting one. Two scans run side
by side: gold errors alone (0/1) and every judgment, where a regular judgment counts as
1 - P(answer right | every other answer to the item), the leave-one-out Dawid-Skene posterior
(:func:`peer_evidence`), on the Bernoulli likelihood with fractional counts. After an alarm a
scan restarts with no memory, so a drift that persists is one change point; a later fall from
the new level is a new one.

Thresholds (``GOLD_GLR_H``, ``ACCURACY_GLR_H``) are calibrated by simulation: the 99.5%
quantile of the scan's maximum on steady 0/1 streams, the largest over in-control error rates
0.02-0.35 (:func:`glr_threshold`), over 500 gold items and over 5,000 judgments (500 gold items
at a calibration rate of 0.1), half of a 1% budget each. For the soft stream the 0/1
calibration is conservative (Hoeffding's convexity bound, see :func:`detect_bernoulli_glr`),
and ``benchmarks/drift_detection.py`` measures false alarms on simulated peer streams at every
rate. What not knowing the level costs (benchmark, 90% -> 70%): on gold alone a median of about
100 gold items instead of about 41 for a CUSUM told p0; on every judgment with two 90% peers
14 gold items (133 judgments) instead of about 7 (61). A noisy annotator's fall 75% -> 55%: 19
gold items (185 judgments) with peers; gold alone catches only 57% of them within 300 items.

**The fixed-baseline CUSUM** (``DriftConfig(accuracy_method="cusum")``; Page 1954; Reynolds &
Stoumbos 1999) is kept as the baseline the benchmark compares against. With increments equal to
the log-likelihood ratio of the error rate p1 against an assumed in-control rate p0,

    S_0 = 0,  S_t = max(0, S_{t-1} + x_t log(p1/p0) + (1 - x_t) log((1-p1)/(1-p0)))   [nats],

an alarm is raised when S_t > h, and the onset is estimated as the observation after the last
time S was 0 before the alarm. Its run-length distribution is exact on a Markov chain (Brook &
Evans 1972): :func:`cusum_run_length` gives the ARL and P(alarm within a horizon),
:func:`cusum_threshold` picks h for a false-alarm budget. It is right only for annotators whose
steady error rate is p0 = 0.10: every steady annotator above about 15% errors alarms within
500 gold items, which is what made alerts mean "noisy" rather than "changed".

PREDICTIONS P17 (p0 = 0.10, p1 = 0.25, h = 4): the chain gives in-control ARL 1,025 and drifted
ARL 37.0 gold items; simulated streams agree (``benchmarks/drift_detection.py`` reports both).

**Bias streams: GLR scan**, two-sided (:func:`detect_bernoulli_glr`): an annotator's steady
bias is not drift, and its level is unknown. A fixed-baseline two-sided CUSUM is available too
(``bias_method="cusum"``); a CUSUM whose baseline is estimated from the first N observations was
tried and rejected (:class:`DriftConfig` gives the numbers).

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
fixed-baseline CUSUM, priced by the benchmarks.
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


def _xlogx(v: np.ndarray) -> np.ndarray:
    """v log v elementwise for v >= 0 (0 at v = 0): the soft-count form of :func:`_klogk`."""
    return v * np.log(np.where(v > 0.0, v, 1.0))


def _segment_loglik(ones: np.ndarray, n: np.ndarray, klogk: np.ndarray | None) -> np.ndarray:
    """Maximised Bernoulli log-likelihood of segments with ``ones`` ones in ``n`` draws.

    s log(s/n) + (n-s) log((n-s)/n) = s log s + (n-s) log(n-s) - n log n; with integer counts
    the three terms are table look-ups (``klogk``), several times faster than evaluating the
    logs. With ``klogk`` None the counts may be fractional (a soft stream: the sum of values in
    [0, 1]); the same formula is then the Bernoulli quasi-log-likelihood.
    """
    if klogk is not None:
        return klogk[ones] + klogk[n - ones] - klogk[n]
    ones = np.clip(ones, 0.0, n)
    return _xlogx(ones) + _xlogx(n - ones) - _xlogx(n)


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0.0) | (x == 1.0)))


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


SIDES = ("both", "up")


def glr_path(
    x: np.ndarray, *, min_segment: int = 20, max_lookback: int = 400, side: str = "both",
    min_post: int | None = None,
) -> np.ndarray:
    """GLR statistic G_t for a change in a Bernoulli rate, on the lag grid, no restarts.

    G_t = max over lags j of LL(x_0..x_{t-j}) + LL(x_{t-j+1}..x_t) - LL(x_0..x_t) (nats),
    with both rates unknown, the segment before the change at least ``min_segment`` long and
    the one after at least ``min_post`` (default: ``min_segment``); -inf where no split is
    allowed yet. ``side="up"`` keeps only splits whose later rate is higher (a
    one-sided test: a rise in the rate of ones). ``x`` may carry leading batch axes (one stream
    per row). A 0/1 stream uses exact integer counts; a soft stream (values in [0, 1], e.g.
    1 - P(answer right)) uses the same likelihood on fractional counts, the Bernoulli
    quasi-likelihood (see :func:`detect_bernoulli_glr` for why its thresholds carry over).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}")
    x = np.asarray(x)
    binary = x.dtype == bool or _is_binary(x)
    n = x.shape[-1]
    if binary:
        csum = np.concatenate([np.zeros(x.shape[:-1] + (1,), np.int64),
                               np.cumsum(x > 0.5, axis=-1, dtype=np.int64)], axis=-1)
        klogk: np.ndarray | None = _klogk(n)
    else:
        csum = np.concatenate([np.zeros(x.shape[:-1] + (1,)),
                               np.cumsum(np.asarray(x, dtype=float), axis=-1)], axis=-1)
        klogk = None
    t = np.arange(n)[:, None]  # segment end, inclusive
    lags = glr_lags(min_segment if min_post is None else min_post, max_lookback)
    split = t + 1 - lags[None, :]  # first post-change index
    ok = split >= min_segment
    split_c = np.where(ok, split, 0)
    n_post = t + 1 - split_c
    ones_all = csum[..., 1:, None]
    ones_pre = np.take(csum, split_c, axis=-1)
    ones_post = ones_all - ones_pre
    stat = (_segment_loglik(ones_pre, split_c, klogk)
            + _segment_loglik(ones_post, n_post, klogk)
            - _segment_loglik(ones_all, t + 1, klogk))
    if side == "up":
        # later rate higher: ones_post / n_post > ones_pre / split, cross-multiplied
        ok = ok & (ones_post * split_c > ones_pre * n_post)
    return np.where(ok, stat, -np.inf).max(axis=-1)


def _best_split(x: np.ndarray, t: int, *, min_segment: int, max_lookback: int,
                side: str = "both", min_post: int | None = None) -> int:
    """Exact maximum-likelihood split of x[0..t] over every allowed k (the onset estimate)."""
    x = np.asarray(x[: t + 1], dtype=float)
    binary = _is_binary(x)
    csum = (np.concatenate([[0], np.cumsum(x > 0.5, dtype=np.int64)]) if binary
            else np.concatenate([[0.0], np.cumsum(x)]))
    min_post = min_segment if min_post is None else min_post
    k = np.arange(max(min_segment, t + 1 - max_lookback), t + 2 - min_post)
    if k.size == 0:
        return t
    klogk = _klogk(t + 1) if binary else None
    pre, post = csum[k], csum[t + 1] - csum[k]
    stat = (_segment_loglik(pre, k, klogk)
            + _segment_loglik(post, t + 1 - k, klogk))
    if side == "up":
        stat = np.where(post * k > pre * (t + 1 - k), stat, -np.inf)
        if not np.isfinite(stat).any():
            return int(k[0])
    return int(k[np.argmax(stat)])


def detect_bernoulli_glr(
    x: np.ndarray, *, h: float, min_segment: int = 20, max_lookback: int = 400,
    side: str = "both", name: str = "bernoulli_glr", min_post: int | None = None,
) -> list[ChangePoint]:
    """Change points of a stream whose in-control rate is unknown (GLR scan).

    At each observation t the generalised likelihood ratio of "one rate" against "a change
    ``j`` observations ago" is maximised over the lag grid of :func:`glr_lags` (Siegmund &
    Venkatraman 1995; Lai 1995, section 3); alarm when it exceeds ``h`` nats. The onset is the
    exact maximum-likelihood split at the alarm, the direction the sign of the rate change.
    After an alarm the scan restarts after it with no memory, so the new regime becomes the
    baseline: a drift that persists at its new level is one change point, not a series.
    ``side="up"`` watches for a rise only. Pick ``h`` with :func:`glr_threshold`.

    ``x`` is 0/1, or soft (values in [0, 1]: an expected error per judgment); a soft stream is
    scanned with the Bernoulli likelihood on fractional counts. A threshold calibrated on 0/1
    streams is conservative for it: for any variable in [0, 1] with mean p, E[exp(l X)] <=
    1 - p + p exp(l) (Hoeffding 1963, the convexity step of his eq. 4.16), so every
    likelihood-ratio exponential martingale that bounds the Bernoulli scan's crossing
    probability bounds the soft scan's too; a [0, 1] variable is at most as variable as a coin
    with its mean. ``benchmarks/drift_detection.py`` checks it on simulated peer streams.
    """
    x = np.asarray(x, dtype=float)
    if np.isnan(x).any():
        raise ValueError("stream has nan entries")
    points: list[ChangePoint] = []
    start = 0
    shortest = min_segment + (min_segment if min_post is None else min_post)
    while x.size - start >= shortest:
        seg = x[start:]
        g = glr_path(seg, min_segment=min_segment, max_lookback=max_lookback, side=side,
                     min_post=min_post)
        above = np.flatnonzero(g > h)
        if above.size == 0:
            break
        t = int(above[0])
        k = _best_split(seg, t, min_segment=min_segment, max_lookback=max_lookback, side=side,
                        min_post=min_post)
        before, after = seg[:k].mean(), seg[k:t + 1].mean()
        points.append(ChangePoint(
            onset_index=start + k, detected_index=start + t, statistic=float(g[t]),
            direction="up" if after > before else "down",
            detector=(f"{name} h={h:.3g} min={min_segment}"
                      + (f"/{min_post}" if min_post is not None else "")
                      + f" lookback={max_lookback}"),
            message=_message(x, start, start + k, start + t)))
        start += t + 1
    return points


def glr_null_maxima(
    rate: float, *, horizon: int, n_sim: int, min_segment: int = 20, max_lookback: int = 400,
    side: str = "both", rng: np.random.Generator, min_post: int | None = None,
) -> np.ndarray:
    """max_t G_t over ``horizon`` observations of ``n_sim`` steady 0/1 streams at ``rate``.

    An alarm within the horizon happens exactly when this maximum exceeds h, so its upper
    quantiles are thresholds and its survival function is the false-alarm share. Streams are
    simulated in chunks of about 2M scan cells to bound memory.
    """
    lags = glr_lags(min_segment if min_post is None else min_post, max_lookback).size
    chunk = max(1, 2_000_000 // (horizon * lags))
    maxima = []
    for lo in range(0, n_sim, chunk):
        sims = rng.random((min(chunk, n_sim - lo), horizon)) < rate
        maxima.append(glr_path(sims, min_segment=min_segment, max_lookback=max_lookback,
                               side=side, min_post=min_post).max(axis=-1))
    return np.concatenate(maxima)


def glr_threshold(
    *, false_alarm_rate: float, horizon: int, rates: tuple[float, ...] = (0.2, 0.5, 0.8),
    min_segment: int = 20, max_lookback: int = 400, n_sim: int = 4000, seed: int = 0,
    side: str = "both", min_post: int | None = None,
) -> float:
    """h such that P(GLR alarm within ``horizon`` | constant rate) <= target at every rate.

    There is no exact chain as for the CUSUM, so this is the (1 - target) quantile of the
    simulated max_t G_t over ``horizon`` observations (:func:`glr_null_maxima`), the largest
    over ``rates``. The GLR is nearly pivotal in the rate away from 0 and 1; near them (an
    annotator who almost never errs) the discreteness of the counts matters, which is why the
    accuracy detectors are calibrated over in-control rates 0.02-0.35. Monte Carlo error: with
    n_sim = 4000 and a 1% target the quantile rests on about 40 exceedances per rate.
    """
    rng = np.random.default_rng(seed)
    worst = 0.0
    for rate in rates:
        maxima = glr_null_maxima(rate, horizon=horizon, n_sim=n_sim, min_segment=min_segment,
                                 max_lookback=max_lookback, side=side, rng=rng,
                                 min_post=min_post)
        worst = max(worst, float(np.quantile(maxima, 1.0 - false_alarm_rate)))
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
# that run side by side, half each.
#
# Default (GLR, no baseline): thresholds are the 99.5% quantiles of the one-sided scan's maximum
# (min_segment 20 before the change, 10 after, lookback 400) on steady 0/1 streams, the largest
# over in-control error rates (glr_threshold, side="up"). Gold GLR over 500 gold items, 10,000
# streams per rate at 0.02, 0.05, 0.10, ..., 0.35: q99.5 rises with the rate from 9.07 (0.02)
# to 11.09 (0.35), so h = 11.1. Accuracy GLR over 5,000 judgments (500 gold items at a
# calibration rate of 0.1), 2,000 streams per rate at 0.20-0.35, where the quantile is largest
# (13.0, 14.18, 14.17, 13.5 at 0.20, 0.25, 0.30, 0.35), so h = 14.2; calibrated on 0/1 streams,
# which bounds the soft stream's false alarms (detect_bernoulli_glr). Recompute with
# ``benchmarks/drift_detection.py --calibrate N`` (other seeds: expect Monte Carlo wobble).
GOLD_GLR_H = 11.1
ACCURACY_GLR_H = 14.2
#
# Baseline (fixed in-control rate p0 = 0.10, accuracy_method="cusum"): gold CUSUM 0.5% by the
# chain (cusum_threshold); accuracy CUSUM 0.44% by simulation at a calibration rate of 0.1 with
# two peers of 90% accuracy per regular item. Valid only for annotators whose steady error rate
# is 0.10: a steady 25% annotator alarms within a few dozen gold items.
GOLD_H_DEFAULT = 8.75
ACCURACY_H_DEFAULT = 11.2
ACCURACY_METHODS = ("glr", "cusum")


@dataclass(frozen=True)
class DriftConfig:
    """Detector settings for :func:`drift_scan`.

    Accuracy (``accuracy_method``) is watched by two one-sided detectors side by side, each
    with half of a 1% false-alarm budget over 500 gold items: gold errors alone, and every
    judgment scored against the peers (``peer_evidence``: gold items plus regular items, each
    counting 1 - P(answer right | the other answers), :func:`peer_evidence`).

    * "glr" (default): :func:`detect_bernoulli_glr` with ``side="up"``: the generalised
      likelihood ratio of "one error rate" against "the error rate rose j observations ago",
      both rates estimated from the annotator's own stream. No in-control rate is assumed, so an
      annotator who is steadily 25% wrong raises no alert; only a *change* does. Being steadily
      below the accuracy threshold is a level, handled by the gold threshold and pause
      (``quality.py``), not by this module. Thresholds ``gold_glr_h`` / ``accuracy_glr_h`` are
      calibrated by simulation across in-control error rates 0.02-0.35 (module constants).
      After an alarm the scan restarts with no memory: the new level becomes the baseline, so a
      drift that persists is one change point, not a series.
    * "cusum": the former detectors, Bernoulli CUSUMs for an error rate rising from ``gold_p0``
      to ``gold_p1`` (0.10 -> 0.30; ``gold_h`` = 8.75 for gold, ``accuracy_h`` = 11.2 for the
      :func:`answer_llr` stream). Kept as the benchmark's baseline: a known p0 buys speed (a
      median of 41-45 gold items on gold alone for 90% -> 70%, against about 100 for the GLR)
      but every annotator whose steady error rate is above p0 alarms.

    PREDICTIONS P17's point (CUSUM 0.10 -> 0.25, h = 4; ARLs 1,025 and 37) alarms faster but on
    about 38% of steady annotators within 500 gold items, too many for alerts that pause people.

    Bias streams (``bias_method``):

    * "glr" (default): :func:`detect_bernoulli_glr` (two-sided), which needs no baseline.
      Annotators have steady biases of their own (that is ``AnnotatorStats``' job), and drift is
      a *change* from it. ``bias_h`` = 10 nats keeps false alarms at about 1% of steady
      annotators over 500 A/B judgments at rates 0.2-0.8 (:func:`glr_threshold`, 12,000
      simulated streams).
    * "cusum": :func:`detect_two_sided` around the fixed ``bias_baseline`` (0.5 = no bias), so a
      steadily biased annotator alarms too. Estimating the baseline from the annotator's first
      N observations instead was measured and rejected: with N = 50, shift 0.2 and h = 7 a
      third of steady annotators raised a false alarm within 500 observations, because the
      estimation error of the baseline is as large as the shift being watched for. The same
      holds for accuracy: a CUSUM of p-hat -> p-hat + 0.2 with p-hat the error rate before the
      candidate change (even inflated by one standard error) needed h = 52 nats for 0.5% over
      500 gold items and then missed 70% of 90% -> 70% falls; the GLR's term for the whole
      stream under one rate is what pays for not knowing the baseline.
    """

    accuracy_method: str = field(
        default="glr", metadata={"help": "'glr' (no baseline; default) or 'cusum' (fixed p0)."})
    gold_glr_h: float = field(default=GOLD_GLR_H,
                              metadata={"help": "Gold GLR threshold (nats)."})
    accuracy_glr_h: float = field(default=ACCURACY_GLR_H,
                                  metadata={"help": "Accuracy GLR threshold (nats)."})
    accuracy_min_segment: int = field(
        default=20, metadata={"help": "Accuracy GLR: fewest observations before a change."})
    accuracy_min_post: int = field(
        default=10, metadata={"help": "Accuracy GLR: fewest observations after a change."})
    accuracy_max_lookback: int = field(
        default=400, metadata={"help": "Accuracy GLR: oldest change considered, observations."})
    gold_p0: float = field(default=0.10, metadata={"help": "CUSUM: in-control gold error rate."})
    gold_p1: float = field(default=0.30, metadata={"help": "CUSUM: gold error rate to detect."})
    gold_h: float = field(default=GOLD_H_DEFAULT,
                          metadata={"help": "CUSUM: gold threshold (nats)."})
    peer_evidence: bool = field(
        default=True,
        metadata={"help": "Watch accuracy on every judgment (gold plus peers), not gold alone."},
    )
    accuracy_h: float = field(
        default=ACCURACY_H_DEFAULT, metadata={"help": "CUSUM: accuracy threshold (nats)."}
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

    ``gold_error`` (0/1) and ``accuracy`` (P(answer right) per judgment, :func:`peer_evidence`)
    use the config's ``accuracy_method``: by default a one-sided GLR scan for a rise in the
    error rate (the accuracy stream scanned as 1 - P(answer right)), relative to the
    annotator's own earlier rate; with "cusum", CUSUMs from the fixed ``gold_p0`` to
    ``gold_p1``. Every other key is a bias stream and uses the config's ``bias_method``.
    Indices are indices into each stream; map them to frame rows with ``AnnotatorStreams.rows``.
    """
    config = config or DriftConfig()
    if config.accuracy_method not in ACCURACY_METHODS:
        raise ValueError(f"unknown accuracy_method {config.accuracy_method!r}")
    glr = config.accuracy_method == "glr"
    segment = {"min_segment": config.accuracy_min_segment,
               "min_post": config.accuracy_min_post,
               "max_lookback": config.accuracy_max_lookback}
    out: dict[str, list[ChangePoint]] = {}
    for name, x in streams.items():
        x = np.asarray(x, dtype=float)
        if name == STREAM_GOLD_ERROR and glr:
            out[name] = detect_bernoulli_glr(x, h=config.gold_glr_h, side="up",
                                             name="error_glr", **segment)
        elif name == STREAM_GOLD_ERROR:
            out[name] = detect_bernoulli_cusum(x, p0=config.gold_p0, p1=config.gold_p1,
                                               h=config.gold_h)
        elif name == STREAM_ACCURACY and glr:
            out[name] = detect_bernoulli_glr(1.0 - x, h=config.accuracy_glr_h, side="up",
                                             name="accuracy_glr", **segment)
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
