"""A real Celery worker process runs a preference export from the test database.

The worker shares the test database (PostgreSQL ``test_<name>``, or the SQLite test file) and the
broker: Redis when CELERY_BROKER_URL is set, else kombu's filesystem broker in the same data dir.
The task is sent with ``send_task``, which never runs eagerly, so nothing runs in this process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.conf import settings

from annotation.models import PreferenceExport
from annotation.services import assignment_issue_next, judgment_submit
from tests.factories import CampaignFactory, ComparisonFactory, make_users
from tests.worker_support import Worker as _Worker
from tests.worker_support import purge_queue, worker_env

pytestmark = [pytest.mark.worker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60
TASK_TIMEOUT_S = 60


@pytest.fixture
def worker(transactional_db, tmp_path):
    from config.celery import app as celery_app

    export_dir = tmp_path / "exports"
    env = worker_env(GAPLAB_EXPORT_DIR=str(export_dir))
    purge_queue(celery_app, "default")
    proc = _Worker(env)
    try:
        proc.wait_ready(READY_TIMEOUT_S)
        yield proc, export_dir
    finally:
        proc.stop()


def _judged_campaign():
    """Three comparisons, three annotators: majority A, majority B, and a tie (no row)."""
    campaign = CampaignFactory(overlap=3, calibration_rate=0.0)
    comparisons = ComparisonFactory.create_batch(3, campaign=campaign)
    plan = {
        comparisons[0].pk: ["A", "A", "B"],
        comparisons[1].pk: ["B", "B", "A"],
        comparisons[2].pk: ["A", "B", "tie"],
    }
    users = make_users(3)
    for u, user in enumerate(users):
        for n in range(len(comparisons)):
            assignment = assignment_issue_next(campaign=campaign, annotator=user)
            assert assignment is not None
            choice = plan[assignment.comparison_id][u]
            judgment_submit(
                assignment=assignment, annotator=user, choice=choice,
                strength=None if choice == "tie" else 2, seconds_spent=4.0,
                idempotency_key=f"worker-test-{u}-{n}",
            )
        assert assignment_issue_next(campaign=campaign, annotator=user) is None
    return campaign, comparisons


def test_real_worker_runs_a_preference_export(worker):
    from config.celery import app as celery_app

    proc, export_dir = worker
    campaign, comparisons = _judged_campaign()
    export = PreferenceExport.objects.create(
        campaign=campaign, format=PreferenceExport.Format.JSONL
    )

    celery_app.conf.task_always_eager = False  # send_task never runs eagerly; say so anyway
    celery_app.send_task("annotation.preference_export_run", args=[export.pk], queue="default")

    deadline = time.monotonic() + TASK_TIMEOUT_S
    while True:
        export.refresh_from_db()
        if export.status == PreferenceExport.Status.SUCCEEDED:
            break
        if export.status == PreferenceExport.Status.FAILED:
            pytest.fail(f"export failed: {export.error}\n{proc.output()}")
        if proc.proc.poll() is not None:
            pytest.fail(f"worker died ({proc.proc.returncode}):\n{proc.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"export still {export.status} after {TASK_TIMEOUT_S} s:\n{proc.output()}")
        time.sleep(0.1)

    out = Path(export.path)
    assert out == export_dir / f"{campaign.name}-{export.pk}.jsonl"
    assert export.row_count == 2 and export.finished_at is not None
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["comparison_id"] for r in rows] == [comparisons[0].pk, comparisons[1].pk]

    first, second = comparisons[0], comparisons[1]
    expected = [
        (first.response_a.text, first.response_b.text),  # A won 2-1
        (second.response_b.text, second.response_a.text),  # B won 2-1
    ]
    for row, comparison, (chosen, rejected) in zip(rows, (first, second), expected, strict=True):
        assert row["prompt"] == comparison.prompt.turns
        assert row["chosen"] == [{"role": "assistant", "content": chosen}]
        assert row["rejected"] == [{"role": "assistant", "content": rejected}]
        assert row["n_judgments"] == 3 and row["agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert "annotation.preference_export_run" in proc.output()
    # Nothing ran in this process: the file lies where only the worker was told to write.
    assert Path(settings.GAPLAB_EXPORT_DIR) != export_dir
