"""What the gap instrument costs: the tilting sweep against its numpy floor, and the gap
dashboard's server time on a large database (issue 9).

**Part 1, tilting** (no database). ``evaluation.gap.tilting_curve`` on --prompts (10,000)
prompts x --samples (16) samples x --lambdas (64: λ = 0 and 63 log-spaced) pressures, with
bootstrap intervals over prompts at --n-boot (300, ``ExperimentSpec.n_boot``'s default, which
every experiment uses unless its spec says otherwise):

  tilting_s              median over --repeats of one call, the bootstrap counts' cache
                         cleared first (a sweep on new prompts draws its resamples; a second
                         curve on the same prompts and seed, e.g. best-of-n, reuses them)
  tilting_warm_s         the same with the counts already cached
  roofline_s             the numpy floor of the same work, median over the same repeats: the
                         bare exp(λ·(r̂ − max r̂)) for every (prompt, sample, λ) once, in
                         float64, written into a cache-sized buffer (no sums, no KL), plus one
                         float64 matmul of the (B, P) bootstrap counts with a (P, 3L + 4)
                         per-prompt table (tilted proxy, tilted gold, KL per λ, and π₀'s four
                         moments), counts and table made outside the timer. float64 because
                         the KL at small λ is a difference of two nearly equal terms: with
                         float32 exponentials a prompt's KL at λ = 1e-3 was off by up to 100%
                         (the mean over 1,000 prompts by 0.5%; tests/evaluation/test_gap.py
                         asserts 1e-7 on the identity λA′ − A). Everything else the
                         curve does (the sums, standardization, percentiles, drawing the
                         counts) is above this floor
  tilting_over_roofline  tilting_s / roofline_s (and tilting_warm_over_roofline)
  *_cpu_s                the same medians in CPU seconds of this process: on a shared
                         machine CPU time moves less than wall time

Targets: tilting_s <= 0.2 s. Repeats alternate curve and floor, so drift of a shared machine
hits both alike. BLAS threads follow the environment (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS);
the results in benchmarks/README.md were taken with 1.

**Part 2, dashboard** (PostgreSQL, about 70 s on a quiet machine): see :func:`dashboard`;
``dashboard_p95_ms`` (target <= 200) against the training run list in the same run.

    .venv/bin/python benchmarks/gap_sweep.py                   # both parts
    .venv/bin/python benchmarks/gap_sweep.py --part tilting    # part 1 only, seconds

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from evaluation import gap  # noqa: E402

# One tilting block of the floor: the same cache-sized block gap.py uses.
_FLOOR_BLOCK = 1 << 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _pools(prompts: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """π₀ pools with prompt-level difficulty; r̂ = r* + independent noise (model A)."""
    rng = np.random.default_rng(seed)
    level = rng.normal(size=(prompts, 1))
    true = level + rng.normal(size=(prompts, samples))
    return true + rng.normal(scale=0.8, size=true.shape), true


def _floor(proxy: np.ndarray, lambdas: np.ndarray, counts: np.ndarray, table: np.ndarray
           ) -> None:
    """The bare exponentials and the one bootstrap matmul (module docstring)."""
    d = proxy - proxy.max(axis=1, keepdims=True)
    n_p, k = d.shape
    step = max(1, _FLOOR_BLOCK // (k * lambdas.size))
    buf = np.empty((step, k, lambdas.size))
    for i in range(0, n_p, step):
        e = buf[: min(step, n_p - i)]
        np.multiply(d[i : i + step, :, None], lambdas, out=e)
        np.exp(e, out=e)
    counts @ table


def _timed(fn, *args, **kwargs) -> tuple[float, float]:
    """Wall and CPU seconds of one call (CPU: this process, all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu


def tilting(*, prompts: int, samples: int, n_lambdas: int, n_boot: int, repeats: int,
            seed: int) -> dict:
    """Part 1: time tilting_curve against its numpy floor, alternating, medians."""
    proxy, true = _pools(prompts, samples, seed)
    lambdas = gap.lambda_grid(num=n_lambdas - 1) / gap.reference_scale(reference=proxy).std
    counts = np.array(gap.bootstrap_counts(n_prompts=prompts, n_boot=n_boot, seed=seed + 1))
    table = np.random.default_rng(seed).normal(size=(prompts, 3 * lambdas.size + 4))
    kwargs = {"proxy": proxy, "true": true, "lambdas": lambdas, "n_boot": n_boot, "seed": seed}
    cold, warm, floor = [], [], []
    for r in range(repeats):
        gap._counts.cache_clear()
        cold.append(_timed(gap.tilting_curve, **kwargs))
        floor.append(_timed(_floor, proxy, lambdas, counts, table))
        warm.append(_timed(gap.tilting_curve, **kwargs))
        log(f"repeat {r + 1}/{repeats}, wall (CPU) s: tilting {cold[-1][0]:.3f} "
            f"({cold[-1][1]:.3f}), warm {warm[-1][0]:.3f} ({warm[-1][1]:.3f}), "
            f"floor {floor[-1][0]:.3f} ({floor[-1][1]:.3f})")
    curve = gap.tilting_curve(**kwargs)

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return round(statistics.median(x[i] for x in xs), 4)

    return {
        "prompts": prompts, "samples": samples, "lambdas": int(lambdas.size), "n_boot": n_boot,
        "repeats": repeats,
        "tilting_s": med(cold, 0),
        "tilting_warm_s": med(warm, 0),
        "roofline_s": med(floor, 0),
        "tilting_over_roofline": round(med(cold, 0) / med(floor, 0), 3),
        "tilting_warm_over_roofline": round(med(warm, 0) / med(floor, 0), 3),
        "tilting_cpu_s": med(cold, 1),
        "tilting_warm_cpu_s": med(warm, 1),
        "roofline_cpu_s": med(floor, 1),
        "tilting_s_all": [round(x[0], 4) for x in cold],
        "roofline_s_all": [round(x[0], 4) for x in floor],
        "target_tilting_s": 0.2,
        "d_max": round(float(curve.d.value[-1]), 4),
        "gap_at_max": round(float(curve.gap.value[-1]), 4),
    }


EXPERIMENT_SPEC = {"pool": "expert:3", "n_prompts": 8, "reward": "utility_noise",
                   "n_eval_prompts": 200, "seeds": [0]}
EPSILONS = [0.0, 0.1, 0.2, 0.3]
RUN_METHODS = ("dpo", "rlhf", "best_of_n", "rest", "reward_model", "sft")


def _varied(value, factor: float):
    """A copy of stored JSON with every float multiplied by ``factor`` (> 0: lo <= value <= hi
    and the order of points survive), ints, strings and flags kept."""
    if isinstance(value, dict):
        return {k: _varied(v, factor) for k, v in value.items()}
    if isinstance(value, list):
        return [_varied(v, factor) for v in value]
    if isinstance(value, float):
        return value * factor
    return value


def _hot_path():
    """benchmarks/annotation_hot_path.py, whose bulk loader seeds the judgments."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import annotation_hot_path

    return annotation_hot_path


def _seed_database(*, database_url: str, url: str, db: str, judgments: int,
                   annotators: int) -> dict:
    """Drop and create ``db``, migrate it, and COPY the judgment history into it with
    annotation_hot_path's loader (users, closed campaigns, prompts, responses, comparisons,
    completed assignments, judgments; secondary indexes rebuilt after), then VACUUM ANALYZE.
    Django must be set up on ``url`` (the loader fills NOT NULL columns with model defaults)."""
    import psycopg

    hp = _hot_path()
    with hp._admin(database_url) as admin:
        hp._drop_db(admin, db)
        admin.execute(f'CREATE DATABASE "{db}"')
    started = time.perf_counter()
    hp._migrate(url)
    log(f"created and migrated {db}: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    defaults = hp._model_defaults()
    with psycopg.connect(url) as conn, hp.column_defaults(conn, defaults, hp.LOADED_TABLES):
        meta = hp.load_history(conn, n_judgments=judgments, n_annotators=annotators)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    meta["load_s"] = round(time.perf_counter() - started, 1)
    log(f"loaded {judgments} judgments: {meta['load_s']} s")
    return meta


def _seed_gap_rows(*, experiments: int, runs: int, seed: int):
    """A researcher; one real experiment (experiment_execute: experiment_noise_sweep with
    reward="utility_noise", one arm per ε of EPSILONS, n_boot 300); ``experiments`` − 1 copies
    of it with varied numbers; ``runs`` training runs, most succeeded with a measured KL."""
    from datetime import timedelta

    from django.utils import timezone

    from annotation.models import JobStatus
    from annotation.services.accounts import Role, user_create_with_role
    from evaluation.experiment_jobs import experiment_execute, spec_as_json
    from evaluation.experiments import spec_from_dict
    from evaluation.models import Experiment
    from training.methods.base import RESULT_KL, RESULT_REWARD_PROXY, RESULT_REWARD_TRUE
    from training.models import TrainingRun

    user = user_create_with_role(username="bench-researcher", password="bench-pw-12345678",
                                 role=Role.RESEARCHER)
    started = time.perf_counter()
    real = Experiment.objects.create(name="real sweep", spec=spec_as_json(
        spec_from_dict(EXPERIMENT_SPEC)), epsilons=EPSILONS, requested_by=user)
    experiment_execute(experiment_id=real.pk)
    real.refresh_from_db()
    if real.status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"the real experiment did not succeed: {real.error[-2000:]}")
    sweep_s = time.perf_counter() - started
    log(f"real experiment #{real.pk}: {sweep_s:.1f} s, result {len(json.dumps(real.result))} "
        f"bytes")
    rng = np.random.default_rng(seed)
    now = timezone.now()
    copies = []
    for i in range(experiments - 1):
        factor = float(rng.uniform(0.6, 1.4))
        copies.append(Experiment(
            name=f"copy {i + 1} of #{real.pk}", spec=real.spec,
            epsilons=[e * factor for e in real.epsilons], status=JobStatus.SUCCEEDED,
            progress=1.0, stage="done", result=_varied(real.result, factor),
            headline=_varied(real.headline, factor), code_version=real.code_version,
            requested_by=user, attempts=1, started_at=now - timedelta(hours=i + 1),
            finished_at=now - timedelta(hours=i), heartbeat_at=now - timedelta(hours=i)))
    Experiment.objects.bulk_create(copies, batch_size=20)
    statuses = [JobStatus.SUCCEEDED] * 8 + [JobStatus.FAILED, JobStatus.RUNNING]
    training = []
    for i in range(runs):
        status = statuses[i % len(statuses)]
        kl = float(rng.gamma(2.0, 2.0))
        result = ({RESULT_KL: kl, RESULT_REWARD_PROXY: float(0.4 * kl + rng.normal()),
                   RESULT_REWARD_TRUE: float(0.3 * kl - 0.05 * kl**2 + rng.normal()),
                   "train_loss": float(rng.uniform(0.2, 0.7))}
                  if status == JobStatus.SUCCEEDED else {})
        training.append(TrainingRun(
            name=f"bench run {i}", method=RUN_METHODS[i % len(RUN_METHODS)],
            config={"learning_rate": 1e-5, "beta": 0.1}, seed=i, status=status,
            step=100, total_steps=100, result=result, requested_by=user, attempts=1,
            started_at=now - timedelta(minutes=30 * i + 20),
            heartbeat_at=now - timedelta(minutes=30 * i),
            finished_at=None if status == JobStatus.RUNNING else now - timedelta(minutes=30 * i),
            log_tail="step 100/100 loss 0.31\n" * 20))
    TrainingRun.objects.bulk_create(training)
    return user, round(sweep_s, 1), len(json.dumps(real.result))


def _p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def dashboard(*, database_url: str, db: str, judgments: int, annotators: int, experiments: int,
              runs: int, requests: int, seed: int, keep_db: bool) -> dict:
    """Part 2: the gap dashboard's server time on a large database.

    Seeds a fresh PostgreSQL database ``db`` (dropped first, and afterwards unless --keep-db):
    --judgments (1,000,000) judgments from --annotators (1,000) annotators, bulk-loaded by
    COPY (benchmarks/annotation_hot_path.py's loader); a researcher; --experiments (100)
    succeeded experiments, one of them a real ``experiment_noise_sweep`` (reward
    "utility_noise", ε 0 / 0.1 / 0.2 / 0.3, 200 evaluation prompts x 16 samples, n_boot 300,
    run through ``experiment_execute``) and the rest copies of its result and headline with
    every float scaled by a factor in [0.6, 1.4]; --runs (60) training runs, 80% succeeded
    with a KL, gold and proxy reward. Then, in-process through ``django.test.Client`` (the
    whole middleware stack, DEBUG off, logged in as the researcher), two warm-up GETs of each
    page and then --requests (20) GETs of each, alternating:

      dashboard_p50_ms, dashboard_p95_ms   ``evaluation:gap_home`` (/gap/), target p95 <= 200
      baseline_p50_ms, baseline_p95_ms     ``training-runs`` (the training run list, /training/)
      dashboard_over_baseline_p95          the ratio of the two p95s
      trivial_p95_ms                       the login page (no query): the stack's own floor
      dashboard_queries, dashboard_bytes   SQL statements and HTML size of one /gap/ response

    If ``evaluation:gap_home`` does not resolve, the dashboard keys are null and an error is
    printed.
    """
    os.environ.update({"DEBUG": "0", "SECRET_KEY": "bench-" + "x" * 50,
                       "ALLOWED_HOSTS": "testserver", "DJANGO_SETTINGS_MODULE": "config.settings"})
    if "GAPLAB_DATA_DIR" not in os.environ:
        import tempfile

        os.environ["GAPLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="gaplab-gapsweep-")
    url = _hot_path().db_url(database_url, db)
    os.environ["DATABASE_URL"] = url
    import django

    django.setup()
    meta = _seed_database(database_url=database_url, url=url, db=db, judgments=judgments,
                          annotators=annotators)
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import NoReverseMatch, reverse

    user, sweep_s, result_bytes = _seed_gap_rows(experiments=experiments, runs=runs, seed=seed)
    out: dict = {"judgments": meta["n_judgments"], "experiments": experiments, "runs": runs,
                 "requests": requests, "load_s": meta["load_s"], "real_sweep_s": sweep_s,
                 "result_bytes": result_bytes}
    try:
        gap_url = reverse("evaluation:gap_home")
    except NoReverseMatch as exc:
        print(f"ERROR: the gap dashboard view evaluation:gap_home does not exist ({exc}); "
              "dashboard keys are null", file=sys.stderr, flush=True)
        gap_url = None
    pages = {"baseline": reverse("training-runs"), "trivial": reverse("login")}
    if gap_url:
        pages = {"dashboard": gap_url, **pages}
    client = Client()
    client.force_login(user)
    anonymous = Client()
    times: dict[str, list[float]] = {name: [] for name in pages}

    def get(name: str) -> float:
        c = anonymous if name == "trivial" else client
        started = time.perf_counter()
        resp = c.get(pages[name])
        elapsed = (time.perf_counter() - started) * 1000
        if resp.status_code != 200:
            raise RuntimeError(f"GET {pages[name]}: {resp.status_code}")
        return elapsed

    for name in pages:
        for _ in range(2):
            get(name)
    for i in range(requests):
        for name in pages:
            times[name].append(get(name))
        log(f"request {i + 1}/{requests}: " + ", ".join(f"{n} {times[n][-1]:.0f} ms"
                                                        for n in pages))
    for name in ("dashboard", "baseline", "trivial"):
        out[f"{name}_p50_ms"] = _p(times[name], 50) if name in times else None
        out[f"{name}_p95_ms"] = _p(times[name], 95) if name in times else None
    if gap_url:
        with CaptureQueriesContext(connection) as queries:
            resp = client.get(gap_url)
        out["dashboard_queries"] = len(queries)
        out["dashboard_bytes"] = len(resp.content)
        out["dashboard_over_baseline_p95"] = round(out["dashboard_p95_ms"]
                                                   / out["baseline_p95_ms"], 3)
    else:
        out |= {"dashboard_queries": None, "dashboard_bytes": None,
                "dashboard_over_baseline_p95": None}
    out["target_dashboard_p95_ms"] = 200
    connection.close()
    if not keep_db:
        with _hot_path()._admin(database_url) as admin:
            _hot_path()._drop_db(admin, db)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "tilting", "dashboard"), default="all")
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--lambdas", type=int, default=64, help="pressures, λ = 0 included")
    parser.add_argument("--n-boot", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="any database of the server, for a role that may create databases")
    parser.add_argument("--db", default="gaplab_benchgap")
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=1_000)
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args(argv)
    result: dict = {}
    if args.part in ("all", "tilting"):
        log("part 1: tilting sweep")
        result |= tilting(prompts=args.prompts, samples=args.samples, n_lambdas=args.lambdas,
                          n_boot=args.n_boot, repeats=args.repeats, seed=args.seed)
    if args.part in ("all", "dashboard"):
        log("part 2: dashboard")
        result |= dashboard(database_url=args.database_url, db=args.db,
                            judgments=args.judgments, annotators=args.annotators,
                            experiments=args.experiments, runs=args.runs,
                            requests=args.requests, seed=args.seed, keep_db=args.keep_db)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
