"""Preference calibration items: known answers with tolerance, degraded pairs, swapped
re-shows, transitivity closers; the per-submit gold tally, auto-pause and adaptive redundancy."""

from __future__ import annotations

import random

import pytest

from annotation import calibration, importers
from annotation.errors import ApplicationError
from annotation.models import AnnotatorProfile, AnnotatorQuality, Comparison
from annotation.services import assignment_issue_next, comparisons_import, judgment_submit
from annotation.services.calibration import calibration_degraded_create
from annotation.services.quality import (
    annotator_unpause,
    campaign_quality_recompute,
    comparison_redundancy_adapt,
)
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users


def _answer(a, user, choice="A", key=None):
    return judgment_submit(assignment=a, annotator=user, choice=choice,
                           strength=2 if choice in ("A", "B") else None,
                           idempotency_key=key or str(a.token), seconds_spent=1.0)


def test_degrade_transforms():
    rng = random.Random(0)
    text = "First add 12 and 30. The sum of these numbers is 42, which is the answer."
    assert len(calibration.degrade_truncate(text).split()) < len(text.split())
    wrong = calibration.degrade_wrong_number(text, rng)
    assert "42" not in wrong and wrong.startswith("First add 12 and 30.")
    with pytest.raises(calibration.TransformError):
        calibration.degrade_wrong_number("no digits here", rng)
    assert calibration.degrade(text, "unrelated", rng=rng, unrelated_pool=["Paris."]) == "Paris."


def test_wrong_number_keeps_the_width_and_unrelated_answers_match_the_length():
    """Degraded replies are length-matched where the transform allows (issue 6.3)."""
    rng = random.Random(1)
    for text in ("The answer is 9.", "So 37 + 48 = 85.", "It comes to 100 in all.",
                 "Total: 1260", "Roughly 3.5 kg.", "It is 0."):
        for _ in range(20):
            wrong = calibration.degrade_wrong_number(text, rng)
            assert wrong != text and len(wrong) == len(text), (text, wrong)
    pool = [f"Reply {'x' * n}." for n in range(1, 400, 7)]
    ratios = []
    for n in range(20, 300, 5):
        text = "y" * n
        ratios.append(len(calibration.degrade(text, "unrelated", rng=rng,
                                              unrelated_pool=pool)) / n)
    assert sum(ratios) / len(ratios) == pytest.approx(1.0, abs=0.05)
    assert max(abs(r - 1) for r in ratios) <= calibration.UNRELATED_LENGTH_TOLERANCE
    # Nothing close in length: the nearest few, not an arbitrary one.
    assert calibration.pick_unrelated("z" * 100, ["a", "bb" * 20, "c" * 500], rng) != "a"


def test_tolerance_and_consistency_scoring():
    assert calibration.gold_correct("tie", gold_choice="A", gold_accepts=["A", "tie"])
    assert not calibration.gold_correct("B", gold_choice="A", gold_accepts=["A", "tie"])
    assert calibration.gold_correct("A", gold_choice="A", gold_accepts=[])
    assert calibration.reshow_consistent("B", "A") and not calibration.reshow_consistent("A", "A")
    assert calibration.transitive(1, 1, 1) and not calibration.transitive(1, 1, -1)


@pytest.mark.django_db
def test_known_answer_with_tolerance_imports_and_scores():
    campaign = CampaignFactory(overlap=1, calibration_rate=1.0)
    rows = importers.parse_text(
        '{"prompt": "2+2?", "responses": ["4", "4, I think, after some thought"],'
        ' "gold": "A", "accepts": ["A", "tie"]}\n{"prompt": "q", "responses": ["x", "y"]}\n',
        fmt="jsonl", max_rows=10,
    )
    comparisons_import(campaign=campaign, rows=rows)
    gold = Comparison.objects.get(kind="calibration")
    assert gold.gold_accepts == ["A", "tie"] and gold.calibration_type == "known_answer"
    (user,) = make_users(1)
    a = assignment_issue_next(campaign=campaign, annotator=user)
    assert a.comparison_id == gold.pk
    _answer(a, user, choice="tie")
    q = AnnotatorQuality.objects.get(annotator=user)
    assert (q.n_gold, q.gold_accuracy) == (1, 1.0)


@pytest.mark.django_db
def test_degraded_pair_puts_the_good_response_on_the_gold_side():
    campaign = CampaignFactory()
    source = ComparisonFactory(campaign=campaign,
                               response_a__text="The answer is 42 because 40 plus 2 is 42.")
    for seed in range(4):
        item = calibration_degraded_create(comparison=source, transform="wrong_number",
                                           rng=random.Random(seed))
        good = item.response_a if item.gold_choice == "A" else item.response_b
        worse = item.response_b if item.gold_choice == "A" else item.response_a
        assert good.pk == source.response_a_id and "42" not in worse.text.split()[-1]
        assert item.kind == "calibration" and item.calibration_type == "degraded"
    with pytest.raises(ApplicationError, match="truncate"):
        short = ComparisonFactory(campaign=campaign, response_a__text="Too short.")
        calibration_degraded_create(comparison=short, transform="truncate")


