"""A run page in a real browser while a real worker trains a real (tiny) reward model: the
progress and the loss chart change as the run reports, and the page ends on "succeeded".

Chromium via Playwright against pytest-django's live_server; a Celery worker on the ``gpu``
queue of a private redis-server, on the same test database.
"""

from __future__ import annotations

import shutil

import pytest

from tests.browser_support import artifacts_dir, chromium_browser, log_in, require_chromium
from tests.conftest import PASSWORD
from tests.training.support import world_snapshot
from tests.worker_support import Worker, worker_env
from training.services.runs import run_create

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow,
              pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="needs redis-server to start a private broker")]

POINTS = "id => Number(document.getElementById(id).dataset.points || 0)"


def test_the_run_page_follows_a_run_the_worker_trains(live_server, cast, broker, tmp_path,
                                                     settings, tiny_registered):
    require_chromium()
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path / "artifacts"
    snapshot = world_snapshot(name="arith-browser", n_prompts=30)
    worker = Worker(worker_env(CELERY_BROKER_URL=broker.url, GAPLAB_RUN_REPORT_EVERY="2",
                               GAPLAB_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
                               HF_HUB_DISABLE_TELEMETRY="1"),
                    queues="gpu", pool="solo")
    try:
        worker.wait_ready(90)
        run = run_create(method="reward_model", snapshot=snapshot,
                         base_model=tiny_registered["reward"],
                         config={"max_steps": 150, "batch_size": 4}, name="browser-worker-run")
        with chromium_browser() as browser:
            page = browser.new_page()
            log_in(page, live_server.url, "researcher", PASSWORD)
            page.goto(f"{live_server.url}/training/runs/{run.pk}/")
            page.wait_for_function(f"() => ({POINTS})('chart-loss') >= 2", timeout=120_000)
            first = page.evaluate(f"() => ({POINTS})('chart-loss')")
            first_label = page.inner_text("#run-progress-label")
            page.wait_for_function(f"() => ({POINTS})('chart-loss') > {first}",
                                   timeout=120_000)
            page.wait_for_function(
                "label => document.getElementById('run-progress-label').textContent.trim()"
                " !== label.trim()", arg=first_label, timeout=60_000)
            page.screenshot(path=str(artifacts_dir() / "run_page_real_worker.png"),
                            full_page=True)
            page.wait_for_selector('#run-status[data-status="succeeded"]', timeout=240_000)
            assert "step 150 of 150" in page.inner_text("#run-progress-label")
    finally:
        worker.stop()
