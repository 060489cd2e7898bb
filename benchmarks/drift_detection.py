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
  bias drift        GLR scan with the default DriftConfig on position streams: false alarms on
                    steady streams at rates 0.2 / 0.5 / 0.8, delay and onset error for a shift
                    0.5 -> 0.75; river's ADWIN on the same streams for comparison.
  submit path       microseconds per CusumState.step.

The last line printed is one JSON object; ``median_delay_gold_items`` and ``false_alarm_rate``
are the primary operating point's.

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
    cusum_path,
    cusum_run_length,
    cusum_threshold,
    drift_scan,
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
    p17_point = gold_drift(steady, drifting, DriftConfig(), args.onset)
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
        "median_delay_gold_items": primary["median_delay"],
        "false_alarm_rate": primary["false_alarm_rate"],
        "operating_point": {k: primary[k] for k in ("p0", "p1", "h", "budget")},
        "gold_drift": primary,
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
