"""The data page and the admin's exports in a real browser (issue 10, points 1 and 2).

An admin adds an export in the Django admin's form; the export runs (Celery's eager mode, the
tests' default: the outbox publishes it after the request commits and the live server's thread
runs the task); the admin downloads it from the export's admin page. A queued export's row on
the data page updates itself (htmx polling) once the test plays the worker. The data page fits
at 1440, 1366 and 390 px with every hash opened. Chromium via Playwright on live_server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from annotation.models import JobStatus, PreferenceExport
from annotation.services.exports import preference_export_run
from annotation.services.imports import comparisons_import_file
from annotation.services.snapshots import snapshot_create
from tests.browser_support import VIEWPORTS, assert_fits, chromium_browser, log_in, screenshot
from tests.conftest import PASSWORD
from tests.factories import CampaignFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG = "arithmetic_world_with_label_noise_for_the_researchers_data_page"


def _seed(tmp_path, settings):
    settings.DATA_DIR = tmp_path
    settings.GAPLAB_EXPORT_DIR = tmp_path / "exports"
    campaign = CampaignFactory(name=LONG, overlap=1, calibration_rate=0.0)
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(
        f'{{"prompt": "{i}+{i}?", "chosen": "{2 * i}", "rejected": "{2 * i + 1}", '
        f'"source": "mini"}}\n' for i in range(6)))
    comparisons_import_file(campaign=campaign, source=source)
    snapshot_create(campaign=campaign, method="majority")
    PreferenceExport.objects.create(
        campaign=campaign, status=JobStatus.FAILED, error="ValueError: " + "x" * 200,
        finished_at=campaign.created_at)
    # Waits for a worker throughout (a bare row, no outbox message): its Cancel must fit too.
    PreferenceExport.objects.create(campaign=campaign, format="jsonl")
    return campaign


def test_admin_exports_in_the_admin_and_the_data_page_fits(live_server, cast, tmp_path,
                                                           settings):
    campaign = _seed(tmp_path, settings)
    base = live_server.url
    with chromium_browser() as browser:
        page = browser.new_page(accept_downloads=True)
        page.set_default_timeout(15_000)
        log_in(page, base, "admin", PASSWORD)

        # Point 1: the admin's add form queues an export that runs, then downloads it.
        page.goto(f"{base}/admin/annotation/preferenceexport/add/")
        page.select_option("select[name=campaign]", str(campaign.pk))
        page.select_option("select[name=format]", "jsonl")
        screenshot(page, "admin-export-add", "1440")
        with page.expect_navigation():
            page.click("#preferenceexport-add-form input[type=submit]")
        export = PreferenceExport.objects.get(requested_by=cast["admin"])
        assert page.url.endswith(f"/admin/annotation/preferenceexport/{export.pk}/change/")
        assert export.status == JobStatus.SUCCEEDED and export.row_count == 6
        assert page.locator("select, input[name=_save]").count() == 0  # view-only
        screenshot(page, "admin-export-done", "1440")
        with page.expect_download() as info:
            page.click("a:has-text('download .jsonl')")
        download = info.value
        data = Path(download.path()).read_bytes()
        assert data == Path(export.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == export.content_hash
        assert download.suggested_filename == (
            f"{LONG}-export-{export.pk}-{export.content_hash[:12]}.jsonl")

        # Point 2: a queued export's row polls until the worker (this thread) finishes it.
        queued = PreferenceExport.objects.create(campaign=campaign, format="dataset",
                                                 requested_by=cast["admin"])
        page.goto(f"{base}/data/?campaign={campaign.pk}")
        row = page.locator(f"#export-{queued.pk}")
        assert row.get_attribute("hx-trigger") == "every 2s"
        preference_export_run(export_id=queued.pk)
        row.locator(".status-succeeded").wait_for(timeout=10_000)
        assert row.get_attribute("hx-trigger") is None
        assert row.locator("a", has_text="Download .zip").count() == 1

        for width, viewport in VIEWPORTS.items():
            page.set_viewport_size(viewport)
            page.goto(f"{base}/data/")
            page.eval_on_selector_all("details.hash", "els => els.forEach(e => e.open = true)")
            assert_fits(page, "data", width)
