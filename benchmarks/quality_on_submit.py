"""Cost of the per-judgment quality update on submit: p50/p99 with and without it, one run.

Runs ``judgment_submit`` in-process (the service a page or API request calls) against the
configured database (DATABASE_URL; PostgreSQL recommended) on a fresh benchmark database:
a campaign with regular and calibration comparisons, 50 annotators, and alternating blocks of
submits with ``GAPLAB_QUALITY_ON_SUBMIT`` on and off, so drift of the machine hits both arms
alike. Reports the latency of issue-next + submit and of submit alone, per arm.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gaplab_bench_q \\
        .venv/bin/python benchmarks/quality_on_submit.py --judgments 4000

The last line printed is one JSON object; ``added_p50_ms``/``added_p99_ms`` are the differences
(target: the update adds <= 1 ms).
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
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gaplab_bench_q")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judgments", type=int, default=4000, help="Submits in all (both arms).")
    parser.add_argument("--block", type=int, default=100, help="Submits per alternating block.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import django
    from django.conf import settings

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from annotation.models import AnnotatorQuality, Campaign
    from annotation.services import assignment_issue_next, judgment_submit
    from tests.factories import CalibrationFactory, ComparisonFactory, make_users

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CELERY_TASK_ALWAYS_EAGER = False  # the every-50 recompute is enqueued, not run
    call_command("flush", interactive=False, verbosity=0) if _has_tables(connection) else None
    call_command("migrate", verbosity=0)
    # The simulated raters answer A two times in three (gold accepts A or tie), so a real
    # threshold would pause some of them mid-run; the pause check still runs on every gold item.
    campaign = Campaign.objects.create(name="bench-q", overlap=5, calibration_rate=0.2,
                                       reshow_rate=0.05, redundancy_cap=7,
                                       accuracy_threshold=0.0)
    n_items = args.judgments // 4 + 50
    ComparisonFactory.create_batch(n_items, campaign=campaign)
    CalibrationFactory.create_batch(n_items // 5, campaign=campaign, gold_choice="A",
                                    gold_accepts=["A", "tie"])
    users = make_users(50, prefix="bench")
    rng = random.Random(args.seed)
    from celery import current_app

    current_app.conf.broker_url = "memory://"  # nothing consumes the enqueued recomputes

    timings: dict[bool, dict[str, list[float]]] = {
        on: {"submit": [], "issue_submit": []} for on in (True, False)
    }
    done = 0
    block = 0
    while done < args.judgments:
        on = block % 2 == 0
        settings.GAPLAB_QUALITY_ON_SUBMIT = on
        for _ in range(args.block):
            user = users[done % len(users)]
            t0 = time.perf_counter()
            a = assignment_issue_next(campaign=campaign, annotator=user, rng=rng)
            if a is None:
                break
            t1 = time.perf_counter()
            judgment_submit(assignment=a, annotator=user, choice=rng.choice("AAB"), strength=2,
                            idempotency_key=str(a.token), seconds_spent=3.0, rng=rng)
            t2 = time.perf_counter()
            timings[on]["submit"].append((t2 - t1) * 1000)
            timings[on]["issue_submit"].append((t2 - t0) * 1000)
            done += 1
        block += 1

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 3)

    result = {"judgments": done, "database": connection.vendor,
              "gold_rows_updated": AnnotatorQuality.objects.count()}
    for on, name in ((True, "with"), (False, "without")):
        for what in ("submit", "issue_submit"):
            result[f"{what}_p50_ms_{name}"] = pct(timings[on][what], 50)
            result[f"{what}_p99_ms_{name}"] = pct(timings[on][what], 99)
    for q in ("p50", "p99"):
        added = result[f"submit_{q}_ms_with"] - result[f"submit_{q}_ms_without"]
        result[f"added_{q}_ms"] = round(added, 3)
    print(json.dumps(result))


def _has_tables(connection) -> bool:
    return "annotation_campaign" in connection.introspection.table_names()


if __name__ == "__main__":
    main()
