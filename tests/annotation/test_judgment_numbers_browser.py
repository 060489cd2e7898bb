"""In a real browser, the timeline chart draws a drift alert's onset at the judgment number the
alert table beside it shows, for an alert stored with its numbers and for one stored only with
times (numbered on read).

Debian's chromium through Playwright against pytest-django's live_server.
"""

from __future__ import annotations

import random
import uuid

import pytest

from annotation.models import Comparison, DriftAlert, Judgment
from annotation.services import Role, assignment_issue_next, judgment_submit, user_create_with_role
from tests.browser_support import chromium_browser, log_in, require_chromium
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-12345678"  # make_users' password

# Per marker of a chart: its x in data units, and how many pixels of the marker's colour lie in
# a 5-pixel column at that x inside the plot area (a dashed line covers about half the height).
MARKERS = """id => {
  const c = document.getElementById(id);
  const chart = Chart.getChart(c);
  const dpr = chart.currentDevicePixelRatio;
  const area = chart.chartArea;
  const top = Math.round(area.top * dpr), height = Math.round((area.bottom - area.top) * dpr);
  const hex = s => [1, 3, 5].map(i => parseInt(s.slice(i, i + 2), 16));
  const colours = {gold_error: hex("#b42318"), length: hex("#e07a1f")};
  return {height: height, markers: chart.options.plugins.gaplabMarkers.markers.map(m => {
    const px = Math.round(chart.scales.x.getPixelForValue(m.x) * dpr);
    const want = colours[m.stream];
    const d = c.getContext('2d').getImageData(px - 2, top, 5, height).data;
    let hits = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 100 && want.every((v, k) => Math.abs(d[i + k] - v) < 40)) hits++;
    }
    return {stream: m.stream, x: m.x, alarm: m.alarm, hits: hits};
  })};
}"""


def test_chart_markers_sit_at_the_judgment_numbers_the_alert_table_shows(live_server, settings):
    require_chromium()
    settings.GAPLAB_QUALITY_ON_SUBMIT = False
    campaign = CampaignFactory(overlap=1, calibration_rate=0.3, accuracy_threshold=0.0,
                               reshow_rate=0.0)
    for i in range(40):
        ComparisonFactory(campaign=campaign, response_a__text=f"Reply {i} A",
                          response_b__text=f"Reply {i} B longer")
    for i in range(20):
        CalibrationFactory(campaign=campaign, gold_choice="A",
                           calibration_type=Comparison.CalibrationType.KNOWN_ANSWER,
                           response_a__text=f"Gold {i} good", response_b__text=f"Gold {i} bad")
    (rater,) = make_users(1, prefix="numbers")
    rng = random.Random(3)
    while (assignment := assignment_issue_next(campaign=campaign, annotator=rater, rng=rng)):
        judgment_submit(assignment=assignment, annotator=rater, choice=rng.choice("AB"),
                        strength=2, idempotency_key=uuid.uuid4().hex, seconds_spent=4.0)
    mine = list(Judgment.objects.filter(annotator=rater).order_by("created_at", "id"))
    assert len(mine) >= 50  # calibration is drawn only while regular work is left
    stored = DriftAlert.objects.create(
        campaign=campaign, annotator=rater, stream="gold_error", detector="gold_cusum",
        onset_index=5, detected_index=9, onset_judgment=21, detected_judgment=40,
        onset_at=mine[20].created_at, detected_at=mine[39].created_at, statistic=9.1)
    legacy = DriftAlert.objects.create(  # no numbers stored: numbered from its times
        campaign=campaign, annotator=rater, stream="length", detector="glr", onset_index=2,
        detected_index=30, onset_at=mine[44].created_at, detected_at=mine[49].created_at,
        statistic=10.5)
    admin = user_create_with_role(username="numbers-admin", password=PASSWORD, role=Role.ADMIN)

    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        log_in(page, live_server.url, admin.username, PASSWORD)
        page.goto(f"{live_server.url}/quality/campaigns/{campaign.pk}/annotators/"
                  f"{rater.username}/")
        page.locator("#gold-chart[data-drawn=true]").wait_for()
        page.locator("#bias-chart[data-drawn=true]").wait_for()
        table = {
            alert_id: (page.locator(f"#alert-{alert_id} [data-col=onset]").inner_text(),
                       page.locator(f"#alert-{alert_id} [data-col=alarm]").inner_text())
            for alert_id in (stored.pk, legacy.pk)
        }
        drawn = page.evaluate(MARKERS, "gold-chart")

    assert table[stored.pk][0].startswith("#21") and table[stored.pk][1].startswith("#40")
    assert table[legacy.pk][0].startswith("#45") and table[legacy.pk][1].startswith("#50")
    by_stream = {m["stream"]: m for m in drawn["markers"]}
    assert (by_stream["gold_error"]["x"], by_stream["gold_error"]["alarm"]) == (21, 40)
    assert (by_stream["length"]["x"], by_stream["length"]["alarm"]) == (45, 50)
    for marker in drawn["markers"]:  # each dashed line is drawn where its number says
        assert marker["hits"] > 0.25 * drawn["height"], drawn
