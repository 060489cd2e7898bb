"""Issue 10, points 4 and 5, through the real services on PostgreSQL: a careless rater is not
flattered (competence "not enough data", a speed alert), an honest fast reader is not flagged,
live counts agree before any recompute, and "Recompute now" queues one job for admins only.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from html import unescape

import numpy as np
import pytest

from annotation.models import (
    AnnotatorProfile,
    AnnotatorQuality,
    Comparison,
    DriftAlert,
    Judgment,
    QualityRecompute,
)
from annotation.quality import MIN_PEER_ITEMS, reading_floor, speed_flag
from annotation.services import assignment_issue_next, judgment_submit
from annotation.services.quality import campaign_quality_recompute
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users

HTMX = {"HTTP_HX_REQUEST": "true"}


def _regular(campaign, n: int, tag: str, chars: int = 40) -> None:
    for i in range(n):
        ComparisonFactory(campaign=campaign,
                          response_a__text=f"{tag}{i} a ".ljust(chars, "a"),
                          response_b__text=f"{tag}{i} b ".ljust(chars, "b"))


def _judge(campaign, user, *, seconds, choose, rng, limit: int = 1000,
           stop=lambda: False) -> list[Judgment]:
    """Take work through the assignment service and submit until none is left or ``stop()``."""
    made = []
    while len(made) < limit and not stop():
        assignment = assignment_issue_next(campaign=campaign, annotator=user, rng=rng)
        if assignment is None:
            break
        choice = choose(assignment.comparison)
        made.append(judgment_submit(
            assignment=assignment, annotator=user, choice=choice,
            strength=2 if choice in ("A", "B") else None, idempotency_key=uuid.uuid4().hex,
            seconds_spent=seconds(len(made)),
        ))
    return made


def _cells(html: str, username: str) -> dict[str, str]:
    row = re.search(rf'<tr id="annotator-\d+" data-annotator="{username}">(.*?)</tr>', html,
                    re.S).group(1)
    cells = dict(re.findall(r'data-col="(\w+)"[^>]*>(.*?)</td>', row, re.S))
    return {k: " ".join(unescape(re.sub(r"<[^>]+>", " ", v)).split()) for k, v in cells.items()}


@pytest.fixture
def careless_campaign(cast):
    """Two careful peers share 10 items; then a careless rater presses random keys in 0.04-0.2 s
    on 30 items nobody else rates and the 9 gold items, answering 3 of those right (0.33)."""
    campaign = CampaignFactory(overlap=2, calibration_rate=0.0, accuracy_threshold=0.7)
    _regular(campaign, 10, "shared")
    peers = make_users(2, prefix="peer")
    rng = random.Random(3)
    for k, peer in enumerate(peers):
        _judge(campaign, peer, seconds=lambda i: 6.0 + i % 5, rng=rng,
               choose=lambda c, k=k: "A" if (c.pk + k) % 5 else "B")
    assert not Comparison.objects.filter(campaign=campaign, kind="regular", is_full=False).exists()
    # New work that only the careless rater will see (the shared items are full).
    _regular(campaign, 30, "solo")
    CalibrationFactory.create_batch(9, campaign=campaign, gold_choice="A")
    campaign.calibration_rate = 0.4
    campaign.save(update_fields=["calibration_rate"])
    (careless,) = make_users(1, prefix="careless")
    gold_seen: list[int] = []

    def choose(comparison):
        if comparison.kind == Comparison.Kind.CALIBRATION:
            gold_seen.append(comparison.pk)
            return "A" if len(gold_seen) <= 3 else "B"
        return rng.choice(["A", "B", "tie"])

    _judge(campaign, careless, seconds=lambda i: rng.uniform(0.04, 0.2), rng=rng,
           choose=choose)
    assert len(gold_seen) == 9
    return campaign, peers, careless


@pytest.mark.django_db
def test_careless_rater_gets_no_competence_and_a_speed_alert(careless_campaign, client_for):
    campaign, peers, careless = careless_campaign
    # Nobody else rated the careless rater's items.
    theirs = Judgment.objects.filter(annotator=careless).values("comparison")
    assert not Judgment.objects.filter(comparison__in=theirs).exclude(annotator=careless).exists()
    campaign_quality_recompute(campaign=campaign)

    row = AnnotatorQuality.objects.get(campaign=campaign, annotator=careless)
    assert row.n_gold == 9 and row.gold_accuracy == pytest.approx(1 / 3)
    assert row.competence is None and row.peer_agreement is None
    assert row.median_seconds < 0.25
    # The peers share 10 regular items each: they get both numbers.
    for peer in peers:
        q = AnnotatorQuality.objects.get(campaign=campaign, annotator=peer)
        assert q.competence is not None and q.peer_agreement is not None

    speed = DriftAlert.objects.filter(campaign=campaign, stream=DriftAlert.Stream.SPEED)
    assert list(speed.values_list("annotator", flat=True)) == [careless.pk]
    alert = speed.get()
    assert alert.detector == "reading_floor" and alert.statistic == 1.0
    # Their first 20 regular judgments (a full run; gold items are left out) were all too fast.
    kinds = list(Judgment.objects.filter(annotator=careless).order_by("created_at", "pk")
                 .values_list("comparison__kind", flat=True))
    regular = [n for n, kind in enumerate(kinds, 1) if kind == Comparison.Kind.REGULAR]
    assert (alert.onset_judgment, alert.detected_judgment) == (regular[0], regular[19])
    assert f"20 of 20 regular judgments from #{regular[0]} to #{regular[19]}" in alert.message
    # Like drift alerts it pauses nobody; 9 gold items are one short of MIN_GOLD_FOR_PAUSE.
    assert AnnotatorProfile.objects.get(user=careless).status == AnnotatorProfile.Status.ACTIVE

    # A second recompute adds nothing while the alert is open.
    campaign_quality_recompute(campaign=campaign)
    assert speed.count() == 1

    html = client_for("admin").get(f"/quality/campaigns/{campaign.pk}/annotators/").content
    cells = _cells(html.decode(), careless.username)
    assert cells["competence"] == "not enough data"
    assert cells["agreement"] == "not enough data"
    assert cells["seconds"].endswith("too fast") and cells["alerts"] == "1"
    assert f"Fewer than {MIN_PEER_ITEMS} of this annotator" in html.decode()
    for peer in peers:
        assert re.fullmatch(r"\d\.\d\d", _cells(html.decode(), peer.username)["competence"])
    # The campaign page lists the speed alert with the drift alerts, acknowledgeable.
    page = client_for("admin").get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    assert f'id="alert-{alert.pk}"' in page and 'data-stream="speed"' in page
    assert "Implausible speed" in page


@pytest.mark.django_db
def test_an_honest_fast_reader_of_short_items_raises_no_speed_alert(cast):
    """Short replies (about 20 characters each: a floor of 1.4 s) rated in 1.5-3 s, with every
    fourth answer quicker than the floor, are a fast reader, not a careless one."""
    campaign = CampaignFactory(overlap=1, calibration_rate=0.0)
    _regular(campaign, 40, "short", chars=20)
    (reader,) = make_users(1, prefix="quick")
    floor = float(reading_floor(np.array([40.0]))[0])
    assert floor == pytest.approx(1.4)
    made = _judge(campaign, reader, rng=random.Random(1), choose=lambda c: "A",
                  seconds=lambda i: 1.1 if i % 4 == 3 else 1.5 + (i % 7) * 0.25)
    assert len(made) == 40
    campaign_quality_recompute(campaign=campaign)
    assert not DriftAlert.objects.filter(campaign=campaign).exists()
    # The same items at the careless rater's pace do raise one.
    assert speed_flag(np.full(40, 0.1), np.full(40, 40.0)) is not None


def test_speed_flag_rule_on_hand_made_streams():
    """16 of a run of 20 under the floor flags; half does not; fewer than 20 judgments never do;
    ``start`` skips what an earlier alert reported; reading counts up to 2,000 characters."""
    chars = np.full(80, 200.0)  # floor 3 s
    slow, fast = 8.0, 0.5
    assert speed_flag(np.full(19, fast), chars[:19]) is None
    half = np.array([slow, fast] * 40)
    assert speed_flag(half, chars) is None
    burst = np.array([slow] * 30 + [fast] * 50)
    flag = speed_flag(burst, chars)
    assert (flag.onset, flag.alarm, flag.n_fast, flag.n) == (30, 45, 16, 20)
    later = speed_flag(burst, chars, start=46)
    assert later is not None and (later.onset, later.alarm) == (46, 65)
    assert reading_floor(np.array([10_000.0]))[0] == pytest.approx(21.0)


def test_speed_flag_spares_noisy_honest_raters_and_catches_a_mid_stream_switch():
    """The flag scans every window of a long stream, so it must be rare for an honest rater in
    any of them. Seeded simulation: 200 raters x 500 regular judgments, replies of 40-6,000
    characters, times lognormal around a multiple of the floor; then raters who switch to
    0.04-0.2 s at judgment 250."""
    rng = np.random.default_rng(7)

    def flagged(sigma: float, ratio: float) -> float:
        hits = 0
        for _ in range(200):
            chars = rng.uniform(40, 6000, 500)
            seconds = reading_floor(chars) * ratio * np.exp(rng.normal(0, sigma, 500))
            hits += speed_flag(seconds, chars) is not None
        return hits / 200

    assert flagged(0.8, 2.0) <= 0.01  # under the floor 19% of the time
    assert flagged(1.0, 2.0) <= 0.01  # 24%
    assert flagged(0.8, 1.5) <= 0.02  # 31%
    delays = []
    for _ in range(200):
        chars = rng.uniform(40, 6000, 500)
        seconds = reading_floor(chars) * 2.0 * np.exp(rng.normal(0, 0.8, 500))
        seconds[250:] = rng.uniform(0.04, 0.2, 250)
        flag = speed_flag(seconds, chars)
        assert flag is not None and flag.alarm >= 250
        delays.append(flag.alarm - 250)
    assert max(delays) < 20


@pytest.mark.django_db
def test_counts_agree_after_18_judgments_before_any_recompute(cast, client_for):
    """The issue's campaign: 18 ratings, some on gold, no recompute yet. Every page counts the
    same 18 judgments and the same gold answers, and says the estimates are not computed."""
    campaign = CampaignFactory(overlap=2, calibration_rate=0.3, accuracy_threshold=0.0)
    _regular(campaign, 20, "item")
    CalibrationFactory.create_batch(6, campaign=campaign, gold_choice="A")
    raters = make_users(2, prefix="early")
    rng = random.Random(5)
    for rater in raters:
        _judge(campaign, rater, rng=rng, limit=9, seconds=lambda i: 5.0,
               choose=lambda c: "A" if c.pk % 3 else "B")
    assert Judgment.objects.filter(campaign=campaign).count() == 18
    gold = Judgment.objects.filter(campaign=campaign, comparison__kind="calibration").count()
    assert gold > 0
    assert not QualityRecompute.objects.filter(campaign=campaign).exists()

    admin = client_for("admin")
    page = admin.get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    assert 'data-metric="n_judgments">18<' in page
    assert 'data-metric="n_annotators">2<' in page
    assert f'data-metric="n_gold">{gold}<' in page
    assert "not computed yet" in page and 'data-metric="newer">18<' in page
    chart = re.search(r'<script id="campaign-chart-data" type="application/json">(.*?)</script>',
                      page, re.S).group(1)
    assert json.loads(chart)["labels"] == ["1–10", "11–18"]  # the chart runs to the same 18

    table = admin.get(f"/quality/campaigns/{campaign.pk}/annotators/").content.decode()
    rows = [_cells(table, r.username) for r in raters]
    assert sum(int(r["judgments"]) for r in rows) == 18
    assert sum(int(re.search(r"n=(\d+)", r["gold"]).group(1)) for r in rows
               if r["gold"] != "—") == gold

    index = admin.get("/quality/").content.decode()
    cell = re.search(rf'<tr data-campaign="{campaign.pk}">.*?data-col="judgments"[^>]*>(\d+)<',
                     index, re.S)
    assert cell.group(1) == "18" and "not computed yet" in index

    timeline = admin.get(
        f"/quality/campaigns/{campaign.pk}/annotators/{raters[0].username}/").content.decode()
    assert 'data-metric="n_judgments">9<' in timeline and 'id="estimates"' in timeline

    # After a recompute the estimates say their age and what they include; new judgments show
    # as "newer, not yet included".
    campaign_quality_recompute(campaign=campaign)
    _judge(campaign, raters[0], rng=rng, limit=2, seconds=lambda i: 5.0, choose=lambda c: "A")
    page = admin.get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    assert 'data-metric="n_judgments">20<' in page
    assert re.search(r"as of \d{4}-\d\d-\d\d \d\d:\d\d UTC, from 18 judgments \(<span "
                     r'data-metric="newer">2</span> newer not yet included\)', page)


@pytest.mark.django_db
def test_recompute_now_queues_one_job_for_admins_only(cast, client_for):
    campaign = CampaignFactory()
    url = f"/quality/campaigns/{campaign.pk}/recompute/"
    admin = client_for("admin")
    page = admin.get(f"/quality/campaigns/{campaign.pk}/").content.decode()
    assert 'id="recompute-now"' in page
    for role in ("researcher", "annotator", "outsider"):
        assert client_for(role).post(url, **HTMX).status_code == 403
    assert not QualityRecompute.objects.exists()
    first = admin.post(url, **HTMX)
    assert first.status_code == 200
    html = first.content.decode()
    assert html.lstrip().startswith('<div id="estimates"')
    assert "recompute queued" in html and 'hx-trigger="every 2s"' in html
    assert 'id="recompute-now" disabled' in html
    # A second click joins the queued job.
    assert admin.post(url, **HTMX).status_code == 200
    assert QualityRecompute.objects.filter(campaign=campaign).count() == 1
    assert QualityRecompute.objects.get().status == QualityRecompute.Status.QUEUED
    # Without htmx: back to the campaign page.
    resp = admin.post(url)
    assert resp.status_code == 302 and resp["Location"] == f"/quality/campaigns/{campaign.pk}/"
    assert QualityRecompute.objects.count() == 1
    # Researchers see the state, without the button; when it is done the poll stops.
    state = client_for("researcher").get(url).content.decode()
    assert "recompute queued" in state and "recompute-now" not in state
    from annotation.services.quality import quality_recompute_run

    quality_recompute_run(job_id=QualityRecompute.objects.get().pk)
    done = admin.get(url, **HTMX).content.decode()
    assert "every 2s" not in done and "recomputed" in done
    assert "reload to see the new numbers" in done
