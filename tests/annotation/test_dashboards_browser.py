"""The quality dashboards in a real browser: charts drawn from the embedded JSON, htmx sorting,
un-pausing and acknowledging without a reload, and the annotator's own page.

Drives Debian's chromium through Playwright against pytest-django's live_server (a
transactional database: the server thread sees what the test commits). Screenshots go to
tests/artifacts/.
"""

from __future__ import annotations

import random
import uuid

import pytest

from annotation.models import (
    AnnotatorProfile,
    AnnotatorQuality,
    CampaignQuality,
    Comparison,
    DriftAlert,
    Judgment,
)
from annotation.selectors import quality as sq
from annotation.services import (
    Role,
    assignment_issue_next,
    judgment_submit,
    user_create_with_role,
)
from tests.browser_support import artifacts_dir, chromium_browser, log_in, require_chromium
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-12345678"  # make_users' password

# Share of non-transparent pixels in a canvas: an empty canvas has none.
INK = """id => {
  const c = document.getElementById(id);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n / (c.width * c.height);
}"""

# For each drift marker of a chart: how many red pixels lie in a 5-pixel column at its x inside
# the plot area (the gold-error marker is the only red thing on the gold chart), and the same
# count for a column away from every marker.
MARKER_PIXELS = """id => {
  const c = document.getElementById(id);
  const chart = Chart.getChart(c);
  const dpr = chart.currentDevicePixelRatio;
  const area = chart.chartArea;
  const top = Math.round(area.top * dpr), height = Math.round((area.bottom - area.top) * dpr);
  const red = px => {
    const d = c.getContext('2d').getImageData(px - 2, top, 5, height).data;
    let hits = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 100 && d[i] > 130 && d[i + 1] < 90 && d[i + 2] < 90) hits++;
    }
    return hits;
  };
  const markers = chart.options.plugins.gaplabMarkers.markers;
  const xs = markers.map(m => Math.round(chart.scales.x.getPixelForValue(m.x) * dpr));
  const clear = Math.round((area.left + 8) * dpr);
  return {height: height, markers: markers.map((m, i) => ({stream: m.stream, x: m.x,
          red: red(xs[i])})), clear: red(clear)};
}"""


def _seed():
    """Two raters through the real services; rater 0's accuracy and position bias drift."""
    campaign = CampaignFactory(name="dash-campaign", title="Dashboard campaign", overlap=3,
                               calibration_rate=0.3, accuracy_threshold=0.0, reshow_rate=0.0)
    for i in range(60):
        ComparisonFactory(campaign=campaign, response_a__text=f"Reply {i} A " + "x" * (i % 7),
                          response_b__text=f"Reply {i} B " + "y" * (i % 5))
    for i in range(24):
        CalibrationFactory(campaign=campaign, gold_choice="A",
                           calibration_type=Comparison.CalibrationType.KNOWN_ANSWER,
                           response_a__text=f"Gold {i} good answer",
                           response_b__text=f"Gold {i} bad")
    raters = make_users(2, prefix="dash-rater")
    rng = random.Random(7)
    for r, rater in enumerate(raters):
        for t in range(50):
            assignment = assignment_issue_next(campaign=campaign, annotator=rater, rng=rng)
            if assignment is None:
                break
            drifted = r == 0 and t >= 25
            if assignment.comparison.kind == Comparison.Kind.CALIBRATION:
                choice = "A" if rng.random() < (0.4 if drifted else 0.95) else "B"
            else:
                left = rng.random() < (0.85 if drifted else 0.5)
                choice = "A" if left == assignment.a_on_left else "B"
                if rng.random() < 0.1:
                    choice = "tie"
            judgment_submit(assignment=assignment, annotator=rater, choice=choice,
                            strength=2 if choice in ("A", "B") else None,
                            idempotency_key=uuid.uuid4().hex, seconds_spent=5.0)
    for rater, acc in zip(raters, (0.62, 0.94), strict=True):
        AnnotatorQuality.objects.create(
            campaign=campaign, annotator=rater, n_judgments=50, n_gold=14, gold_accuracy=acc,
            gold_ci_low=acc - 0.2, gold_ci_high=min(acc + 0.05, 1.0), peer_agreement=0.7,
            competence=0.8, position_bias=0.2 if rater == raters[0] else 0.01,
            length_bias=0.1, sycophancy_bias=0.0, median_seconds=5.0,
        )
    AnnotatorProfile.objects.filter(user=raters[1]).update(
        status=AnnotatorProfile.Status.PAUSED, paused_reason="test pause")
    CampaignQuality.objects.create(campaign=campaign, n_judgments=100, alpha_nominal=0.41,
                                   alpha_ordinal=0.52, noise_epsilon=0.18,
                                   majority_ds_disagreement=0.05, position_bias=0.08)
    mine = list(Judgment.objects.filter(annotator=raters[0]).order_by("created_at", "id"))
    alerts = [
        DriftAlert.objects.create(
            campaign=campaign, annotator=raters[0], stream=stream, detector="page_hinkley",
            onset_index=onset, detected_index=onset + 8, onset_at=mine[onset].created_at,
            statistic=5.5, message=f"{stream} changed",
        )
        for stream, onset in [("gold_error", 25), ("position", 28)]
    ]
    admin = user_create_with_role(username="dash-admin", password=PASSWORD, role=Role.ADMIN)
    return campaign, raters, admin, alerts


