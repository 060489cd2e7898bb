"""Quality dashboards through HTTP: who may see them, the numbers they show, the timeline's
rolling series on a hand-made sequence, and the annotator's own page holding back recent gold.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import uuid
from html import unescape

import pytest
from django.test import Client
from django.utils import timezone

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
    assignment_issue_next,
    judgment_submit,
)
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users

HTMX = {"HTTP_HX_REQUEST": "true"}
_PRIORITY = itertools.count(1)


@pytest.fixture(autouse=True)
def _no_quality_hook(settings):
    # These tests build exact judgment sequences. The per-submit quality hook (tested with the
    # quality services) would add swapped re-shows and start recomputes in between.
    settings.GAPLAB_QUALITY_ON_SUBMIT = False


class ScriptedRandom(random.Random):
    """random() returns the scripted values in order, so an issue is fully determined."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)

    def choice(self, seq):
        assert len(seq) == 1, "the sequence must leave one candidate"
        return seq[0]

    def randrange(self, start, stop=None, step=1):
        # The calibration pick's shuffle coefficients: unscripted (one candidate is left).
        return start if stop is not None else 0


def _campaign(**kwargs):
    """A campaign where each answer is issued deterministically (see ``_answer``)."""
    campaign = CampaignFactory(calibration_rate=0.5, accuracy_threshold=0.0, overlap=50,
                               **kwargs)
    # Open regular work of the lowest priority: calibration is issued only while some is left.
    ComparisonFactory(campaign=campaign, priority=-1000)
    return campaign


def _answer(campaign, user, comparison: Comparison, choice: str, *, a_on_left: bool = True):
    """Issue exactly ``comparison`` to ``user`` through the service and submit ``choice``.

    The comparison must be the newest regular item (highest priority) or the only calibration
    item the user has not seen; the scripted draws pick calibration or not and the screen side.
    """
    is_calibration = comparison.kind == Comparison.Kind.CALIBRATION
    rng = ScriptedRandom([0.0 if is_calibration else 0.99, 0.0 if a_on_left else 0.99])
    assignment = assignment_issue_next(campaign=campaign, annotator=user, rng=rng)
    assert assignment.comparison_id == comparison.pk
    assert assignment.a_on_left is a_on_left
    return judgment_submit(
        assignment=assignment, annotator=user, choice=choice,
        strength=2 if choice in ("A", "B") else None, idempotency_key=uuid.uuid4().hex,
        seconds_spent=3.0,
    )


def _regular(campaign, len_a: int = 10, len_b: int = 12, tag: str = ""):
    # Each new regular item outranks the older ones, so it is the one issued next.
    return ComparisonFactory(campaign=campaign, priority=next(_PRIORITY),
                             response_a__text=f"{tag}a".ljust(len_a, "a"),
                             response_b__text=f"{tag}b".ljust(len_b, "b"))


def _gold(campaign, gold: str, *, accepts=(), len_a: int = 10, len_b: int = 12, tag: str = ""):
    return CalibrationFactory(
        campaign=campaign, gold_choice=gold, gold_accepts=list(accepts),
        calibration_type=Comparison.CalibrationType.KNOWN_ANSWER,
        response_a__text=f"{tag}a".ljust(len_a, "a"), response_b__text=f"{tag}b".ljust(len_b, "b"),
    )


def _rows(html: str) -> dict[str, dict[str, str]]:
    """Annotator table rows: username -> {column: cell text}."""
    rows = {}
    for match in re.finditer(r'<tr id="annotator-\d+" data-annotator="([^"]+)">(.*?)</tr>', html,
                             re.S):
        cells = dict(re.findall(r'<td class="[^"]*" data-col="(\w+)"[^>]*>(.*?)</td>',
                                match.group(2), re.S))
        status = re.search(r'data-col="status"[^>]*>(.*?)</td>', match.group(2), re.S).group(1)
        cells["status"] = status
        rows[match.group(1)] = {k: " ".join(unescape(re.sub(r"<[^>]+>", " ", v)).split())
                                for k, v in cells.items()}
    return rows


def _json_script(html: str, element_id: str) -> dict:
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>',
                      html, re.S)
    return json.loads(match.group(1))


# --- permissions -------------------------------------------------------------------------------

