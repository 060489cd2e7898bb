"""A real Celery worker process runs a preference export from the test database.

The worker shares the test database (PostgreSQL ``test_<name>``, or the SQLite test file) and the
broker: Redis when CELERY_BROKER_URL is set, else kombu's filesystem broker in the same data dir.
The task is sent with ``send_task``, which never runs eagerly, so nothing runs in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.conf import settings

from annotation.models import PreferenceExport
from annotation.services import assignment_issue_next, judgment_submit
from tests.factories import CampaignFactory, ComparisonFactory, make_users

pytestmark = [pytest.mark.worker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60
TASK_TIMEOUT_S = 60


def _worker_database_url() -> str:
    """DATABASE_URL of the database this test uses (pytest-django has switched NAME to it)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"  # sqlite:////abs/path
    configured = os.environ.get("DATABASE_URL")
    if configured:  # keep scheme, credentials and options; swap the database name
        parts = urlsplit(configured)
        return urlunsplit(parts._replace(path="/" + quote(db["NAME"])))
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{db['HOST']}{port}/{quote(db['NAME'])}"


class _Worker:
    """A `celery worker` subprocess whose merged output is collected by a reader thread."""

    def __init__(self, env: dict[str, str]):
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default",
             "--pool", "solo", "--concurrency", "1", "-l", "INFO",
             "-n", f"test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if " ready." in line:
                self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker not ready after {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM); SIGKILL only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def _purge_default_queue(app) -> None:
    """Drop messages left in the test broker's `default` queue by earlier runs (not `gpu`)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_declare(queue="default", durable=True, auto_delete=False)
        channel.queue_purge("default")


@pytest.fixture
def worker(transactional_db, tmp_path):
    from config.celery import app as celery_app

    export_dir = tmp_path / "exports"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": _worker_database_url(),
        # Same data dir: the SQLite test file and the filesystem broker's folders live there.
        "GAPLAB_DATA_DIR": str(settings.DATA_DIR),
        "GAPLAB_EXPORT_DIR": str(export_dir),
        "GAPLAB_CELERY_EAGER": "0",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    broker = os.environ.get("CELERY_BROKER_URL")
    if broker:
        env["CELERY_BROKER_URL"] = broker
    else:
        env.pop("CELERY_BROKER_URL", None)  # the settings fall back to filesystem://
        assert settings.CELERY_BROKER_URL.startswith("filesystem://")
    _purge_default_queue(celery_app)
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
        assert row["n_judgments"] == 3 and row["agreement"] == pytest.approx(0.6667)
    assert "annotation.preference_export_run" in proc.output()
    # Nothing ran in this process: the file lies where only the worker was told to write.
    assert Path(settings.GAPLAB_EXPORT_DIR) != export_dir
