"""``manage.py quality_report``: its last line is JSON that carries exactly the stored quality
rows, with alert onsets and alarms in the annotator's judgment numbers."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotation.models import (
    AnnotatorProfile,
    AnnotatorQuality,
    CampaignQuality,
    DriftAlert,
    Judgment,
)
from annotation.selectors.quality import AccuracyLevel, accuracy_level
from annotation.services import assignment_issue_next, judgment_submit
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users


def _report(capsys, *args: str) -> tuple[dict, list[str]]:
    call_command("quality_report", *args)
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1]


def test_accuracy_level_reads_the_interval_against_the_threshold():
    assert accuracy_level(n_gold=12, ci_low=0.3, ci_high=0.6, threshold=0.7) == AccuracyLevel.BELOW
    assert accuracy_level(n_gold=12, ci_low=0.7, ci_high=0.9, threshold=0.7) == AccuracyLevel.ABOVE
    assert (accuracy_level(n_gold=12, ci_low=0.5, ci_high=0.9, threshold=0.7)
            == AccuracyLevel.UNDETERMINED)
    assert accuracy_level(n_gold=0, ci_low=None, ci_high=None, threshold=0.7) == "no_gold"


@pytest.mark.django_db
def test_report_json_matches_the_stored_rows(capsys):
    campaign = CampaignFactory(name="qr", accuracy_threshold=0.7)
    good, bad, fresh = make_users(3, prefix="qr-")
    AnnotatorProfile.objects.filter(user=bad).update(status=AnnotatorProfile.Status.PAUSED,
                                                     paused_reason="gold below 70%")
    stored = {
        good: AnnotatorQuality.objects.create(
            campaign=campaign, annotator=good, n_judgments=120, n_gold=15, gold_accuracy=0.93,
            gold_ci_low=0.70, gold_ci_high=0.99, competence=0.91, peer_agreement=0.8,
            position_bias=0.01, length_bias=-0.05, sycophancy_bias=0.0, median_seconds=30.0),
        bad: AnnotatorQuality.objects.create(
            campaign=campaign, annotator=bad, n_judgments=80, n_gold=12, gold_accuracy=0.4,
            gold_ci_low=0.19, gold_ci_high=0.64, competence=0.55, position_bias=0.2,
            length_bias=0.6),
        fresh: AnnotatorQuality.objects.create(campaign=campaign, annotator=fresh,
                                               n_judgments=3),
    }
    fits = {"dawid_skene": {"iterations": 14, "converged": True, "anchored_on_gold": 37}}
    CampaignQuality.objects.create(campaign=campaign, n_judgments=203, noise_epsilon=0.213,
                                   alpha_nominal=0.41, label_mix={"A": 0.5, "B": 0.5},
                                   fits=fits)
    now = timezone.now()
    with_numbers = DriftAlert.objects.create(
        campaign=campaign, annotator=bad, stream="accuracy", detector="accuracy_cusum",
        onset_index=40, detected_index=55, onset_judgment=61, detected_judgment=79,
        onset_at=now, detected_at=now, statistic=11.5, message="accuracy fell")
    acknowledged = DriftAlert.objects.create(
        campaign=campaign, annotator=bad, stream="position", detector="glr", onset_index=3,
        detected_index=9, onset_judgment=12, detected_judgment=30, statistic=10.2,
        acknowledged_at=now)

    report, lines = _report(capsys, "--campaign", "qr")
    assert report["campaign"]["name"] == "qr" and report["campaign"]["accuracy_threshold"] == 0.7
    quality = report["campaign"]["quality"]
    assert quality["noise_epsilon"] == 0.213 and quality["n_judgments"] == 203
    assert quality["fits"] == fits and quality["label_mix"] == {"A": 0.5, "B": 0.5}
    assert any("noise epsilon 0.213" in line and "converged" in line for line in lines)
    rows = {a["username"]: a for a in report["annotators"]}
    assert list(rows) == sorted(u.username for u in stored)
    for user, row in stored.items():
        got = rows[user.username]
        assert got["n_judgments"] == row.n_judgments
        assert got["gold"] == {"n": row.n_gold, "accuracy": row.gold_accuracy,
                               "ci_low": row.gold_ci_low, "ci_high": row.gold_ci_high}
        assert got["competence"] == row.competence
        assert got["peer_agreement"] == row.peer_agreement
        assert got["biases"] == {"position": row.position_bias, "length": row.length_bias,
                                 "sycophancy": row.sycophancy_bias}
        assert got["kind"] == AnnotatorProfile.Kind.PERSON
    assert rows[good.username]["status"] == "active"
    assert rows[good.username]["level"] == AccuracyLevel.ABOVE
    assert rows[bad.username]["status"] == "paused"
    assert rows[bad.username]["paused_reason"] == "gold below 70%"
    assert rows[bad.username]["level"] == AccuracyLevel.BELOW
    assert rows[fresh.username]["level"] == AccuracyLevel.NO_GOLD
    assert rows[good.username]["alerts"] == []
    alerts = rows[bad.username]["alerts"]
    assert [(a["id"], a["stream"], a["onset_judgment"], a["alarm_judgment"], a["acknowledged"])
            for a in alerts] == [(with_numbers.pk, "accuracy", 61, 79, False),
                                 (acknowledged.pk, "position", 12, 30, True)]
    assert alerts[0]["statistic"] == 11.5 and alerts[0]["message"] == "accuracy fell"


@pytest.mark.django_db
def test_recompute_first_then_report_alerts_stored_without_numbers_by_their_times(capsys):
    """``--recompute`` stores the quality rows the report then shows; an alert stored without
    judgment numbers (before the columns existed) is numbered from its onset and alarm times."""
    campaign = CampaignFactory(name="qr2", overlap=2, calibration_rate=0.3,
                               accuracy_threshold=0.0, reshow_rate=0.0)
    for i in range(12):
        ComparisonFactory(campaign=campaign, response_a__text=f"reply {i} a",
                          response_b__text=f"reply {i} bb")
    for i in range(5):
        CalibrationFactory(campaign=campaign, gold_choice="A",
                           response_a__text=f"gold {i} good", response_b__text=f"gold {i} bad")
    users = make_users(2, prefix="qr2-")
    for user in users:
        while (assignment := assignment_issue_next(campaign=campaign, annotator=user)):
            judgment_submit(assignment=assignment, annotator=user, choice="A", strength=2,
                            idempotency_key=uuid.uuid4().hex, seconds_spent=4.0)
    mine = list(Judgment.objects.filter(campaign=campaign, annotator=users[0])
                .order_by("created_at", "id"))
    legacy = DriftAlert.objects.create(
        campaign=campaign, annotator=users[0], stream="length", detector="cusum",
        onset_index=0, detected_index=2, onset_at=mine[3].created_at,
        detected_at=mine[6].created_at, statistic=7.0)

    report, _ = _report(capsys, "--campaign", "qr2", "--recompute")
    rows = {a["username"]: a for a in report["annotators"]}
    assert set(rows) == {u.username for u in users}
    for user in users:
        row = AnnotatorQuality.objects.get(campaign=campaign, annotator=user)
        assert rows[user.username]["n_judgments"] == row.n_judgments == Judgment.objects.filter(
            campaign=campaign, annotator=user).count()
        assert rows[user.username]["competence"] == row.competence
    quality = CampaignQuality.objects.get(campaign=campaign)
    assert report["campaign"]["quality"]["noise_epsilon"] == quality.noise_epsilon
    assert report["campaign"]["quality"]["fits"] == quality.fits
    (got,) = [a for a in rows[users[0].username]["alerts"] if a["id"] == legacy.pk]
    assert (got["onset_judgment"], got["alarm_judgment"]) == (4, 7)


@pytest.mark.django_db
def test_unknown_campaign_is_a_command_error():
    with pytest.raises(CommandError, match="No campaign named 'nope'"):
        call_command("quality_report", "--campaign", "nope")