@pytest.mark.django_db
def test_dashboards_open_to_admins_and_researchers_only(cast, client_for):
    campaign = CampaignFactory()
    pages = [
        "/quality/", f"/quality/campaigns/{campaign.pk}/",
        f"/quality/campaigns/{campaign.pk}/annotators/",
        f"/quality/campaigns/{campaign.pk}/annotators/annotator/",
    ]
    for path in pages:
        for role, want in [("admin", 200), ("researcher", 200), ("annotator", 403),
                           ("outsider", 403)]:
            assert client_for(role).get(path).status_code == want, (role, path)
        resp = Client().get(path)
        assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")
    assert client_for("annotator").get("/quality/me/").status_code == 200
    for role in ["admin", "researcher", "outsider"]:
        assert client_for(role).get("/quality/me/").status_code == 403


@pytest.mark.django_db
def test_only_admins_act_and_only_by_post(cast, client_for):
    campaign = CampaignFactory()
    alert = DriftAlert.objects.create(
        campaign=campaign, annotator=cast["annotator"], stream=DriftAlert.Stream.GOLD_ERROR,
        detector="page_hinkley", onset_index=3, detected_index=9, statistic=4.2,
    )
    unpause = f"/quality/campaigns/{campaign.pk}/annotators/annotator/unpause/"
    acknowledge = f"/quality/campaigns/{campaign.pk}/alerts/{alert.pk}/acknowledge/"
    for role in ["researcher", "annotator", "outsider"]:
        assert client_for(role).post(unpause).status_code == 403
        assert client_for(role).post(acknowledge).status_code == 403
    assert client_for("admin").get(unpause).status_code == 405
    assert client_for("admin").get(acknowledge).status_code == 405
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


# --- the annotator table -----------------------------------------------------------------------

def _quality(campaign, user, **values):
    defaults = dict(n_judgments=40, n_gold=12, gold_accuracy=0.83, gold_ci_low=0.71,
                    gold_ci_high=0.91, peer_agreement=0.77, competence=0.88, position_bias=0.04,
                    length_bias=-0.31, sycophancy_bias=0.12, median_seconds=14.2)
    defaults.update(values)
    return AnnotatorQuality.objects.create(campaign=campaign, annotator=user, **defaults)


@pytest.fixture
def table(cast):
    campaign = CampaignFactory()
    ann, bob, cid = make_users(3, prefix="rater")
    _quality(campaign, ann)
    _quality(campaign, bob, gold_accuracy=0.5, gold_ci_low=0.3, gold_ci_high=0.7,
             peer_agreement=0.61, competence=None, position_bias=-0.2, median_seconds=3.0)
    _quality(campaign, cid, n_gold=0, gold_accuracy=None, gold_ci_low=None, gold_ci_high=None)
    AnnotatorProfile.objects.filter(user=bob).update(status=AnnotatorProfile.Status.PAUSED,
                                                     paused_reason="low gold accuracy")
    for onset in (1, 2):
        DriftAlert.objects.create(campaign=campaign, annotator=bob, stream="position",
                                  detector="cusum", onset_index=onset, detected_index=9,
                                  statistic=5.0)
    DriftAlert.objects.create(campaign=campaign, annotator=bob, stream="length",
                              detector="cusum", onset_index=1, detected_index=9, statistic=5.0,
                              acknowledged_at=timezone.now())
    # Another campaign's quality and alerts must not leak into this table.
    other = CampaignFactory()
    _quality(other, ann, gold_accuracy=0.1)
    DriftAlert.objects.create(campaign=other, annotator=ann, stream="position",
                              detector="cusum", onset_index=1, detected_index=9, statistic=5.0)
    return campaign, ann, bob, cid


@pytest.mark.django_db
def test_annotator_table_shows_the_stored_numbers(table, client_for):
    campaign, ann, bob, cid = table
    html = client_for("admin").get(f"/quality/campaigns/{campaign.pk}/annotators/").content
    rows = _rows(html.decode())
    assert set(rows) == {ann.username, bob.username, cid.username}
    a = rows[ann.username]
    assert a["gold"] == "0.83 [0.71, 0.91] n=12"
    assert (a["agreement"], a["competence"], a["position"], a["length"], a["sycophancy"],
            a["seconds"]) == ("0.77", "0.88", "0.04", "-0.31", "0.12", "14.2")
    # Judgments are counted live from the judgments themselves (none were made here), not the
    # stored n_judgments of the last recompute (40).
    assert a["judgments"] == "0"
    assert a["status"] == "active" and a["alerts"] == "0"
    b = rows[bob.username]
    assert b["gold"].startswith("0.50 [0.30, 0.70]")
    # A recompute that saw bob's judgments but gave no competence: too few shared items.
    assert b["competence"] == "not enough data" and b["position"] == "-0.20"
    assert b["status"] == "paused Un-pause" and b["alerts"] == "2"
    assert rows[cid.username]["gold"] == "—"


