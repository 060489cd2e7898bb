"""Judgments: idempotent by key (also concurrently), append-only, corrections supersede."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from annotation.errors import ApplicationError
from annotation.models import Judgment
from annotation.selectors import judgment_list
from annotation.services import (
    assignment_issue_next,
    choice_from_screen,
    judgment_submit,
    judgment_supersede,
)
from tests.factories import CampaignFactory, ComparisonFactory, make_users


def _issue(n_users=1, criteria=None):
    campaign = CampaignFactory(overlap=2, criteria=criteria or [])
    ComparisonFactory.create_batch(2, campaign=campaign)
    users = make_users(n_users)
    return campaign, users, assignment_issue_next(campaign=campaign, annotator=users[0])


def _submit(a, user, key="k-1", **kw):
    args = {"choice": "A", "strength": 2, "seconds_spent": 3.5}
    args.update(kw)
    return judgment_submit(assignment=a, annotator=user, idempotency_key=key, **args)


@pytest.mark.django_db
def test_same_key_twice_returns_the_first_judgment():
    _, (user,), a = _issue()
    first = _submit(a, user)
    again = _submit(a, user, choice="B")
    assert again.pk == first.pk and again.choice == "A"
    assert Judgment.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_same_key_submitted_concurrently_gives_one_judgment():
    _, (user,), a = _issue()
    results, errors = [], []
    barrier = threading.Barrier(8)

    def submit():
        try:
            barrier.wait()
            results.append(_submit(a, user, key="same-key").pk)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(set(results)) == 1 and len(results) == 8
    assert Judgment.objects.filter(idempotency_key="same-key").count() == 1


@pytest.mark.django_db
def test_a_second_key_on_an_answered_assignment_is_refused():
    _, (user,), a = _issue()
    _submit(a, user)
    with pytest.raises(ApplicationError, match="correction"):
        _submit(a, user, key="k-2")


@pytest.mark.django_db
def test_someone_elses_assignment_is_refused():
    _, (owner, other), a = _issue(n_users=2)
    with pytest.raises(ApplicationError, match="not yours"):
        _submit(a, other)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"choice": "C"}, "Unknown choice"),
        ({"strength": None}, "strong"),
        ({"strength": 7}, "strong"),
        ({"seconds_spent": -1}, "seconds"),
        ({"criteria_choices": {"honesty": "A"}}, "Unknown criteria"),
        ({"criteria_choices": {"helpfulness": "left"}}, "criterion"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(kw, message):
    _, (user,), a = _issue(criteria=["helpfulness"])
    with pytest.raises(ApplicationError, match=message):
        _submit(a, user, **kw)
    assert Judgment.objects.count() == 0
    a.refresh_from_db()
    assert a.status == "pending"


@pytest.mark.django_db
def test_tie_and_both_bad_carry_no_strength_and_are_distinct():
    campaign, (user,), a = _issue()
    tie = _submit(a, user, choice="tie", strength=3)
    assert tie.strength is None and tie.choice == "tie"
    b = assignment_issue_next(campaign=campaign, annotator=user)
    bad = _submit(b, user, key="k-bad", choice="both_bad", strength=None)
    assert bad.choice == "both_bad"


@pytest.mark.django_db
def test_judgments_cannot_be_updated_or_deleted():
    _, (user,), a = _issue()
    j = _submit(a, user)
    j.choice = "B"
    with pytest.raises(ValidationError):
        j.save()
    with pytest.raises(ValidationError):
        j.delete()
    assert Judgment.objects.get(pk=j.pk).choice == "A"


@pytest.mark.django_db
def test_correction_supersedes_and_only_the_latest_counts():
    campaign, (user,), a = _issue()
    first = _submit(a, user)
    fix = judgment_supersede(judgment=first, annotator=user, choice="B", strength=3,
                             idempotency_key="fix-1", seconds_spent=2.0)
    fix2 = judgment_supersede(judgment=first, annotator=user, choice="tie", strength=None,
                              idempotency_key="fix-2", seconds_spent=2.0)
    assert fix.supersedes_id == first.pk and fix2.supersedes_id == fix.pk
    assert Judgment.objects.get(pk=first.pk).choice == "A"  # the original stays
    current = list(judgment_list(campaign=campaign))
    assert [j.pk for j in current] == [fix2.pk]


@pytest.mark.parametrize(
    ("screen", "a_on_left", "canonical"),
    [("left", True, "A"), ("left", False, "B"), ("right", True, "B"), ("right", False, "A"),
     ("tie", False, "tie"), ("both_bad", True, "both_bad")],
)
def test_screen_choice_maps_to_canonical_order(screen, a_on_left, canonical):
    assert choice_from_screen(screen, a_on_left=a_on_left) == canonical
