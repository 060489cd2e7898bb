"""Benchmark of drift detection (annotation/drift.py) on simulated annotators with known onsets.

Measures, all seeded:

  P17 calibration   Bernoulli CUSUM p0 = 0.10 -> p1 = 0.25, h = 4: in-control and drifted ARL
                    from the exact Markov chain and from --arl-streams simulated streams,
                    against the predicted 1.0k and 37 gold items (+/- 10%).
  gold drift        --steady annotators at 90% gold accuracy and --drifting annotators whose
                    accuracy falls to 70% at gold item --onset, --horizon gold items each, run
                    through drift_scan(): false-alarm share (steady annotators with any alarm),
                    median detection delay (gold items from the onset to the alarm, the alarm
                    item counted) and median |onset error|. Primary operating point: p1 = 0.3
                    with h from cusum_threshold() for a 1% false-alarm budget over the horizon;
                    also the P17 point and the frontier over p1 at that budget.
  peer evidence     the default detectors side by side on whole annotator streams: gold items
                    every --gold-every judgments, regular items in between, each shared with
                    two peers of 90% accuracy. Gold CUSUM (DriftConfig.gold_h) plus the accuracy
                    CUSUM on every judgment (answer_llr of the leave-one-out posterior given the
                    peers' answers; the posterior uses the peers' true accuracy and the class
                    prior, which is what a Dawid-Skene fit converges to; the test suite runs the
                    real fit). Steady annotators: share with an alarm from either detector over
                    --horizon gold items; drifting: accuracy 90% -> 70% on every item from gold
                    item --onset, delay in gold items to the first alarm of either.
  bias drift        GLR scan with the default DriftConfig on position streams: false alarms on
                    steady streams at rates 0.2 / 0.5 / 0.8, delay and onset error for a shift
                    0.5 -> 0.75; river's ADWIN on the same streams for comparison.
  submit path       microseconds per CusumState.step.

The last line printed is one JSON object; ``median_delay_gold_items`` and ``false_alarm_rate``
are those of the default detectors (peer evidence); ``gold_only`` holds the best gold-only CUSUM
at the whole 1% budget.

    .venv/bin/python benchmarks/drift_detection.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotation.drift import (  # noqa: E402
    STREAM_GOLD_ERROR,
    STREAM_POSITION,
    CusumState,
    DriftConfig,
    answer_llr,
    cusum_path,
    cusum_run_length,
    cusum_threshold,
    drift_scan,
    llr_cusum_path,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def simulated_arl(rng, p: float, *, n_streams: int, length: int) -> tuple[float, float, float]:
    """(mean run length, its standard error, share censored) of the P17 chart at rate p."""
    runs, censored = [], 0
    for lo in range(0, n_streams, 500):
        s = cusum_path(rng.random((min(500, n_streams - lo), length)) < p, p0=0.10, p1=0.25)
        alarm = s > 4.0
        hit = alarm.any(axis=1)
        censored += int((~hit).sum())
        runs.append(alarm.argmax(axis=1)[hit] + 1)
    run = np.concatenate(runs)
    return float(run.mean()), float(run.std() / np.sqrt(run.size)), censored / n_streams


def gold_drift(steady, drifting, config: DriftConfig, onset: int) -> dict[str, float]:
    """False-alarm share on steady streams; delay and onset error on drifting ones."""
    false_alarms = np.mean([
        bool(drift_scan({STREAM_GOLD_ERROR: x}, config)[STREAM_GOLD_ERROR]) for x in steady])
    delays, onset_errors, early = [], [], 0
    for x in drifting:
        points = drift_scan({STREAM_GOLD_ERROR: x}, config)[STREAM_GOLD_ERROR]
        early += any(p.detected_index < onset for p in points)
        after = [p for p in points if p.detected_index >= onset]
        if after:
            delays.append(after[0].detected_index - onset + 1)
            onset_errors.append(abs(after[0].onset_index - onset))
        else:
            delays.append(np.inf)
    delays = np.array(delays)
    return {
        "false_alarm_rate": float(false_alarms),
        "median_delay": float(np.median(delays)),
        "mean_delay_detected": float(delays[np.isfinite(delays)].mean()),
        "detected_share": float(np.isfinite(delays).mean()),
        "median_onset_error": float(np.median(onset_errors)) if onset_errors else None,
        "alarm_before_onset_share": early / len(drifting),
    }


CLASS_PRIOR = np.array([0.4, 0.4, 0.1, 0.1])  # A, B, tie, both_bad


def peer_streams(rng, n: int, *, horizon: int, gold_every: int, onset: int | None,
                 peers: int = 2, peer_accuracy: float = 0.9, accuracy: float = 0.9,
                 drifted_accuracy: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """(P(answer right | the other answers) per judgment, gold mask) for n annotators.

    Judgment j is a gold item when j % gold_every == gold_every - 1 (p_right is then 1 or 0);
    otherwise a regular item answered by ``peers`` others. Errors pick one of the other three
    labels at random, for the annotator and the peers alike. From gold item ``onset`` on, the
    annotator's accuracy is ``drifted_accuracy`` on every item.
    """
    length = horizon * gold_every
    gold = np.arange(length) % gold_every == gold_every - 1
    acc = np.full(length, accuracy)
    if onset is not None:
        acc[np.flatnonzero(gold)[onset]:] = drifted_accuracy
    k = CLASS_PRIOR.size
    truth = rng.choice(k, size=(n, length), p=CLASS_PRIOR)

    def answers(p_right):
        right = rng.random((n, length)) < p_right
        return np.where(right, truth, (truth + rng.integers(1, k, size=truth.shape)) % k), right

    mine, right = answers(acc)
    log_post = np.broadcast_to(np.log(CLASS_PRIOR), (n, length, k)).copy()
    for _ in range(peers):
        theirs, _ = answers(peer_accuracy)
        log_post += np.where(theirs[..., None] == np.arange(k), np.log(peer_accuracy),
                             np.log((1 - peer_accuracy) / (k - 1)))
    log_post -= log_post.max(axis=-1, keepdims=True)
    post = np.exp(log_post)
    p_right = np.take_along_axis(post, mine[..., None], axis=-1)[..., 0] / post.sum(axis=-1)
    return np.where(gold, right.astype(float), p_right), gold


def peer_drift(rng, *, n_steady: int, n_drifting: int, horizon: int, gold_every: int,
               onset: int, config: DriftConfig, chunk: int = 1000) -> dict:
    """The default detectors (gold CUSUM and accuracy CUSUM) on whole annotator streams."""
    p0, p1 = config.gold_p0, config.gold_p1

    def paths(p_right, gold):
        acc = llr_cusum_path(answer_llr(p_right, p0=p0, p1=p1))
        gold_only = cusum_path(p_right[:, gold] < 0.5, p0=p0, p1=p1)
        return acc > config.accuracy_h, gold_only > config.gold_h

    fa_any = fa_acc = fa_gold = 0
    for lo in range(0, n_steady, chunk):
        acc_alarm, gold_alarm = paths(*peer_streams(
            rng, min(chunk, n_steady - lo), horizon=horizon, gold_every=gold_every, onset=None))
        fa_acc += int(acc_alarm.any(axis=1).sum())
        fa_gold += int(gold_alarm.any(axis=1).sum())
        fa_any += int((acc_alarm.any(axis=1) | gold_alarm.any(axis=1)).sum())
    delays, delays_acc, delays_gold, early = [], [], [], 0
    for lo in range(0, n_drifting, chunk):
        p_right, gold = peer_streams(rng, min(chunk, n_drifting - lo), horizon=horizon,
                                     gold_every=gold_every, onset=onset)
        acc_alarm, gold_alarm = paths(p_right, gold)
        gold_pos = np.flatnonzero(gold)
        start = gold_pos[onset]
        gold_done = np.cumsum(gold)  # gold items answered up to and including judgment j
        early += int((acc_alarm[:, :start].any(axis=1)
                      | gold_alarm[:, :onset].any(axis=1)).sum())
        for a_row, g_row in zip(acc_alarm, gold_alarm, strict=True):
            a = np.flatnonzero(a_row[start:])
            g = np.flatnonzero(g_row[onset:])
            d_acc = gold_done[start + a[0]] - onset if a.size else np.inf
            d_gold = g[0] + 1 if g.size else np.inf
            delays_acc.append(d_acc)
            delays_gold.append(d_gold)
            delays.append(min(d_acc, d_gold))
    delays = np.array(delays, dtype=float)
    return {
        "false_alarm_rate": fa_any / n_steady,
        "false_alarm_rate_accuracy": fa_acc / n_steady,
        "false_alarm_rate_gold": fa_gold / n_steady,
        "median_delay": float(np.median(delays)),
        "median_delay_accuracy": float(np.median(delays_acc)),
        "median_delay_gold": float(np.median(delays_gold)),
        "detected_share": float(np.isfinite(delays).mean()),
        "alarm_before_onset_share": early / n_drifting,
        "gold_h": config.gold_h, "accuracy_h": config.accuracy_h, "gold_every": gold_every,
        "n_steady": n_steady, "n_drifting": n_drifting,
    }


def bias_drift(rng, n: int) -> dict[str, dict[str, float]]:
    from river import drift as river_drift

    config = DriftConfig()
    steady = [(rng.random(500) < rate).astype(float) for rate in [0.2, 0.5, 0.8] * (n // 3)]
    shifted = [np.concatenate([rng.random(250) < 0.5, rng.random(250) < 0.75]).astype(float)
               for _ in range(n // 3)]

    def glr_first_after(x):
        points = [p for p in drift_scan({STREAM_POSITION: x}, config)[STREAM_POSITION]
                  if p.detected_index >= 250]
        return (points[0].detected_index, points[0].onset_index) if points else None

    def adwin_alarms(x):
        detector, out = river_drift.ADWIN(), []
        for t, v in enumerate(x):
            detector.update(float(v))
            if detector.drift_detected:
                out.append((t, t - detector.width + 1))  # the kept window starts at the cut
        return out

    result = {}
    for name in ("glr", "adwin"):
        start = time.perf_counter()
        if name == "glr":
            fa = np.mean([bool(drift_scan({STREAM_POSITION: x}, config)[STREAM_POSITION])
                          for x in steady])
            found = [glr_first_after(x) for x in shifted]
        else:
            fa = np.mean([bool(adwin_alarms(x)) for x in steady])
            found = [next(((t, o) for t, o in adwin_alarms(x) if t >= 250), None)
                     for x in shifted]
        delays = np.array([f[0] - 250 + 1 if f else np.inf for f in found])
        errors = [abs(f[1] - 250) for f in found if f]
        result[name] = {
            "false_alarm_rate": float(fa),
            "median_delay": float(np.median(delays)),
            "detected_share": float(np.isfinite(delays).mean()),
            "median_onset_error": float(np.median(errors)) if errors else None,
            "seconds": round(time.perf_counter() - start, 2),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=int, default=40_000)
    parser.add_argument("--drifting", type=int, default=1_000)
    parser.add_argument("--horizon", type=int, default=500)
    parser.add_argument("--onset", type=int, default=200)
    parser.add_argument("--arl-streams", type=int, default=10_000)
    parser.add_argument("--bias-streams", type=int, default=600)
    parser.add_argument("--peer-steady", type=int, default=20_000)
    parser.add_argument("--peer-drifting", type=int, default=2_000)
    parser.add_argument("--gold-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    log("P17 run lengths")
    chain0 = cusum_run_length(0.10, p0=0.10, p1=0.25, h=4.0, horizon=args.horizon)
    chain1 = cusum_run_length(0.25, p0=0.10, p1=0.25, h=4.0)
    sim0 = simulated_arl(rng, 0.10, n_streams=args.arl_streams, length=10_000)
    sim1 = simulated_arl(rng, 0.25, n_streams=args.arl_streams, length=1_000)
    p17 = {
        "predicted": {"arl0": 1000, "arl1": 37},
        "chain": {"arl0": round(chain0.arl, 1), "arl1": round(chain1.arl, 2),
                  "p_false_alarm_within_horizon": round(chain0.p_alarm_by_horizon, 4)},
        "simulated": {"arl0": round(sim0[0], 1), "arl0_se": round(sim0[1], 1),
                      "arl0_censored_share": sim0[2],
                      "arl1": round(sim1[0], 2), "arl1_se": round(sim1[1], 2)},
        "within_10_percent": bool(abs(chain0.arl / 1000 - 1) <= 0.1
                                  and abs(chain1.arl / 37 - 1) <= 0.1),
    }
    log(f"P17: {p17}")

    log("gold drift 90% -> 70%")
    steady = (rng.random((args.steady, args.horizon)) < 0.10).astype(float)
    drifting = np.concatenate(
        [rng.random((args.drifting, args.onset)) < 0.10,
         rng.random((args.drifting, args.horizon - args.onset)) < 0.30], axis=1).astype(float)
    h_primary = cusum_threshold(p0=0.10, p1=0.30, false_alarm_rate=0.01, horizon=args.horizon)
    primary = gold_drift(steady, drifting, DriftConfig(gold_p1=0.30, gold_h=h_primary),
                         args.onset)
    primary.update({"p0": 0.10, "p1": 0.30, "h": round(h_primary, 3),
                    "budget": 0.01,
                    "chain_p_false_alarm": round(cusum_run_length(
                        0.10, p0=0.10, p1=0.30, h=h_primary,
                        horizon=args.horizon).p_alarm_by_horizon, 4)})
    log(f"primary: {primary}")
    p17_point = gold_drift(steady, drifting, DriftConfig(gold_p1=0.25, gold_h=4.0), args.onset)
    p17_point.update({"p0": 0.10, "p1": 0.25, "h": 4.0})
    log(f"P17 point: {p17_point}")
    frontier = []
    for budget in (0.01, 0.02, 0.05):
        for p1 in (0.25, 0.30, 0.35):
            h = cusum_threshold(p0=0.10, p1=p1, false_alarm_rate=budget, horizon=args.horizon)
            point = gold_drift(steady[:3000], drifting, DriftConfig(gold_p1=p1, gold_h=h),
                               args.onset)
            frontier.append({"budget": budget, "p1": p1, "h": round(h, 3),
                             "false_alarm_rate": point["false_alarm_rate"],
                             "median_delay": point["median_delay"]})
            log(f"frontier: {frontier[-1]}")

    log("peer evidence: the default detectors on whole annotator streams")
    peers = peer_drift(rng, n_steady=args.peer_steady, n_drifting=args.peer_drifting,
                       horizon=args.horizon, gold_every=args.gold_every, onset=args.onset,
                       config=DriftConfig())
    log(f"peer evidence: {peers}")

    log("bias drift")
    bias = bias_drift(rng, args.bias_streams)
    log(f"bias: {bias}")

    state = CusumState()
    xs = (rng.random(200_000) < 0.1).tolist()
    start = time.perf_counter()
    for x in xs:
        state, _ = state.step(x, p0=0.10, p1=0.25, h=4.0)
    step_us = (time.perf_counter() - start) / len(xs) * 1e6

    result = {
        "median_delay_gold_items": peers["median_delay"],
        "false_alarm_rate": peers["false_alarm_rate"],
        "operating_point": {"p0": DriftConfig().gold_p0, "p1": DriftConfig().gold_p1,
                            "gold_h": DriftConfig().gold_h,
                            "accuracy_h": DriftConfig().accuracy_h, "budget": 0.01},
        "peer_evidence": peers,
        "gold_only": primary,
        "p17_point": p17_point,
        "p17_arl": p17,
        "frontier": frontier,
        "bias_drift": bias,
        "cusum_step_us": round(step_us, 2),
        "n_steady": args.steady, "n_drifting": args.drifting, "horizon": args.horizon,
        "onset": args.onset, "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
