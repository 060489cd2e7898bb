"""The quality pages fit at 1440, 1366 and 390 px (issue 10, point 3): the campaign page with
long alert messages, the annotator table with a dozen annotators and a timeline, each checked by
``assert_fits`` (a table cut off behind a sideways scroll counts as overflowing); at 1440 the
Acknowledge button is in view without scrolling sideways; the timeline un-pauses (point 6); and
"Recompute now" follows its job to the end (point 5).

One browser, one login, one page resized between widths. Screenshots: tests/artifacts/screens/.
"""

from __future__ import annotations

import uuid

import pytest

from annotation.models import (
    AnnotatorProfile,
    AnnotatorQuality,
    CampaignQuality,
    DriftAlert,
    Judgment,
)
from annotation.services import Role, assignment_issue_next, judgment_submit, user_create_with_role
from tests.browser_support import VIEWPORTS, assert_fits, chromium_browser, log_in, require_chromium
from tests.factories import CampaignFactory, ComparisonFactory, make_users

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-12345678"  # make_users' password
LONG = ("accuracy fell from 0.92 (judgments #1–#40) to 0.41 (judgments #41–#77): the rater "
        "now picks the longer response on most items, including the known-answer ones, and "
        "their answers on the swapped re-shows disagree; see_the_timeline_for_the_whole_run_"
        "of_judgments_before_and_after_the_onset")


def _seed():
    campaign = CampaignFactory(name="polish-campaign",
                               title="Polish: a campaign whose title is long", overlap=1,
                               calibration_rate=0.0, accuracy_threshold=0.7)
    raters = make_users(12, prefix="polish-annotator-")
    for i in range(16):
        ComparisonFactory(campaign=campaign, response_a__text=f"Reply {i} A " + "x" * i,
                          response_b__text=f"Reply {i} B")
    first = raters[0]
    for i in range(16):
        assignment = assignment_issue_next(campaign=campaign, annotator=first)
        judgment_submit(assignment=assignment, annotator=first, choice="A" if i % 3 else "B",
                        strength=2, idempotency_key=uuid.uuid4().hex, seconds_spent=4.0 + i)
    for i, rater in enumerate(raters):
        AnnotatorQuality.objects.create(
            campaign=campaign, annotator=rater, n_judgments=16 if i == 0 else 0, n_gold=12,
            gold_accuracy=0.5 + i / 30, gold_ci_low=0.3, gold_ci_high=0.81,
            peer_agreement=None if i % 4 == 0 else 0.7, competence=None if i % 4 == 0 else 0.81,
            position_bias=-0.12, length_bias=1.234, sycophancy_bias=0.05, median_seconds=12.5,
        )
    AnnotatorProfile.objects.filter(user=first).update(
        status=AnnotatorProfile.Status.PAUSED,
        paused_reason="Gold accuracy in polish-campaign is below 70% with 95% confidence.")
    CampaignQuality.objects.create(campaign=campaign, n_judgments=12, alpha_nominal=0.41,
                                   alpha_ordinal=0.52, noise_epsilon=0.18,
                                   majority_ds_disagreement=0.05, position_bias=0.08)
    mine = list(Judgment.objects.filter(annotator=first).order_by("created_at", "id"))
    for k, (stream, detector) in enumerate([("accuracy", "glr_up"), ("length", "glr"),
                                            ("speed", "reading_floor")]):
        DriftAlert.objects.create(
            campaign=campaign, annotator=raters[k], stream=stream, detector=detector,
            onset_index=k, detected_index=k + 9, onset_judgment=k + 1, detected_judgment=k + 10,
            onset_at=mine[k].created_at, detected_at=mine[k + 9].created_at, statistic=12.34,
            message=LONG,
        )
    admin = user_create_with_role(username="polish-admin", password=PASSWORD, role=Role.ADMIN)
    return campaign, raters, admin


def test_quality_pages_fit_and_the_timeline_unpauses(live_server, settings):
    require_chromium()
    settings.GAPLAB_QUALITY_ON_SUBMIT = False
    campaign, raters, admin = _seed()
    base = live_server.url
    pages = {
        "quality-index": f"{base}/quality/",
        "campaign": f"{base}/quality/campaigns/{campaign.pk}/",
        "annotators": f"{base}/quality/campaigns/{campaign.pk}/annotators/",
        "timeline": f"{base}/quality/campaigns/{campaign.pk}/annotators/{raters[0].username}/",
    }
    with chromium_browser() as browser:
        page = browser.new_page(viewport=VIEWPORTS["1440"])
        page.set_default_timeout(15_000)
        log_in(page, base, admin.username, PASSWORD)
        for width, viewport in VIEWPORTS.items():
            page.set_viewport_size(viewport)
            for name, url in pages.items():
                page.goto(url)
                assert_fits(page, name, width)
            if width == "1440":
                page.goto(pages["campaign"])
                button = page.locator("#alerts").get_by_role("button", name="Acknowledge").first
                assert button.is_visible()
                box = button.bounding_box()
                assert 0 <= box["x"] and box["x"] + box["width"] <= viewport["width"], box
                wrap = page.locator("#alerts").evaluate(
                    "t => [t.parentElement.scrollWidth, t.parentElement.clientWidth]")
                assert wrap[0] <= wrap[1], f"the alert table scrolls sideways: {wrap}"
                page.goto(pages["annotators"])
                link = page.locator(f'tr[data-annotator="{raters[5].username}"]').get_by_role(
                    "link", name="timeline")
                box = link.bounding_box()
                assert box["x"] + box["width"] <= viewport["width"], box

        # The timeline says the annotator is paused and why; an admin un-pauses it there.
        page.set_viewport_size(VIEWPORTS["1440"])
        page.goto(pages["timeline"])
        status = page.locator("#annotator-status")
        assert status.get_attribute("data-status") == "paused"
        assert "below 70%" in status.inner_text()
        with page.expect_navigation():
            page.locator("#unpause").click()
        assert page.url == pages["timeline"]
        assert page.locator("#annotator-status").get_attribute("data-status") == "active"
        assert "Un-paused by polish-admin" in page.locator("#unpaused-note").inner_text()
        assert page.locator("#unpause").count() == 0

        # "Recompute now" queues the job and the block follows it until it is done (tasks run
        # eagerly here, right after the request commits).
        page.goto(pages["campaign"])
        with page.expect_response(lambda r: r.url.endswith("/recompute/")) as info:
            page.locator("#recompute-now").click()
        assert info.value.status == 200
        page.locator('#estimates[data-recompute="succeeded"]').wait_for()
        assert "recomputed" in page.locator("#recompute-state").inner_text()
    assert AnnotatorProfile.objects.get(user=raters[0]).status == AnnotatorProfile.Status.ACTIVE