@pytest.mark.django_db
def test_researchers_see_no_action_buttons(table, client_for):
    campaign, _, bob, _ = table
    html = client_for("researcher").get(f"/quality/campaigns/{campaign.pk}/annotators/")
    rows = _rows(html.content.decode())
    assert rows[bob.username]["status"] == "paused"
    assert b"/unpause/" not in html.content
    page = client_for("researcher").get(f"/quality/campaigns/{campaign.pk}/").content
    assert b"Acknowledge" not in page and page.count(b'class="alert-row"') == 2


@pytest.mark.django_db
def test_annotator_table_sorts_and_filters(table, client_for):
    campaign, ann, bob, cid = table
    client = client_for("researcher")
    url = f"/quality/campaigns/{campaign.pk}/annotators/"

    def order(**params) -> list[str]:
        return list(_rows(client.get(url, params).content.decode()))

    # Missing values sort last in both directions; ties fall back to the username.
    assert order(sort="gold") == [bob.username, ann.username, cid.username]
    assert order(sort="gold", dir="desc") == [ann.username, bob.username, cid.username]
    assert order(sort="alerts", dir="desc")[0] == bob.username
    assert order(sort="seconds") == [bob.username, ann.username, cid.username]
    assert order(status="paused") == [bob.username]
    assert order(q=cid.username) == [cid.username]
    # Unknown input falls back to the default sort instead of reaching order_by().
    assert order(sort="annotator__password") == order()
    assert order(sort="annotator__password", status="paused") == [bob.username]
    fragment = client.get(url, {"sort": "agreement"}, **HTMX).content.decode()
    assert "<html" not in fragment and fragment.lstrip().startswith('<div id="annotator-table"')
    assert list(_rows(fragment)) == [bob.username, ann.username, cid.username]


