"""A run page in a real browser while its run trains: progress, the log and the charts change
as the run reports, and the page stops polling once the run has ended.

The test plays the worker through the real services: ``run_create`` queues the run (its task
goes to the test broker and is purged; nothing consumes it), ``job_start`` claims it, and a
``RunReporter`` writes progress, metrics and log lines as a training loop would. A version
with a real worker and a tiny model is the lead's (tests/training/test_worker_runs.py).
Chromium via Playwright against pytest-django's live_server (a transactional database).
"""

from __future__ import annotations

import time

import pytest

from annotation.models import Snapshot
from annotation.services.jobs import job_start, job_succeed
from tests.browser_support import artifacts_dir, chromium_browser, log_in, require_chromium
from tests.conftest import PASSWORD
from tests.factories import CampaignFactory
from training.models import ModelKind, RegisteredModel, TrainingRun
from training.services.progress import RunReporter
from training.services.runs import run_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

POINTS = "id => Number(document.getElementById(id).dataset.points || 0)"


def test_the_run_page_shows_progress_and_a_chart_change_while_a_run_trains(
        live_server, cast, tmp_path, not_eager):
    require_chromium()
    snapshot = Snapshot.objects.create(campaign=CampaignFactory(), method="majority",
                                       content_hash="d" * 64, path=str(tmp_path / "s.jsonl"),
                                       row_count=0)
    (tmp_path / "p").mkdir()
    policy = RegisteredModel.objects.create(name="pi0", kind=ModelKind.POLICY,
                                            path=str(tmp_path / "p"))
    run = run_create(method="sft", snapshot=snapshot, base_model=policy, name="browser-run")
    reporter = RunReporter(job_start(TrainingRun, job_id=run.pk))
    reporter.log("attempt 1")
    reporter.metrics(1, {"loss": 2.0, "rewards/chosen": 0.0, "objective/kl": 0.0})
    reporter.progress(1, 20)

    with chromium_browser() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        log_in(page, live_server.url, "researcher", PASSWORD)
        page.goto(f"{live_server.url}/training/runs/{run.pk}/")
        page.wait_for_function(f"() => ({POINTS})('chart-loss') >= 1", timeout=10_000)
        assert "step 1 of 20" in page.inner_text("#run-progress-label")
        first_ink = page.evaluate("id => document.getElementById(id).toDataURL()", "chart-loss")

        # The "worker" trains on: ten more steps, with a KL that grows.
        for step in range(2, 11):
            reporter.metrics(step, {"loss": 2.0 / step, "rewards/chosen": 0.1 * step,
                                    "objective/kl": 0.02 * step})
        reporter.log("step 10: loss 0.2")
        reporter.progress(10, 20)
        page.wait_for_function(
            "() => document.getElementById('run-progress-label').textContent"
            ".includes('step 10 of 20')", timeout=10_000)
        page.wait_for_function(f"() => ({POINTS})('chart-loss') >= 10", timeout=10_000)
        page.wait_for_function(f"() => ({POINTS})('chart-kl') >= 10", timeout=10_000)
        assert "step 10: loss 0.2" in page.inner_text("#run-log")
        assert page.evaluate("id => document.getElementById(id).toDataURL()",
                             "chart-loss") != first_ink
        assert page.get_attribute("#run-status", "hx-trigger") == "every 2s"
        page.screenshot(path=str(artifacts_dir() / "run_page_training.png"), full_page=True)

        # The run ends: the page shows it and stops asking.
        reporter.progress(20, 20)
        assert job_succeed(reporter.run, result={"loss": 0.1, "registered_models": []})
        page.wait_for_selector('#run-status[data-status="succeeded"]', timeout=10_000)
        page.wait_for_selector('#run-charts[data-terminal="true"]', timeout=10_000)
        assert page.get_attribute("#run-status", "hx-trigger") is None
        assert page.query_selector("#run-cancel-form") is None
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if f"/runs/{run.pk}/" in r.url
                else None)
        time.sleep(4.5)  # two poll intervals: a page still polling would ask twice
        assert polls == []
        page.screenshot(path=str(artifacts_dir() / "run_page_succeeded.png"), full_page=True)
        assert not errors, errors