@pytest.mark.django_db
def test_swapped_reshow_goes_to_the_author_alone_with_sides_swapped():
    campaign = CampaignFactory(overlap=2, reshow_rate=1.0, calibration_rate=0.0)
    ComparisonFactory.create_batch(3, campaign=campaign)
    author, other = make_users(2)
    first = assignment_issue_next(campaign=campaign, annotator=author)
    _answer(first, author, choice="A")
    reshow = Comparison.objects.get(calibration_type="swapped_reshow")
    original = first.comparison
    assert (reshow.response_a_id, reshow.response_b_id) == (original.response_b_id,
                                                            original.response_a_id)
    assert reshow.for_annotator_id == author.pk and reshow.gold_choice is None
    campaign.calibration_rate = 1.0
    campaign.save(update_fields=["calibration_rate"])
    # Someone else never gets it; the author does, with the original's left text on the right.
    got = assignment_issue_next(campaign=campaign, annotator=other)
    assert got.comparison_id != reshow.pk
    again = assignment_issue_next(campaign=campaign, annotator=author)
    assert again.comparison_id == reshow.pk
    original_left = original.response_a if first.a_on_left else original.response_b
    shown_left = reshow.response_a if again.a_on_left else reshow.response_b
    assert shown_left.pk != original_left.pk


@pytest.mark.django_db
def test_transitivity_closer_is_made_when_the_closing_pair_is_missing():
    campaign = CampaignFactory(overlap=1, reshow_rate=0.0)
    x = ComparisonFactory(campaign=campaign)
    prompt = x.prompt
    z = ComparisonFactory(campaign=campaign, prompt=prompt, response_a=x.response_b)
    (user,) = make_users(1)
    # x: A(=X) beats B(=Y); z: A(=Y) beats B(=Z)  =>  X > Y > Z, and X vs Z was never imported.
    a1 = assignment_issue_next(campaign=campaign, annotator=user)
    _answer(a1, user, choice="A")
    a2 = assignment_issue_next(campaign=campaign, annotator=user)
    _answer(a2, user, choice="A")
    assert not Comparison.objects.filter(calibration_type="transitivity").exists()
    campaign_quality_recompute(campaign=campaign)  # closers are made off the request path
    closer = Comparison.objects.get(calibration_type="transitivity")
    assert (closer.response_a_id, closer.response_b_id) == (x.response_a_id, z.response_b_id)
    assert closer.for_annotator_id == user.pk


@pytest.mark.django_db
def test_gold_failures_pause_the_annotator_and_unpause_needs_new_evidence():
    campaign = CampaignFactory(overlap=1, calibration_rate=1.0, accuracy_threshold=0.7)
    ComparisonFactory.create_batch(40, campaign=campaign)
    CalibrationFactory.create_batch(30, campaign=campaign, gold_choice="A")
    user, admin = make_users(2)
    for _ in range(10):  # always wrong on gold; 0/10 has a Wilson upper bound of 0.28
        a = assignment_issue_next(campaign=campaign, annotator=user)
        _answer(a, user, choice="B")
    profile = AnnotatorProfile.objects.get(user=user)
    assert profile.status == "paused" and "below 70%" in profile.paused_reason
    with pytest.raises(ApplicationError, match="paused"):
        assignment_issue_next(campaign=campaign, annotator=user)
    annotator_unpause(campaign=campaign, annotator=user, by=admin)
    for _ in range(5):  # not yet enough new gold to pause again
        _answer(assignment_issue_next(campaign=campaign, annotator=user), user, choice="B")
    assert AnnotatorProfile.objects.get(user=user).status == "active"


@pytest.mark.django_db
def test_disagreement_asks_for_more_raters_up_to_the_cap():
    campaign = CampaignFactory(overlap=2, redundancy_cap=4, reshow_rate=0.0)
    comparison = ComparisonFactory(campaign=campaign)
    users = make_users(5)
    for user, choice in zip(users[:2], ["A", "B"], strict=True):
        _answer(assignment_issue_next(campaign=campaign, annotator=user), user, choice=choice)
    comparison.refresh_from_db()
    assert comparison.target_overlap == 3 and not comparison.is_full
    _answer(assignment_issue_next(campaign=campaign, annotator=users[2]), users[2], "tie")
    comparison.refresh_from_db()
    assert comparison.target_overlap == 4
    _answer(assignment_issue_next(campaign=campaign, annotator=users[3]), users[3], "A")
    comparison.refresh_from_db()
    assert comparison.target_overlap == 4 and comparison.is_full  # the cap holds
    assert assignment_issue_next(campaign=campaign, annotator=users[4]) is None
    assert not comparison_redundancy_adapt(comparison=comparison, campaign=campaign)