@pytest.mark.django_db
def test_annotator_table_queries_do_not_grow_with_annotators(cast, client_for,
                                                            django_assert_num_queries):
    """No N+1: the rows, profiles and alert counts come in one query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    campaign = CampaignFactory()
    users = make_users(12, prefix="many")
    for user in users[:3]:
        _quality(campaign, user)
    client = client_for("admin")
    url = f"/quality/campaigns/{campaign.pk}/annotators/"
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    for i, user in enumerate(users[3:]):
        _quality(campaign, user)
        DriftAlert.objects.create(campaign=campaign, annotator=user, stream="position",
                                  detector="cusum", onset_index=i, detected_index=9,
                                  statistic=5.0)
    with django_assert_num_queries(len(few.captured_queries)):
        html = client.get(url).content.decode()
    assert len(_rows(html)) == 12
    # Session, user, roles, the nav's profile check, campaign, the rows, and the estimates'
    # age (live counts, the stored quality, the newest recompute): a fixed handful.
    assert len(few.captured_queries) <= 10
    with django_assert_num_queries(1):
        rows = list(sq.annotator_quality_list(campaign=campaign))
        assert [(r.annotator.username, r.annotator_status, r.open_alerts) for r in rows]


# --- the timeline ------------------------------------------------------------------------------

def test_rolling_share_uses_the_last_window_items():
    flags = [True, False, True, True, False, False]
    assert sq.rolling_share(flags, 3) == [
        (1.0, 1), (0.5, 2), (2 / 3, 3), (2 / 3, 3), (2 / 3, 3), (1 / 3, 3),
    ]
    assert sq.rolling_share(flags, 1) == [(float(f), 1) for f in flags]
    assert sq.rolling_share([], 5) == []
    with pytest.raises(ValueError):
        sq.rolling_share(flags, 0)


def test_long_series_are_thinned_for_the_page_keeping_both_ends():
    points = [sq.TimelinePoint(x=i, y=(i % 7) / 7, n=20, t="") for i in range(1, 4002)]
    timeline = sq.AnnotatorTimeline(n_judgments=4001, window=20, gold=points)
    gold = timeline.chart_data(max_points=1000)["series"]["gold"]
    assert len(gold) <= 1001
    assert gold[0]["x"] == 1 and gold[-1]["x"] == 4001
    assert [p["x"] for p in gold] == sorted({p["x"] for p in gold})
    short = sq.AnnotatorTimeline(n_judgments=3, window=20, gold=points[:3]).chart_data()
    assert [p["x"] for p in short["series"]["gold"]] == [1, 2, 3]


@pytest.fixture
def sequence(cast):
    """One annotator, eight judgments whose rolling series are worked out by hand below."""
    campaign = _campaign()
    (user,) = make_users(1, prefix="seq")
    r1 = _regular(campaign, 10, 20)

    def reshow():
        return CalibrationFactory(
            campaign=campaign, gold_choice=None, prompt=r1.prompt,
            calibration_type=Comparison.CalibrationType.SWAPPED_RESHOW, for_annotator=user,
            source_comparison=r1, response_a=r1.response_b, response_b=r1.response_a,
        )

    # (make the comparison, choice, a_on_left); each is made just before it is answered.
    steps = [
        (lambda: r1, "A", True),                                         # left, shorter
        (lambda: _gold(campaign, "A", len_a=30, len_b=10), "A", False),  # ok, right, longer
        (lambda: _gold(campaign, "B", len_a=15, len_b=15), "A", True),   # wrong, left, equal
        (reshow, "B", True),                                 # no gold; right, shorter (20 vs 10)
        (lambda: _gold(campaign, "A", accepts=["A", "tie"]), "tie", True),  # tolerance: ok
        (lambda: _regular(campaign), "both_bad", True),                  # no side, no length
        (lambda: _gold(campaign, "B", len_a=5, len_b=50), "B", False),   # ok, left, longer
        (lambda: _gold(campaign, "A", len_a=40, len_b=10), "B", True),   # wrong, right, shorter
    ]
    judgments = [_answer(campaign, user, make(), choice, a_on_left=a_on_left)
                 for make, choice, a_on_left in steps]
    return campaign, user, judgments


def _xy(points) -> list[tuple[int, float, int]]:
    return [(p.x, round(p.y, 4), p.n) for p in points]


@pytest.mark.django_db
def test_timeline_rolling_series_on_a_hand_made_sequence(sequence):
    campaign, user, judgments = sequence
    # Stored before the judgment-number columns: the number is read from the onset time.
    DriftAlert.objects.create(campaign=campaign, annotator=user, stream="position",
                              detector="cusum", onset_index=0, detected_index=5, statistic=3.0,
                              onset_at=judgments[3].created_at,  # judgment 4
                              detected_at=judgments[7].created_at)  # judgment 8
    # Stored with its numbers: they win over the stream indices.
    DriftAlert.objects.create(campaign=campaign, annotator=user, stream="gold_error",
                              detector="page_hinkley", onset_index=3, detected_index=4,
                              onset_judgment=7, detected_judgment=8, statistic=3.0)
    # Neither a number nor a time: the onset is unknown, so no marker (and "—" in the table).
    DriftAlert.objects.create(campaign=campaign, annotator=user, stream="length",
                              detector="cusum", onset_index=1, detected_index=2, statistic=3.0)
    timeline = sq.annotator_timeline(campaign=campaign, annotator=user, window=3)
    assert timeline.n_judgments == 8
    # Gold items at 2, 3, 5, 7, 8 answered T F T T F (the re-show at 4 has no gold).
    assert _xy(timeline.gold) == [(2, 1.0, 1), (3, 0.5, 2), (5, 0.6667, 3), (7, 0.6667, 3),
                                  (8, 0.6667, 3)]
    # A/B answers at 1, 2, 3, 4, 7, 8 picked the left side T F T F T F.
    assert _xy(timeline.position) == [(1, 1.0, 1), (2, 0.5, 2), (3, 0.6667, 3), (4, 0.3333, 3),
                                      (7, 0.6667, 3), (8, 0.3333, 3)]
    # A/B answers with unequal lengths at 1, 2, 4, 7, 8 picked the longer F T F T F.
    assert _xy(timeline.length) == [(1, 0.0, 1), (2, 0.5, 2), (4, 0.3333, 3), (7, 0.6667, 3),
                                    (8, 0.3333, 3)]
    assert [(m.x, m.alarm, m.stream) for m in timeline.markers] == [
        (4, 8, "position"), (7, 8, "gold_error")]
    # A window of 20 over five gold items is their plain running mean.
    wide = sq.annotator_timeline(campaign=campaign, annotator=user)
    assert [round(p.y, 4) for p in wide.gold] == [1.0, 0.5, 0.6667, 0.75, 0.6]


@pytest.mark.django_db
def test_timeline_ignores_superseded_judgments_and_other_annotators(sequence):
    from annotation.services import judgment_supersede

    campaign, user, judgments = sequence
    # Correct the wrong answer on gold item 2 (judgment 3): the correction replaces it.
    judgment_supersede(judgment=judgments[2], annotator=user, choice="B", strength=1,
                       idempotency_key="fix-3", seconds_spent=1.0)
    (other,) = make_users(1, prefix="other")
    _answer(campaign, other, _regular(campaign), "B")
    timeline = sq.annotator_timeline(campaign=campaign, annotator=user, window=20)
    assert timeline.n_judgments == 8
    # The correction now comes last in time: gold answers T T T F, then the corrected T.
    assert [round(p.y, 4) for p in timeline.gold] == [1.0, 1.0, 1.0, 0.75, 0.8]


@pytest.mark.django_db
def test_timeline_page_embeds_the_series_as_json(sequence, client_for):
    campaign, user, _ = sequence
    resp = client_for("researcher").get(
        f"/quality/campaigns/{campaign.pk}/annotators/{user.username}/")
    assert resp.status_code == 200
    data = _json_script(resp.content.decode(), "timeline-data")
    expected = sq.annotator_timeline(campaign=campaign, annotator=user).chart_data()
    assert data == {**expected, "threshold": campaign.accuracy_threshold}
    assert b'data-chart="timeline-gold"' in resp.content
    assert b"vendor/chart.umd.min.js" in resp.content


# --- onsets in judgment numbers ------------------------------------------------------------------

def _cell(html: str, alert_id: int, col: str) -> str:
    row = re.search(rf'<tr id="alert-{alert_id}"[^>]*>(.*?)</tr>', html, re.S).group(1)
    cell = re.search(rf'data-col="{col}"[^>]*>(.*?)</td>', row, re.S).group(1)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", cell)).split())


@pytest.mark.django_db
def test_alert_onset_is_the_judgment_number_of_its_stream_row_on_chart_and_tables(
        cast, client_for):
    """One annotator answers a regular item, then a gold item, 50 times; gold answers are right
    30 times, then wrong 20 times. The recompute's drift scan finds the change in the gold
    stream, whose index counts gold items only; the stored alert's onset_judgment and
    detected_judgment are the judgment numbers of those gold items (twice the index plus two,
    here), and the timeline chart, its alert table and the campaign's alert table all show them.
    """
    from annotation.services.quality import campaign_quality_recompute

    campaign = _campaign()
    (user,) = make_users(1, prefix="onset")
    judgments, gold_rows = [], []
    decisive = 0
    for step in range(50):
        for comparison, choice in (
            (_regular(campaign, 10, 10, tag=f"r{step}"), "A" if step % 2 else "B"),
            (_gold(campaign, "A", len_a=10, len_b=10, tag=f"g{step}"),
             "A" if step < 30 else "B"),
        ):
            left = decisive % 2 == 0  # sides alternate: no position change to find
            decisive += 1
            judgments.append(_answer(campaign, user, comparison, choice,
                                     a_on_left=(choice == "A") == left))
            if comparison.kind == Comparison.Kind.CALIBRATION:
                gold_rows.append(len(judgments) - 1)
    campaign_quality_recompute(campaign=campaign)

    alert = DriftAlert.objects.get(campaign=campaign, annotator=user, stream="gold_error")
    onset_row, alarm_row = gold_rows[alert.onset_index], gold_rows[alert.detected_index]
    assert alert.onset_judgment == onset_row + 1 == 2 * alert.onset_index + 2
    assert alert.detected_judgment == alarm_row + 1
    assert alert.onset_at == judgments[onset_row].created_at
    assert 25 <= alert.onset_index <= 32 and alert.detected_index < 50, alert.onset_index
    # The numbers of every alert of the scan are those of the judgments at its onset and alarm.
    for other in DriftAlert.objects.filter(campaign=campaign):
        assert judgments[other.onset_judgment - 1].created_at == other.onset_at
        assert judgments[other.detected_judgment - 1].created_at == other.detected_at
        # The message speaks in judgment numbers too, never in stream positions.
        assert f"#{other.onset_index}" not in other.message.replace(
            f"#{other.onset_judgment}", "")

    timeline = client_for("admin").get(
        f"/quality/campaigns/{campaign.pk}/annotators/{user.username}/").content.decode()
    markers = {m["stream"]: m for m in _json_script(timeline, "timeline-data")["markers"]}
    assert markers["gold_error"]["x"] == alert.onset_judgment
    assert markers["gold_error"]["alarm"] == alert.detected_judgment
    assert _cell(timeline, alert.pk, "onset").startswith(f"#{alert.onset_judgment} ")
    assert _cell(timeline, alert.pk, "alarm").startswith(f"#{alert.detected_judgment} ")
    # The level (gold interval against the threshold, 0 here) is shown apart from the drift.
    assert 'data-metric="level">above<' in timeline
    page = client_for("researcher").get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    assert _cell(page, alert.pk, "onset").startswith(f"#{alert.onset_judgment} ")


@pytest.mark.django_db
def test_judgment_numbers_stay_fixed_when_a_judgment_is_corrected(sequence, client_for):
    """A correction gets the next number; every earlier judgment keeps its own, so an alert
    stored before the correction still points at the same judgment on the chart."""
    from annotation.services import judgment_supersede

    campaign, user, judgments = sequence
    alert = DriftAlert.objects.create(
        campaign=campaign, annotator=user, stream="gold_error", detector="cusum",
        onset_index=1, detected_index=3, statistic=9.0,
        onset_at=judgments[4].created_at, detected_at=judgments[6].created_at)
    before = sq.judgment_numbers(judgment_ids=[j.pk for j in judgments])
    assert [before[j.pk] for j in judgments] == list(range(1, 9))
    fix = judgment_supersede(judgment=judgments[2], annotator=user, choice="B", strength=1,
                             idempotency_key="fix-numbers", seconds_spent=1.0)
    after = sq.judgment_numbers(judgment_ids=[j.pk for j in judgments] + [fix.pk])
    assert after == {**before, fix.pk: 9}
    timeline = sq.annotator_timeline(campaign=campaign, annotator=user)
    assert timeline.n_judgments == 8 and timeline.last_number == 9
    assert 3 not in [p.x for p in timeline.position]  # the corrected judgment is not drawn
    assert [(m.x, m.alarm) for m in timeline.markers] == [(5, 7)]
    listed = sq.drift_alert_list(campaign=campaign, open_only=False).get(pk=alert.pk)
    assert (listed.onset_number, listed.detected_number) == (5, 7)
    html = client_for("admin").get(
        f"/quality/campaigns/{campaign.pk}/annotators/{user.username}/").content.decode()
    assert _cell(html, alert.pk, "onset").startswith("#5 ")
    assert _json_script(html, "timeline-data")["x_max"] == 9


# --- the campaign page -------------------------------------------------------------------------

@pytest.mark.django_db
def test_campaign_page_shows_quality_label_mix_and_open_alerts(cast, client_for,
                                                               django_assert_num_queries):
    campaign = _campaign()
    ann, bob = make_users(2, prefix="mix")
    # 25 judgments in time order: buckets of 10, 10 and 5.
    script = [("A", True)] * 6 + [("B", True)] * 4 + [("tie", True)] * 5 + [("B", False)] * 5 \
        + [("both_bad", True), ("A", False), ("A", False), ("B", True), ("B", True)]
    for i, (choice, left) in enumerate(script):
        _answer(campaign, ann if i % 2 else bob, _regular(campaign), choice, a_on_left=left)
    CampaignQuality.objects.create(campaign=campaign, n_judgments=25, alpha_nominal=0.4123,
                                   alpha_ordinal=0.5567, noise_epsilon=0.182,
                                   majority_ds_disagreement=0.04, position_bias=0.031)
    open_alert = DriftAlert.objects.create(
        campaign=campaign, annotator=ann, stream="gold_error", detector="page_hinkley",
        onset_index=2, detected_index=7, statistic=6.1, message="accuracy fell")
    DriftAlert.objects.create(campaign=campaign, annotator=bob, stream="length",
                              detector="cusum", onset_index=1, detected_index=9, statistic=5.0,
                              acknowledged_at=timezone.now())

    with django_assert_num_queries(2):
        buckets = sq.campaign_label_mix(campaign=campaign)
    assert [(b.first, b.last) for b in buckets] == [(1, 10), (11, 20), (21, 25)]
    assert buckets[0].counts == {"A": 6, "B": 4}
    assert buckets[1].counts == {"tie": 5, "B": 5}
    assert buckets[2].counts == {"both_bad": 1, "A": 2, "B": 2}
    # Left picks among A/B answers: A shown left 6 of 10; B shown left (A on the right) 5 of 5;
    # A shown right and B shown right 0 of 4.
    assert [b.left_share for b in buckets] == [0.6, 1.0, 0.0]

    html = client_for("admin").get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    for metric, shown in [("n_judgments", "25"), ("alpha_nominal", "0.412"),
                          ("alpha_ordinal", "0.557"), ("noise_epsilon", "0.182"),
                          ("majority_ds_disagreement", "0.040"), ("position_bias", "0.031")]:
        assert f'data-metric="{metric}">{shown}<' in html, metric
    data = _json_script(html, "campaign-chart-data")
    assert data["labels"] == ["1–10", "11–20", "21–25"]
    assert data["mix"] == {"A": [0.6, 0.0, 0.4], "B": [0.4, 0.5, 0.4], "tie": [0.0, 0.5, 0.0],
                           "both_bad": [0.0, 0.0, 0.2]}
    assert data["left_share"] == [0.6, 1.0, 0.0]
    # Only the open alert is listed, with its acknowledge button.
    assert html.count('class="alert-row"') == 1 and f'id="alert-{open_alert.pk}"' in html
    assert "accuracy fell" in html and "Acknowledge" in html


@pytest.mark.django_db
def test_campaign_page_without_quality_or_judgments(cast, client_for):
    campaign = CampaignFactory()
    html = client_for("researcher").get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    assert "not been computed" in html and "No judgments yet" in html
    assert "campaign-chart-data" not in html
    index = client_for("researcher").get("/quality/").content.decode()
    assert f'href="/quality/campaigns/{campaign.pk}/"' in index


# --- actions -----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_admin_unpauses_an_annotator_and_gets_the_row_back(table, client_for):
    campaign, _, bob, _ = table
    resp = client_for("admin").post(
        f"/quality/campaigns/{campaign.pk}/annotators/{bob.username}/unpause/", **HTMX)
    assert resp.status_code == 200
    html = resp.content.decode()
    assert html.lstrip().startswith(f'<tr id="annotator-{bob.pk}"')
    assert _rows(html)[bob.username]["status"] == "active"
    assert AnnotatorProfile.objects.get(user=bob).status == AnnotatorProfile.Status.ACTIVE
    # Without htmx the page redirects back to the table.
    AnnotatorProfile.objects.filter(user=bob).update(status=AnnotatorProfile.Status.PAUSED)
    resp = client_for("admin").post(
        f"/quality/campaigns/{campaign.pk}/annotators/{bob.username}/unpause/")
    assert resp.status_code == 302
    assert resp["Location"] == f"/quality/campaigns/{campaign.pk}/annotators/"
    assert AnnotatorProfile.objects.get(user=bob).status == AnnotatorProfile.Status.ACTIVE


@pytest.mark.django_db
def test_admin_acknowledges_an_alert(table, client_for, cast):
    campaign, _, bob, _ = table
    alert = DriftAlert.objects.filter(campaign=campaign, acknowledged_at__isnull=True).first()
    ack = f"/quality/campaigns/{campaign.pk}/alerts/{{}}/acknowledge/"
    resp = client_for("admin").post(ack.format(alert.pk), **HTMX)
    assert resp.status_code == 200
    assert resp.content.decode().lstrip().startswith(f'<tr id="alert-{alert.pk}"')
    assert b"acknowledged by admin" in resp.content and b"Acknowledge</button>" not in resp.content
    alert.refresh_from_db()
    assert alert.acknowledged_by == cast["admin"] and alert.acknowledged_at is not None
    rows = _rows(client_for("admin").get(
        f"/quality/campaigns/{campaign.pk}/annotators/").content.decode())
    assert rows[bob.username]["alerts"] == "1"
    # Without htmx: back to where the button was, if that is on this site.
    other = DriftAlert.objects.filter(campaign=campaign, acknowledged_at__isnull=True).first()
    back = f"/quality/campaigns/{campaign.pk}/annotators/{bob.username}/"
    resp = client_for("admin").post(ack.format(other.pk), {"next": back})
    assert resp.status_code == 302 and resp["Location"] == back
    resp = client_for("admin").post(ack.format(other.pk), {"next": "https://evil.example/"})
    assert resp["Location"] == f"/quality/campaigns/{campaign.pk}/"
    # An alert is acknowledged only under its own campaign's URL.
    last = DriftAlert.objects.create(campaign=campaign, annotator=bob, stream="length",
                                     detector="cusum", onset_index=7, detected_index=9,
                                     statistic=5.0)
    elsewhere = CampaignFactory()
    resp = client_for("admin").post(
        f"/quality/campaigns/{elsewhere.pk}/alerts/{last.pk}/acknowledge/", **HTMX)
    assert resp.status_code == 404
    last.refresh_from_db()
    assert last.acknowledged_at is None


# --- the annotator's own page ------------------------------------------------------------------

def test_feedback_horizon_holds_back_the_newest_ten_to_nineteen():
    assert [sq.feedback_horizon(n) for n in (0, 9, 10, 19, 20, 29, 30, 45, 50)] == [
        0, 0, 0, 0, 10, 10, 20, 30, 40]
    positions = list(range(2, 42, 2))           # 20 gold items at judgments 2, 4, ..., 40
    flags = [True] * 7 + [False] * 3 + [True] * 4 + [False] * 6
    assert sq.released_batches(positions, flags, n_judgments=39) == [
        sq.FeedbackBatch(number=1, n_items=10, n_correct=7)]
    assert [b.n_correct for b in sq.released_batches(positions, flags, n_judgments=50)] == [7, 4]
    assert sq.released_batches(positions[:9], flags[:9], n_judgments=500) == []  # incomplete


def _mine(client) -> tuple[str, list[tuple[int, str]]]:
    html = client.get("/quality/me/").content.decode()
    batches = [(int(n), unescape(text)) for n, text in
               re.findall(r'<li data-batch="(\d+)">(.*?)</li>', html)]
    return html, batches


@pytest.mark.django_db
def test_my_quality_hides_recent_calibration_results(cast, client_for):
    """Gold at every even judgment: batch 2 ends at judgment 40 and shows only at 50."""
    campaign = _campaign(title="Feedback campaign")
    user = cast["annotator"]
    client = client_for("annotator")
    correct = [True] * 7 + [False] * 3 + [True] * 4 + [False] * 6 + [True] * 5
    texts = []

    def judge(k: int) -> None:  # judgment number k (1-based)
        tag = f"item-{k}-"
        if k % 2:
            _answer(campaign, user, _regular(campaign, tag=tag), "tie")
        else:
            ok = correct[k // 2 - 1]
            _answer(campaign, user, _gold(campaign, "A", tag=tag), "A" if ok else "B")
        texts.append(tag)

    for k in range(1, 41):
        judge(k)
    html, batches = _mine(client)
    assert batches == [(1, "Batch 1: 7 of 10 agreed (0.70)")]
    assert re.search(r'data-col="done">40<', html)
    for k in range(41, 50):
        judge(k)
    assert _mine(client)[1] == batches  # 49 judgments: the horizon is still 30
    judge(50)
    html, batches = _mine(client)
    assert batches == [(1, "Batch 1: 7 of 10 agreed (0.70)"),
                       (2, "Batch 2: 4 of 10 agreed (0.40)")]
    assert "Overall on past batches: 0.55" in html
    # Nothing per item: no item text, no comparison, no gold answer or kind.
    assert not any(tag in html for tag in texts)
    assert "gold" not in html.lower() and "calibration" not in html.lower()
    mine = sq.my_quality(annotator=user)
    assert [(m.campaign.pk, m.n_judgments, len(m.batches)) for m in mine] == [
        (campaign.pk, 50, 2)]


@pytest.mark.django_db
def test_my_quality_shows_only_my_own_work(cast, client_for):
    campaign = _campaign()
    (other,) = make_users(1, prefix="someone")
    for _ in range(3):
        _answer(campaign, other, _regular(campaign), "tie")
    html, batches = _mine(client_for("annotator"))
    assert batches == [] and "You have not rated anything yet" in html
    assert 'id="no-feedback"' in html
    assert Judgment.objects.filter(annotator=other).count() == 3



def test_campaign_page_says_whether_the_dawid_skene_fit_converged(client_for, campaign):
    from annotation.models import CampaignQuality

    CampaignQuality.objects.create(campaign=campaign, n_judgments=10, fits={
        "dawid_skene": {"iterations": 100, "converged": False, "anchored_items": 7}})
    page = client_for("admin").get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    assert 'data-converged="false"' in page and "did not converge" in page
    assert "anchored on 7 gold items" in page
    CampaignQuality.objects.filter(campaign=campaign).update(fits={
        "dawid_skene": {"iterations": 14, "converged": True, "anchored_items": 7}})
    page = client_for("admin").get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    assert "converged after 14 iterations" in page
