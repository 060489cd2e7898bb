"""Drift detection on every judgment: gold items plus the peers' answers on regular items."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annotation.drift import (
    STREAM_ACCURACY,
    STREAM_GOLD_ERROR,
    ChangePoint,
    answer_llr,
    drift_scan_frame,
    first_new_alarm,
    peer_evidence,
)
from annotation.quality import DawidSkeneFit, JudgmentFrame, fit_dawid_skene

PRIOR = np.array([0.4, 0.4, 0.1, 0.1])  # A, B, tie, both_bad


def test_answer_llr_on_gold_is_the_bernoulli_cusum_increment():
    llr = answer_llr(np.array([1.0, 0.0]), p0=0.1, p1=0.3)
    assert llr == pytest.approx([math.log(0.7 / 0.9), math.log(0.3 / 0.1)])
    # Uncertain truth moves the statistic less than a gold item, in both directions.
    soft = answer_llr(np.array([0.8, 0.2]), p0=0.1, p1=0.3)
    assert llr[0] < soft[0] < 0 < soft[1] < llr[1]


def _frame(annotator, item, choice, gold_ok, is_calibration) -> JudgmentFrame:
    n = len(annotator)
    nan = np.full(n, np.nan)
    choice = np.asarray(choice)
    return JudgmentFrame(
        annotator=annotator, item=item, choice=choice, strength=np.where(choice <= 1, 1, 0),
        a_on_left=np.arange(n) % 2 == 0, seconds=np.full(n, 10.0), len_diff=nan,
        agree_diff=nan, gold_ok=gold_ok, consistent=nan, is_reshow=np.zeros(n, bool),
        is_calibration=is_calibration,
    )


def test_peer_evidence_is_the_leave_one_out_posterior_at_the_given_answer():
    # Item 0: annotators 0, 1, 2 answer A, A, B. Item 1: only annotator 0 (no peers). Item 2: a
    # gold item annotator 1 got wrong.
    frame = _frame(annotator=[0, 1, 2, 0, 1], item=[0, 0, 0, 1, 2], choice=[0, 0, 1, 0, 1],
                   gold_ok=[np.nan, np.nan, np.nan, np.nan, 0.0],
                   is_calibration=[False, False, False, False, True])
    errors = np.zeros((3, 2, 2))  # errors[w, observed, true] over labels (A, B)
    for w, acc in enumerate([0.9, 0.8, 0.6]):
        errors[w] = [[acc, 1 - acc], [1 - acc, acc]]
    ds = DawidSkeneFit(items=np.array([0, 1]), labels=np.array([0, 1]),
                       probas=np.full((2, 2), 0.5), priors=np.array([0.7, 0.3]), errors=errors,
                       n_iter=1)
    evidence = peer_evidence(frame, ds)

    def posterior_a(peers):  # P(truth = A | the peers' answers), by hand
        like_a, like_b = 0.7, 0.3
        for w, answer in peers:
            like_a *= errors[w, answer, 0]
            like_b *= errors[w, answer, 1]
        return like_a / (like_a + like_b)

    assert evidence[0] == pytest.approx(posterior_a([(1, 0), (2, 1)]))      # answered A
    assert evidence[1] == pytest.approx(posterior_a([(0, 0), (2, 1)]))      # answered A
    assert evidence[2] == pytest.approx(1 - posterior_a([(0, 0), (1, 0)]))  # answered B
    assert np.isnan(evidence[3])  # nobody else answered item 1
    assert evidence[4] == 0.0     # gold: the tolerance-checked answer


def _simulated_campaign(rng, *, n_steady=50, n_drifting=10, steps=2000, onset_step=1000,
                        gold_every=10, acc=0.9, drifted_acc=0.7, second_step=None,
                        second_acc=None):
    """Every annotator answers one item per step: a private gold item every ``gold_every``
    steps, otherwise a regular item shared with two others. Drifting annotators' accuracy falls
    from ``acc`` to ``drifted_acc`` at ``onset_step`` on every kind of item (and to
    ``second_acc`` at ``second_step``, when given)."""
    n_w = n_steady + n_drifting
    annotator, item, choice, gold_ok, calibration = [], [], [], [], []
    next_item = 0
    for t in range(steps):
        accuracy = np.full(n_w, acc)
        if t >= onset_step:
            accuracy[n_steady:] = drifted_acc
        if second_step is not None and t >= second_step:
            accuracy[n_steady:] = second_acc
        right = rng.random(n_w) < accuracy
        if t % gold_every == gold_every - 1:
            truth = rng.choice(4, size=n_w, p=PRIOR)
            items = next_item + np.arange(n_w)
            next_item += n_w
            is_gold = True
        else:
            order = rng.permutation(n_w)
            group = np.empty(n_w, np.int64)
            group[order] = np.arange(n_w) // 3
            truth = rng.choice(4, size=n_w // 3, p=PRIOR)[group]
            items = next_item + group
            next_item += n_w // 3
            is_gold = False
        answer = np.where(right, truth, (truth + rng.integers(1, 4, size=n_w)) % 4)
        annotator.append(np.arange(n_w))
        item.append(items)
        choice.append(answer)
        gold_ok.append(right.astype(float) if is_gold else np.full(n_w, np.nan))
        calibration.append(np.full(n_w, is_gold))
    frame = _frame(*(np.concatenate(c) for c in (annotator, item, choice, gold_ok, calibration)))
    return frame, n_w


def test_accuracy_drift_from_90_to_70_percent_is_caught_within_40_gold_items():
    """50 steady annotators and 10 whose accuracy falls from 90% to 70% after 100 gold items;
    a real Dawid-Skene fit scores the regular items. Using the peers' answers, the median delay
    is at most 20 gold items (17 when written, with the default GLR that learns each
    annotator's own level; the former CUSUM told p0 = 0.10 gave about 8) and far below gold
    errors alone; at most 2 of the 50 steady annotators raise any accuracy alarm (budget 1%
    over 500 gold items; these run 200)."""
    rng = np.random.default_rng(11)
    steps, onset_step, gold_every = 2000, 1000, 10
    frame, n_w = _simulated_campaign(rng, steps=steps, onset_step=onset_step,
                                     gold_every=gold_every)
    ds = fit_dawid_skene(frame, n_w)
    scans = drift_scan_frame(frame, n_w, ds=ds)

    def first_alarm_step(found, stream):
        steps_ = [alarm_row // n_w for _, _, alarm_row in found[stream]
                  if alarm_row // n_w >= onset_step]
        return min(steps_) if steps_ else steps

    def gold_items_between(start, end):  # gold items answered in steps start..end
        return sum(1 for t in range(start, end + 1) if t % gold_every == gold_every - 1)

    steady = scans[:50]
    false_alarms = sum(bool(s[STREAM_ACCURACY] or s[STREAM_GOLD_ERROR]) for s in steady)
    assert false_alarms <= 2
    delays = {stream: [gold_items_between(onset_step, first_alarm_step(s, stream))
                       for s in scans[50:]]
              for stream in (STREAM_ACCURACY, STREAM_GOLD_ERROR)}
    assert np.median(delays[STREAM_ACCURACY]) <= 20
    assert np.median(delays[STREAM_ACCURACY]) < np.median(delays[STREAM_GOLD_ERROR]) / 2
    # The onset estimate lands near the true change (within 5 gold items' worth of steps).
    onsets = [onset_row // n_w for s in scans[50:] for _, onset_row, alarm_row in
              s[STREAM_ACCURACY][:1] if alarm_row // n_w >= onset_step]
    assert np.median(np.abs(np.array(onsets) - onset_step)) <= 5 * gold_every


def test_without_a_dawid_skene_fit_the_scan_watches_gold_alone():
    rng = np.random.default_rng(2)
    frame, n_w = _simulated_campaign(rng, n_steady=6, n_drifting=0, steps=60)
    scans = drift_scan_frame(frame, n_w)
    assert all(STREAM_ACCURACY not in s and STREAM_GOLD_ERROR in s for s in scans)


def test_first_new_alarm_skips_the_episode_already_reported():
    def cp(onset, alarm):
        return ChangePoint(onset_index=onset, detected_index=alarm, statistic=12.0)

    points = [(cp(10, 30), 10, 30), (cp(31, 60), 31, 60)]
    assert first_new_alarm(points, reported_until=None) == points[0]
    # A rescan moved the first episode's onset a little: still the reported episode.
    assert first_new_alarm([(cp(12, 33), 12, 33), *points[1:]], reported_until=30) == points[1]
    assert first_new_alarm(points, reported_until=60) is None


@pytest.mark.django_db
def test_recomputes_raise_one_alert_per_drift_episode(cast):
    """The accuracy stream's evidence changes with every recompute (peers answer, the
    Dawid-Skene fit is redone), which moves onsets and alarms a little. Rescanning a growing
    campaign raises one alert per drifting annotator and stream. After an acknowledgement, a
    drift that persists at its new level raises nothing new (the detector's baseline is the
    annotator's own level, and the new level is a level, not a change); a second fall, which
    starts after the reported alarm, becomes a new alert."""
    from datetime import UTC, datetime, timedelta

    from annotation.models import DriftAlert
    from annotation.selectors.frame import CampaignFrame
    from annotation.services.quality import _drift_alerts_create, drift_alert_acknowledge
    from tests.factories import CampaignFactory, make_users

    rng = np.random.default_rng(5)
    frame, n_w = _simulated_campaign(rng, n_steady=10, n_drifting=5, steps=1600,
                                     onset_step=600, second_step=1200, second_acc=0.45)
    users = make_users(n_w, prefix="drift")
    campaign = CampaignFactory()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    created_at = [start + timedelta(seconds=i) for i in range(len(frame))]

    def recompute(steps: int) -> int:
        rows = np.arange(steps * n_w)
        part = frame.subset(rows)
        data = CampaignFrame(frame=part, annotator_ids=[u.pk for u in users],
                             judgment_ids=rows, created_at=created_at[:rows.size])
        return _drift_alerts_create(campaign=campaign, data=data, ds=fit_dawid_skene(part, n_w))

    for steps in (700, 800, 900, 1000, 1100):
        recompute(steps)
    drifting = {u.pk for u in users[10:]}
    accuracy = DriftAlert.objects.filter(campaign=campaign, stream=STREAM_ACCURACY)
    assert {a.annotator_id for a in accuracy} == drifting
    assert accuracy.count() == len(drifting)  # one per episode, not one per recompute

    reported = {a.annotator_id: a.detected_at for a in accuracy}
    for alert in DriftAlert.objects.filter(campaign=campaign):
        drift_alert_acknowledge(alert=alert, by=cast["admin"])
    recompute(1100)  # the drift persists at its new level: no new accuracy alert
    assert not DriftAlert.objects.filter(campaign=campaign, stream=STREAM_ACCURACY,
                                         acknowledged_at__isnull=True).exists()
    assert recompute(1600) > 0  # the second fall, from step 1200
    new = DriftAlert.objects.filter(campaign=campaign, stream=STREAM_ACCURACY,
                                    acknowledged_at__isnull=True)
    assert {a.annotator_id for a in new} == drifting
    assert all(alert.onset_at > reported[alert.annotator_id] for alert in new)
