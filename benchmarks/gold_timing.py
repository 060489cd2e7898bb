"""Can a client tell calibration (gold) items from regular ones by how long ``/next/`` takes?

Issue 6 item 2: a calibration draw ran one more query and loaded up to 500 candidate ids, and a
script timing its own requests told gold items apart with AUC about 0.7. This benchmark draws
items the way an annotator does, interleaving calibration and regular draws at random, and
reports per-draw latency of each kind and the AUC of telling them apart by time
(Mann-Whitney: the probability that a random calibration draw took longer than a random regular
one; 0.5 means time says nothing).

Two measurements per draw, on a fresh benchmark database (PostgreSQL recommended):
  api      POST /api/campaigns/<id>/next/ in-process through Django's test client (token auth,
           throttling, the view, the service and the serializer; no network)
  service  ``assignment_issue_next`` alone
Each draw is answered through ``judgment_submit`` (not timed) before the next. The two are
alternated draw by draw, so drift of a shared machine hits both alike. Also reports how many
SQL statements each kind of draw ran (they must be equal).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gaplab_bench_gold \\
        .venv/bin/python benchmarks/gold_timing.py --draws 2000

The database is created when missing, then flushed and migrated. The last line printed is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gaplab_bench_gold")
# The benchmark's users draw far faster than a person; the per-user API throttle is not measured.
os.environ.setdefault("GAPLAB_THROTTLE_USER", "1000000/minute")


def auc(positive: list[float], negative: list[float]) -> float:
    """Mann-Whitney AUC: P(a positive sample exceeds a negative one), ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))  # ties get their average rank
    n_pos, n_neg = len(positive), len(negative)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _ensure_database(url: str) -> None:
    if not url.startswith("postgres"):
        return
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=2000, help="Draws in all (both methods).")
    parser.add_argument("--rate", type=float, default=0.5,
                        help="Campaign calibration rate; 0.5 gives balanced classes.")
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=50, help="Draws discarded at the start.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    _ensure_database(os.environ["DATABASE_URL"])
    import django
    from django.conf import settings

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment
    from rest_framework.authtoken.models import Token

    from annotation.models import Assignment, Campaign
    from annotation.services import assignment_issue_next, judgment_submit
    from tests.factories import CalibrationFactory, ComparisonFactory, make_users

    setup_test_environment()  # lets the test client's "testserver" host through
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.GAPLAB_QUALITY_ON_SUBMIT = False  # submits are not timed; keep them cheap
    from celery import current_app

    current_app.conf.broker_url = "memory://"  # nothing consumes enqueued follow-up work
    if "annotation_campaign" in connection.introspection.table_names():
        call_command("flush", interactive=False, verbosity=0)
    call_command("migrate", verbosity=0)

    print("setting up the campaign", file=sys.stderr, flush=True)
    campaign = Campaign.objects.create(name="bench-gold", overlap=3,
                                       calibration_rate=args.rate, reshow_rate=0.05,
                                       accuracy_threshold=0.0)
    per_annotator = args.draws // args.annotators + 10
    n_regular = per_annotator * args.annotators // 3 + 100
    ComparisonFactory.create_batch(n_regular, campaign=campaign)
    CalibrationFactory.create_batch(per_annotator + 50, campaign=campaign)
    users = make_users(args.annotators, prefix="gold")
    clients = {u.pk: Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=u).key}")
               for u in users}
    url = f"/api/campaigns/{campaign.pk}/next/"
    rng = random.Random(args.seed)

    # times[method][kind] in milliseconds; statements[kind] = set of statement counts.
    times: dict[str, dict[str, list[float]]] = {
        m: {"calibration": [], "regular": []} for m in ("api", "service")
    }
    statements: dict[str, set[int]] = {"calibration": set(), "regular": set()}
    for n in range(args.draws + args.warmup):
        user = users[n % len(users)]
        method = "api" if n % 2 == 0 else "service"
        connection.queries_log.clear()  # a full log (9,000 entries) would capture nothing
        with CaptureQueriesContext(connection) as captured:
            t0 = time.perf_counter()
            if method == "api":
                response = clients[user.pk].post(url)
                elapsed = time.perf_counter() - t0
                if response.status_code != 200:
                    raise SystemExit(f"draw {n}: HTTP {response.status_code} {response.content!r}")
                assignment = Assignment.objects.get(token=response.json()["token"])
            else:
                assignment = assignment_issue_next(campaign=campaign, annotator=user, rng=rng)
                elapsed = time.perf_counter() - t0
        if assignment is None:
            raise SystemExit(f"draw {n}: no work left; raise the campaign size")
        kind = "calibration" if assignment.comparison.kind == "calibration" else "regular"
        if n >= args.warmup:
            times[method][kind].append(elapsed * 1000)
            if method == "service":
                statements[kind].add(len(captured.captured_queries))
        judgment_submit(assignment=assignment, annotator=user, choice=rng.choice("AB"),
                        strength=2, idempotency_key=str(assignment.token), seconds_spent=3.0)
        if n % 200 == 0:
            print(f"draw {n}", file=sys.stderr, flush=True)

    result: dict[str, object] = {"database": connection.vendor, "draws": args.draws,
                                 "calibration_rate": args.rate}
    for method, by_kind in times.items():
        cal, reg = by_kind["calibration"], by_kind["regular"]
        result[f"{method}_n_calibration"] = len(cal)
        result[f"{method}_n_regular"] = len(reg)
        for kind, values in by_kind.items():
            result[f"{method}_{kind}_p50_ms"] = round(float(np.median(values)), 3)
            result[f"{method}_{kind}_mean_ms"] = round(float(np.mean(values)), 3)
        result[f"{method}_auc"] = round(auc(cal, reg), 3)
        # Standard error of the AUC when time says nothing (the Mann-Whitney U null variance,
        # divided by (n1 n2)^2), so a reader can tell noise from a tell.
        result[f"{method}_auc_se"] = round(
            float(np.sqrt((len(cal) + len(reg) + 1) / (12 * len(cal) * len(reg)))), 3
        )
    result["statements_calibration"] = sorted(statements["calibration"])
    result["statements_regular"] = sorted(statements["regular"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
