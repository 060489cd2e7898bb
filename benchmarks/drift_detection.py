"""Benchmark of drift detection (annotation/drift.py) on simulated annotators with known onsets.

Drift means change, not level: a steady annotator, however noisy, must raise no accuracy alert;
a fall in accuracy must. Measures, all seeded:

  level vs change   steady annotators at in-control error rates 0.02, 0.05, 0.10, ..., 0.35
                    (--steady per rate) over --horizon gold items, a gold item every --gold-every
                    judgments and regular items in between, each shared with two peers of
                    --peer-accuracy. Share of steady annotators with any accuracy alarm, for the
                    default detectors (one-sided GLR scans with no baseline, on gold errors and
                    on every judgment) and, measured on the same streams, the baseline: the
                    former CUSUMs with a fixed in-control error rate p0 = 0.10.
  drift delay       accuracy 0.90 -> 0.70 and 0.75 -> 0.55 (and 0.98 -> 0.78) from gold item
                    --onset on (--drifting annotators each): share detected within the horizon,
                    median delay in gold items and in judgments (from the first drifted
                    judgment to the alarm, both counted), median onset error in judgments,
                    share with an alarm before the onset; for either detector and each alone.
  thresholds        with --calibrate N: recompute the GLR thresholds (drift.glr_threshold,
                    N streams per rate) that DriftConfig's defaults were set from.
  P17 calibration   Bernoulli CUSUM p0 = 0.10 -> p1 = 0.25, h = 4: in-control and drifted ARL
                    from the exact Markov chain and from --arl-streams simulated streams.
  bias drift        GLR scan with the default DriftConfig on position streams: false alarms on
                    steady streams at rates 0.2 / 0.5 / 0.8, delay and onset error for a shift
                    0.5 -> 0.75; river's ADWIN on the same streams for comparison.
  submit path       microseconds per CusumState.step.

The regular items are scored by the posterior of their label given the peers' answers, computed
from the peers' true accuracy and the class prior (what a Dawid-Skene fit converges to);
tests/annotation/test_drift_peers.py and test_drift_level.py run the real fit. Steady
annotators are scanned in batches (glr_path / cusum paths: an alarm within the horizon is the
path's maximum above h, exactly as in drift_scan); drifting ones one by one through drift_scan.

The last line printed is one JSON object: ``false_alarm_max`` (the largest share over the rates,
default detectors), ``false_alarm_by_rate``, ``median_delay_gold_items`` and
``median_delay_judgments`` (90% -> 70%, default), ``drifts`` (every scenario, default and
baseline), ``baseline`` (the same for the fixed-p0 CUSUMs).

    .venv/bin/python benchmarks/drift_detection.py                  # full size
    .venv/bin/python benchmarks/drift_detection.py --steady 200 --drifting 100 --bias-streams 0
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
    STREAM_ACCURACY,
    STREAM_GOLD_ERROR,
    STREAM_POSITION,
    CusumState,
    DriftConfig,
    answer_llr,
    cusum_path,
    cusum_run_length,
    drift_scan,
    glr_path,
    glr_threshold,
    llr_cusum_path,
)

RATES = (0.02, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35)
DRIFTS = ((0.90, 0.70), (0.75, 0.55), (0.98, 0.78))


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


def steady_alarms(p_right: np.ndarray, gold: np.ndarray, config: DriftConfig
                  ) -> dict[str, np.ndarray]:
    """Per stream: did each steady annotator raise any alarm within the horizon?"""
    if config.accuracy_method == "glr":
        seg = {"min_segment": config.accuracy_min_segment, "min_post": config.accuracy_min_post,
               "max_lookback": config.accuracy_max_lookback, "side": "up"}
        acc = glr_path(1.0 - p_right, **seg).max(axis=-1) > config.accuracy_glr_h
        gold_only = glr_path(p_right[:, gold] < 0.5, **seg).max(axis=-1) > config.gold_glr_h
    else:
        p0, p1 = config.gold_p0, config.gold_p1
        acc = llr_cusum_path(answer_llr(p_right, p0=p0, p1=p1)).max(axis=-1) > config.accuracy_h
        gold_only = cusum_path(p_right[:, gold] < 0.5, p0=p0, p1=p1).max(axis=-1) > config.gold_h
    return {STREAM_ACCURACY: acc, STREAM_GOLD_ERROR: gold_only}


def level_vs_change(rng, *, n: int, horizon: int, gold_every: int, peer_accuracy: float,
                    configs: dict[str, DriftConfig], chunk: int = 100) -> dict:
    """False-alarm shares of steady annotators per in-control error rate, per detector set."""
    out: dict[str, dict] = {name: {} for name in configs}
    for rate in RATES:
        counts = {name: {"either": 0, STREAM_ACCURACY: 0, STREAM_GOLD_ERROR: 0}
                  for name in configs}
        for lo in range(0, n, chunk):
            p_right, gold = peer_streams(rng, min(chunk, n - lo), horizon=horizon,
                                         gold_every=gold_every, onset=None,
                                         peer_accuracy=peer_accuracy, accuracy=1.0 - rate)
            for name, config in configs.items():
                alarms = steady_alarms(p_right, gold, config)
                counts[name]["either"] += int((alarms[STREAM_ACCURACY]
                                               | alarms[STREAM_GOLD_ERROR]).sum())
                for stream in (STREAM_ACCURACY, STREAM_GOLD_ERROR):
                    counts[name][stream] += int(alarms[stream].sum())
        for name in configs:
            out[name][f"{rate:g}"] = {k: v / n for k, v in counts[name].items()}
        log(f"rate {rate:g}: " + ", ".join(
            f"{name} {out[name][f'{rate:g}']['either']:.2%}" for name in configs))
    return out


def drift_delays(rng, *, n: int, horizon: int, gold_every: int, onset: int,
                 peer_accuracy: float, accuracy: float, drifted: float,
                 configs: dict[str, DriftConfig]) -> dict:
    """Detection of a fall in accuracy from gold item ``onset`` on, through drift_scan."""
    p_right, gold = peer_streams(rng, n, horizon=horizon, gold_every=gold_every, onset=onset,
                                 peer_accuracy=peer_accuracy, accuracy=accuracy,
                                 drifted_accuracy=drifted)
    gold_pos = np.flatnonzero(gold)
    start = int(gold_pos[onset])  # first drifted judgment (a gold item)
    gold_done = np.cumsum(gold)  # gold items answered up to and including judgment j
    out = {}
    for name, config in configs.items():
        rows: dict[str, list] = {"either": [], STREAM_ACCURACY: [], STREAM_GOLD_ERROR: []}
        onset_err, early = [], 0
        for pr in p_right:
            found = drift_scan({STREAM_ACCURACY: pr, STREAM_GOLD_ERROR: 1.0 - pr[gold]}, config)
            # judgment index of each alarm and onset
            acc = [(p.detected_index, p.onset_index) for p in found[STREAM_ACCURACY]]
            gld = [(int(gold_pos[p.detected_index]), int(gold_pos[p.onset_index]))
                   for p in found[STREAM_GOLD_ERROR]]
            early += any(a < start for a, _ in acc + gld)
            firsts = {}
            for stream, points in ((STREAM_ACCURACY, acc), (STREAM_GOLD_ERROR, gld)):
                after = [p for p in points if p[0] >= start]
                firsts[stream] = after[0] if after else None
            hits = [f for f in firsts.values() if f is not None]
            firsts["either"] = min(hits) if hits else None
            for stream, first in firsts.items():
                rows[stream].append(first)
            if firsts["either"] is not None:
                onset_err.append(abs(firsts["either"][1] - start))

        def summary(found):
            judg = np.array([f[0] - start + 1 if f else np.inf for f in found], dtype=float)
            golds = np.array([gold_done[f[0]] - onset if f else np.inf for f in found],
                             dtype=float)
            return {"detected_share": float(np.isfinite(judg).mean()),
                    "median_delay_gold_items": float(np.median(golds)),
                    "median_delay_judgments": float(np.median(judg))}

        out[name] = {stream: summary(found) for stream, found in rows.items()}
        out[name]["either"]["median_onset_error_judgments"] = (
            float(np.median(onset_err)) if onset_err else None)
        out[name]["either"]["alarm_before_onset_share"] = early / n
    return out


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
    parser.add_argument("--steady", type=int, default=500, help="steady annotators per rate")
    parser.add_argument("--drifting", type=int, default=150, help="per drift scenario")
    parser.add_argument("--horizon", type=int, default=500, help="gold items per annotator")
    parser.add_argument("--onset", type=int, default=200, help="gold item of the change")
    parser.add_argument("--gold-every", type=int, default=10)
    parser.add_argument("--peer-accuracy", type=float, default=0.9)
    parser.add_argument("--arl-streams", type=int, default=2_000)
    parser.add_argument("--bias-streams", type=int, default=300)
    parser.add_argument("--calibrate", type=int, default=0,
                        help="recompute the GLR thresholds with this many streams per rate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    default = DriftConfig()
    configs = {"glr": default, "cusum_p0_0.10": DriftConfig(accuracy_method="cusum")}

    calibration = None
    if args.calibrate:
        log(f"GLR thresholds, {args.calibrate} steady 0/1 streams per rate")
        seg = {"min_segment": default.accuracy_min_segment,
               "min_post": default.accuracy_min_post,
               "max_lookback": default.accuracy_max_lookback, "side": "up", "rates": RATES,
               "false_alarm_rate": 0.005, "n_sim": args.calibrate}
        calibration = {
            "gold_glr_h": round(glr_threshold(horizon=args.horizon, seed=2026, **seg), 3),
            "accuracy_glr_h": round(glr_threshold(horizon=args.horizon * args.gold_every,
                                                  seed=2027, **seg), 3),
            "n_sim_per_rate": args.calibrate,
        }
        log(f"thresholds: {calibration} (defaults: gold {default.gold_glr_h}, "
            f"accuracy {default.accuracy_glr_h})")

    log(f"level vs change: {args.steady} steady annotators per rate, {args.horizon} gold items")
    level = level_vs_change(rng, n=args.steady, horizon=args.horizon,
                            gold_every=args.gold_every, peer_accuracy=args.peer_accuracy,
                            configs=configs)

    drifts = {}
    for accuracy, drifted in DRIFTS:
        key = f"{accuracy:.2f}->{drifted:.2f}"
        drifts[key] = drift_delays(rng, n=args.drifting, horizon=args.horizon,
                                   gold_every=args.gold_every, onset=args.onset,
                                   peer_accuracy=args.peer_accuracy, accuracy=accuracy,
                                   drifted=drifted, configs=configs)
        log(f"drift {key}: " + "; ".join(
            f"{name} {r['either']}" for name, r in drifts[key].items()))

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

    bias = None
    if args.bias_streams:
        log("bias drift")
        bias = bias_drift(rng, args.bias_streams)
        log(f"bias: {bias}")

    state = CusumState()
    xs = (rng.random(200_000) < 0.1).tolist()
    start = time.perf_counter()
    for x in xs:
        state, _ = state.step(x, p0=0.10, p1=0.25, h=4.0)
    step_us = (time.perf_counter() - start) / len(xs) * 1e6

    main_drift = drifts["0.90->0.70"]["glr"]["either"]
    by_rate = {rate: r["either"] for rate, r in level["glr"].items()}
    result = {
        "false_alarm_max": max(by_rate.values()),
        "false_alarm_by_rate": by_rate,
        "median_delay_gold_items": main_drift["median_delay_gold_items"],
        "median_delay_judgments": main_drift["median_delay_judgments"],
        "detected_share": main_drift["detected_share"],
        "operating_point": {"gold_glr_h": default.gold_glr_h,
                            "accuracy_glr_h": default.accuracy_glr_h,
                            "min_segment": default.accuracy_min_segment,
                            "min_post": default.accuracy_min_post,
                            "max_lookback": default.accuracy_max_lookback, "budget": 0.01},
        "level_vs_change": level,
        "drifts": drifts,
        "baseline": {
            "detector": "CUSUM p0=0.10 p1=0.30, gold h=8.75, accuracy h=11.2",
            "false_alarm_by_rate": {rate: r["either"]
                                    for rate, r in level["cusum_p0_0.10"].items()},
            "drift_0.90->0.70": drifts["0.90->0.70"]["cusum_p0_0.10"]["either"],
        },
        "calibration": calibration,
        "p17_arl": p17,
        "bias_drift": bias,
        "cusum_step_us": round(step_us, 2),
        "n_steady_per_rate": args.steady, "n_drifting": args.drifting,
        "horizon_gold_items": args.horizon, "gold_every": args.gold_every,
        "peer_accuracy": args.peer_accuracy, "onset": args.onset,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
