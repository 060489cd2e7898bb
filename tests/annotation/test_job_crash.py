"""Fault drills with real processes: a private redis-server, a Celery worker with embedded beat.

- SIGKILL the pool child mid-export: the reaper notices the stopped heartbeat and the export
  ends succeeded on a second attempt, within a bounded time.
- SIGKILL the whole worker mid-export: another worker's reaper takes it over the same way.
- Stop the broker, then export and submit: the requests answer 2xx at once, and everything
  they committed runs once the broker is back (the transactional outbox and its relay).

Each test starts its own redis-server on a free port, so it can be stopped and restarted, and
tight job timings (heartbeat 1 s, stale after 4 s) so the drills take seconds, not minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
from django.test import Client

from annotation.models import Job, JobStatus, OutboxMessage, PreferenceExport, QualityRecompute
from annotation.services.exports import preference_export_create
from tests.factories import CampaignFactory, ComparisonFactory, make_users
from tests.worker_support import Worker, worker_env

pytestmark = [pytest.mark.worker, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="needs redis-server to start a private broker")]

READY_TIMEOUT_S = 60
# Heartbeat 1 s, stale after 4 s, reaper every 1 s: recovery within ~10 s plus the rerun.
RECOVERY_BOUND_S = 45
FAST_JOBS = {
    "GAPLAB_JOB_HEARTBEAT_SECONDS": "1",
    "GAPLAB_JOB_STALE_SECONDS": "4",
    "GAPLAB_JOB_REAP_SECONDS": "1",
    "GAPLAB_OUTBOX_RELAY_SECONDS": "1",
}


def _env(broker, tmp_path, **extra):
    return worker_env(CELERY_BROKER_URL=broker.url, GAPLAB_EXPORT_DIR=str(tmp_path / "exports"),
                      **FAST_JOBS, **extra)


def _wait(predicate, *, timeout: float, what: str, workers=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    logs = "\n---\n".join(w.output() for w in workers)
    pytest.fail(f"{what} not within {timeout} s\n{logs}")


class _Outbox:
    """Shows the outbox in a failure message."""

    def output(self) -> str:
        return "outbox: " + repr(list(OutboxMessage.objects.values()))


def _running_export(campaign, researcher, workers):
    export = preference_export_create(campaign=campaign, fmt="jsonl", requested_by=researcher)

    def running():
        export.refresh_from_db()
        return export.status == JobStatus.RUNNING and export.worker

    _wait(running, timeout=30, what="export running", workers=[*workers, _Outbox()])
    return export


def _finished(export, workers, *, timeout: float = RECOVERY_BOUND_S):
    def done():
        export.refresh_from_db()
        return export.status in Job.TERMINAL

    _wait(done, timeout=timeout, what="export finished", workers=workers)
    return export


def test_sigkill_of_the_pool_child_mid_export_is_recovered(transactional_db, broker, tmp_path,
                                                           cast):
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(2, campaign=campaign)
    worker = Worker(_env(broker, tmp_path, GAPLAB_FAULT_EXPORT_DELAY_SECONDS="3"),
                    pool="prefork", beat=True)
    try:
        worker.wait_ready(READY_TIMEOUT_S)
        export = _running_export(campaign, cast["researcher"], [worker])
        child_pid = int(export.worker.rsplit(":", 1)[1])
        assert child_pid != worker.proc.pid  # the pool child, not the worker's main process
        os.kill(child_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _finished(export, [worker])
        recovered_in = time.monotonic() - killed_at
    finally:
        worker.stop()
    assert export.status == JobStatus.SUCCEEDED, export.error
    assert export.attempts == 2 and export.row_count == 0
    print(f"pool child SIGKILL: export succeeded {recovered_in:.1f} s after the kill")
    assert recovered_in < RECOVERY_BOUND_S


def test_sigkill_of_the_whole_worker_mid_export_is_recovered_by_another(transactional_db,
                                                                         broker, tmp_path, cast):
    campaign = CampaignFactory()
    victim = Worker(_env(broker, tmp_path, GAPLAB_FAULT_EXPORT_DELAY_SECONDS="30"))
    rescuer = None
    try:
        victim.wait_ready(READY_TIMEOUT_S)
        export = _running_export(campaign, cast["researcher"], [victim])
        victim.kill_all()
        killed_at = time.monotonic()
        rescuer = Worker(_env(broker, tmp_path, GAPLAB_FAULT_EXPORT_DELAY_SECONDS="1"),
                         beat=True)
        rescuer.wait_ready(READY_TIMEOUT_S)
        _finished(export, [victim, rescuer])
        recovered_in = time.monotonic() - killed_at
    finally:
        victim.stop()
        if rescuer is not None:
            rescuer.stop()
    assert export.status == JobStatus.SUCCEEDED, export.error
    assert export.attempts == 2
    print(f"whole worker SIGKILL: export succeeded {recovered_in:.1f} s after the kill")
    assert recovered_in < RECOVERY_BOUND_S


def test_broker_outage_answers_2xx_and_runs_everything_once_it_is_back(transactional_db, broker,
                                                                        tmp_path, cast, settings):
    settings.GAPLAB_QUALITY_RECOMPUTE_EVERY = 2
    campaign = CampaignFactory(overlap=1)
    ComparisonFactory.create_batch(3, campaign=campaign)
    (rater,) = make_users(1)
    researcher, annotator = Client(), Client()
    researcher.force_login(cast["researcher"])
    annotator.force_login(rater)

    broker.stop()
    started = time.monotonic()
    created = researcher.post(f"/api/campaigns/{campaign.pk}/exports/", {"format": "jsonl"})
    assert created.status_code == 202, created.content
    codes = []
    for i in range(2):
        item = annotator.post(f"/api/campaigns/{campaign.pk}/next/")
        assert item.status_code == 200, item.content
        codes.append(annotator.post("/api/judgments/", {
            "token": item.json()["token"], "choice": "left", "strength": 2,
            "idempotency_key": f"outage-{i}", "seconds_spent": 2.0,
        }, content_type="application/json").status_code)
    assert codes == [201, 201]
    outage_s = time.monotonic() - started
    print(f"broker down: 1 export and 2 next+submit pairs answered in {outage_s:.1f} s")
    assert outage_s < 20  # each publish fails fast; no request hangs
    export = PreferenceExport.objects.get(pk=created.json()["id"])
    recompute = QualityRecompute.objects.get(campaign=campaign)
    assert export.status == recompute.status == JobStatus.QUEUED
    assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == 2

    broker.start()
    worker = Worker(_env(broker, tmp_path), beat=True)
    try:
        worker.wait_ready(READY_TIMEOUT_S)

        def all_done():
            export.refresh_from_db()
            recompute.refresh_from_db()
            return export.status in Job.TERMINAL and recompute.status in Job.TERMINAL

        back = time.monotonic()
        _wait(all_done, timeout=60, what="export and recompute", workers=[worker])
        print(f"broker back: both jobs done {time.monotonic() - back:.1f} s after the worker "
              "was ready")
    finally:
        worker.stop()
    assert export.status == JobStatus.SUCCEEDED, export.error
    assert recompute.status == JobStatus.SUCCEEDED, recompute.error
    assert export.row_count == 2
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
