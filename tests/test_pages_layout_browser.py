"""The training and gap pages, and the error pages, fit at 1440, 1366 and 390 px (issue 10:
"apply the same fixes to every page the training and gap issues added"): no element overflows
its card or the viewport, nothing hides behind a sideways scroll (tables stack as labelled
cards on a phone), long names and hashes wrap. Screenshots land in tests/artifacts/screens/.

Real rows, cheaply: a finished run with metrics, a log and an artifact through the job services
(as tests/training/test_pages.py), a two-point sweep, and the stored real noise sweep of
tests/evaluation/test_dashboard as an experiment. Chromium via Playwright on live_server.
"""

from __future__ import annotations

import pytest

from annotation.models import Snapshot
from annotation.services.jobs import job_start, job_succeed
from tests.browser_support import VIEWPORTS, assert_fits, chromium_browser, log_in
from tests.conftest import PASSWORD
from tests.evaluation.test_dashboard import experiment_from, sweep_rows
from tests.evaluation.test_dashboard_browser import CSP_WATCH
from tests.factories import CampaignFactory
from training.models import ModelKind, RegisteredModel, RunArtifact, TrainingRun
from training.services.progress import RunReporter
from training.services.runs import run_create, sweep_create

pytestmark = [pytest.mark.browser]

LONG = "reward-model-ensemble-for-the-arithmetic-world-with-label-noise-0.2-seed-sweep"


@pytest.fixture(scope="module")
def stored(django_db_setup, django_db_blocker, tmp_path_factory):
    return sweep_rows(django_db_blocker, tmp_path_factory)


def _world(tmp_path, settings, stored) -> dict[str, str]:
    """The pages' URLs over a finished run, a sweep (one child ended) and an experiment."""
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path
    campaign = CampaignFactory(name=LONG.replace("-", "_"))
    snapshot = Snapshot.objects.create(campaign=campaign, method="dawid_skene",
                                       content_hash="f" * 64, path=str(tmp_path / "s.jsonl"),
                                       row_count=0)
    (tmp_path / "p").mkdir()
    policy = RegisteredModel.objects.create(name=f"{LONG}-policy", kind=ModelKind.POLICY,
                                            path=str(tmp_path / "p"))
    run = run_create(method="sft", snapshot=snapshot, base_model=policy, name=LONG)
    reporter = RunReporter(job_start(TrainingRun, job_id=run.pk))
    reporter.log("attempt 1\n" + "x" * 300)
    for step in range(1, 6):
        reporter.metrics(step, {"loss": 2.0 / step, "objective/kl": 0.05 * step})
    reporter.progress(5, 5)
    file = tmp_path / f"{LONG}.safetensors"
    file.write_bytes(b"0" * 10)
    RunArtifact.objects.create(run=run, name=file.name, size=10, sha256="e" * 64,
                               path=str(file))
    assert job_succeed(reporter.run, result={"loss": 0.4, "kl": 0.25, "reward_proxy": 1.25,
                                             "registered_models": []})
    sweep = sweep_create(method="sft", snapshot=snapshot, base_model=policy, name=LONG,
                         grid={"seed": [3, 5], "learning_rate": [1e-5]})
    first = sweep.runs.order_by("pk").first()
    assert job_succeed(job_start(TrainingRun, job_id=first.pk),
                       result={"kl": 0.42, "reward_proxy": 1.5, "registered_models": []})
    experiment = experiment_from(stored, name=LONG)
    return {"training-runs": "/training/", "training-run": f"/training/runs/{run.pk}/",
            "training-sweep": f"/training/sweeps/{sweep.pk}/", "gap-home": "/gap/",
            "gap-experiment": f"/gap/experiments/{experiment.pk}/"}


def _fits(page, name: str, width: str, failures: list[str]) -> None:
    try:
        assert_fits(page, name, width)
    except AssertionError as exc:
        failures.append(str(exc))


@pytest.mark.django_db(transaction=True)
def test_training_gap_and_error_pages_fit_at_every_width(live_server, cast, tmp_path,
                                                         settings, stored, not_eager):
    urls = _world(tmp_path, settings, stored)
    base = live_server.url
    failures: list[str] = []
    with chromium_browser() as browser:
        page = browser.new_page()
        page.set_default_timeout(15_000)
        page.add_init_script(CSP_WATCH)  # no inline style or script on any of these pages
        csp: list[str] = []
        log_in(page, base, "researcher", PASSWORD)
        for width, viewport in VIEWPORTS.items():
            page.set_viewport_size(viewport)
            for name, url in urls.items():
                page.goto(base + url)
                if name == "training-run":
                    page.locator('#run-charts[data-terminal="true"]').wait_for()
                if name == "gap-home":
                    page.locator("#noise-gap-chart[data-drawn=true]").wait_for()
                if name == "gap-experiment":
                    page.wait_for_function(
                        "() => ['gap-curves', 'murphy-chart'].every(id => {"
                        " const i = document.getElementById(id);"
                        " return i && i.complete && i.naturalWidth > 100; })",
                        timeout=30_000)
                # What a reader may open (config, spec, every seed's arm) must fit too.
                page.evaluate("() => document.querySelectorAll('details')"
                              ".forEach(d => { d.open = true; })")
                _fits(page, name, width, failures)
                csp += page.evaluate("() => window.__csp")

        # The error pages on a phone: an annotator on a staff page, and an unknown address.
        page.set_viewport_size(VIEWPORTS["390"])
        page.context.clear_cookies()
        log_in(page, base, "annotator", PASSWORD)
        response = page.goto(base + "/quality/")
        assert response.status == 403
        assert page.locator("#error-403 a", has_text="Log in as someone else").count() == 1
        _fits(page, "error-403", "390", failures)
        csp += page.evaluate("() => window.__csp")
        response = page.goto(base + "/training/runs/0/" + "a-long-address-" * 8)
        assert response.status == 404
        assert page.locator("#error-404").count() == 1
        _fits(page, "error-404", "390", failures)
        csp += page.evaluate("() => window.__csp")
    assert csp == [], csp
    assert not failures, "\n\n".join(failures)