def _watch(page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    return problems


def _charts_drawn(page, ids: list[str]) -> None:
    for chart_id in ids:
        page.locator(f"#{chart_id}[data-drawn=true]").wait_for()
        ink = page.evaluate(INK, chart_id)
        assert ink > 0.01, f"#{chart_id} looks empty ({ink:.4f} of its pixels drawn)"


def test_dashboards_draw_their_charts_and_act_without_reload(live_server, settings):
    require_chromium()
    # The per-submit quality hook would start recomputes while the data is seeded.
    settings.GAPLAB_QUALITY_ON_SUBMIT = False
    campaign, raters, admin, alerts = _seed()
    base = live_server.url
    out = artifacts_dir()
    # ORM reads stay outside the browser block: Playwright's sync API runs it in a greenlet, where
    # Django would open a second connection that outlives the test database.
    done = Judgment.objects.filter(annotator=raters[0]).count()
    (expected,) = sq.my_quality(annotator=raters[0])
    assert expected.batches, "the seed should release at least one feedback batch"

    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        problems = _watch(page)
        log_in(page, base, admin.username, PASSWORD)

        # Index -> campaign page: numbers, two charts, open alerts.
        page.goto(f"{base}/quality/")
        page.get_by_role("link", name="Dashboard campaign").first.click()
        page.wait_for_url(f"**/quality/campaigns/{campaign.pk}/")
        _charts_drawn(page, ["label-mix-chart", "position-chart"])
        assert page.locator('[data-metric="alpha_nominal"]').inner_text() == "0.410"
        assert page.locator("#alerts .alert-row").count() == 2
        page.screenshot(path=str(out / "quality-campaign.png"), full_page=True)

        # Acknowledge swaps the row in place; the page is not reloaded.
        page.evaluate("window.__noReload = 'still here'")
        row = page.locator(f"#alert-{alerts[0].pk}")
        with page.expect_response(lambda r: r.url.endswith("/acknowledge/")) as info:
            row.get_by_role("button", name="Acknowledge").click()
        assert info.value.status == 200
        page.locator(f"#alert-{alerts[0].pk} .pill.acknowledged").wait_for()
        assert "acknowledged by dash-admin" in page.locator(f"#alert-{alerts[0].pk}").inner_text()
        assert page.evaluate("window.__noReload") == "still here"

        # Annotator table: sort by a header (htmx swap, URL pushed), then un-pause.
        page.goto(f"{base}/quality/campaigns/{campaign.pk}/annotators/")
        page.evaluate("window.__noReload = 'still here'")
        names = page.locator("#annotator-table tbody tr[data-annotator]")
        assert names.evaluate_all("rs => rs.map(r => r.dataset.annotator)") == [
            raters[0].username, raters[1].username]  # gold accuracy, ascending
        with page.expect_response(lambda r: "sort=gold" in r.url):
            page.locator('#annotator-table a[data-sort="gold"]').click()
        page.wait_for_function(
            "() => document.querySelector('#annotator-table th[aria-sort]')"
            "?.getAttribute('aria-sort') === 'descending'")
        assert names.evaluate_all("rs => rs.map(r => r.dataset.annotator)") == [
            raters[1].username, raters[0].username]
        assert "dir=desc" in page.url
        # Typing a name filters the table as you type; the sort is kept.
        page.locator("#annotator-filters input[name=q]").fill(raters[1].username)
        page.wait_for_function(
            "() => document.querySelectorAll('#annotator-table tr[data-annotator]').length === 1")
        assert names.evaluate_all("rs => rs.map(r => r.dataset.annotator)") == [
            raters[1].username]
        assert "dir=desc" in page.url and "q=dash-rater1" in page.url
        page.locator("#annotator-filters input[name=q]").fill("")
        page.wait_for_function(
            "() => document.querySelectorAll('#annotator-table tr[data-annotator]').length === 2")
        paused = page.locator(f'tr[data-annotator="{raters[1].username}"]')
        assert "paused" in paused.locator('[data-col="status"]').inner_text()
        with page.expect_response(lambda r: r.url.endswith("/unpause/")) as info:
            paused.get_by_role("button", name="Un-pause").click()
        assert info.value.status == 200
        page.locator(f'tr[data-annotator="{raters[1].username}"] .pill.active').wait_for()
        assert page.evaluate("window.__noReload") == "still here"
        page.screenshot(path=str(out / "quality-annotators.png"), full_page=True)

        # Timeline: both charts drawn, the gold-error onset drawn as a red dashed line.
        page.locator(f'tr[data-annotator="{raters[0].username}"]').get_by_role(
            "link", name="timeline").click()
        page.wait_for_url(f"**/annotators/{raters[0].username}/")
        _charts_drawn(page, ["gold-chart", "bias-chart"])
        pixels = page.evaluate(MARKER_PIXELS, "gold-chart")
        streams = {m["stream"]: m for m in pixels["markers"]}
        assert set(streams) == {"gold_error", "position"}
        assert streams["gold_error"]["red"] > 0.25 * pixels["height"], pixels
        assert pixels["clear"] == 0, pixels
        page.screenshot(path=str(out / "quality-timeline.png"), full_page=True)
        assert not problems, problems

        # The annotator's own page: progress, and only old, complete feedback batches.
        rater_page = browser.new_page(viewport={"width": 1000, "height": 800})
        rater_problems = _watch(rater_page)
        log_in(rater_page, base, raters[0].username, PASSWORD)
        rater_page.goto(f"{base}/quality/me/")
        assert rater_page.locator(
            f'tr[data-campaign="{campaign.pk}"] [data-col="done"]').inner_text() == str(done)
        assert rater_page.locator("li[data-batch]").count() == len(expected.batches)
        rater_page.screenshot(path=str(out / "quality-mine.png"), full_page=True)
        assert rater_page.goto(f"{base}/quality/").status == 403
        assert not [p for p in rater_problems if "403" not in p], rater_problems

    assert AnnotatorProfile.objects.get(user=raters[1]).status == AnnotatorProfile.Status.ACTIVE
    alerts[0].refresh_from_db()
    assert alerts[0].acknowledged_by == admin
    for name in ["quality-campaign", "quality-annotators", "quality-timeline", "quality-mine"]:
        assert (out / f"{name}.png").stat().st_size > 0
