"""Submit through the API: every state conflict has its own status, and nothing is recorded.

Keys are per annotator: a key replays its own answer (200), conflicts on another comparison
(409), and says nothing about other annotators' keys.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone

from annotation.models import AnnotatorProfile, Assignment, Judgment
from annotation.services import assignment_issue_next, assignment_skip
from tests.factories import CampaignFactory, ComparisonFactory, make_users


@pytest.fixture
def world(db):
    campaign = CampaignFactory(overlap=2)
    ComparisonFactory.create_batch(4, campaign=campaign)
    alice, bob = make_users(2)
    return campaign, alice, bob


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _submit(client, assignment, key, choice="left"):
    return client.post("/api/judgments/", {
        "token": str(assignment.token), "choice": choice, "strength": 2,
        "idempotency_key": key, "seconds_spent": 3.0,
    }, content_type="application/json")


def test_same_key_same_item_replays_with_200(world):
    campaign, alice, _ = world
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    first = _submit(_client(alice), a, "k1")
    again = _submit(_client(alice), a, "k1", choice="right")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Judgment.objects.get().choice in ("A", "B")
    assert Judgment.objects.count() == 1


def test_key_reused_on_another_item_is_a_conflict_and_records_nothing(world):
    campaign, alice, _ = world
    client = _client(alice)
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    assert _submit(client, a, "k1").status_code == 201
    b = assignment_issue_next(campaign=campaign, annotator=alice)
    reused = _submit(client, b, "k1")
    assert reused.status_code == 409 and reused.json()["field"] == "idempotency_key"
    b.refresh_from_db()
    assert b.status == Assignment.Status.PENDING
    assert Judgment.objects.filter(assignment=b).count() == 0


def test_another_annotators_key_is_neither_revealed_nor_squatted(world):
    campaign, alice, bob = world
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    b = assignment_issue_next(campaign=campaign, annotator=bob)
    assert _submit(_client(alice), a, "shared-key").status_code == 201
    answer = _submit(_client(bob), b, "shared-key")
    assert answer.status_code == 201
    assert Judgment.objects.filter(idempotency_key="shared-key").count() == 2


def test_paused_annotator_cannot_submit_the_item_they_hold(world):
    campaign, alice, _ = world
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    AnnotatorProfile.objects.filter(user=alice).update(status=AnnotatorProfile.Status.PAUSED)
    answer = _submit(_client(alice), a, "k1")
    assert answer.status_code == 403 and "paused" in answer.json()["detail"]
    assert not Judgment.objects.exists()


def test_closed_campaign_takes_no_judgment(world):
    campaign, alice, _ = world
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    campaign.is_active = False
    campaign.save(update_fields=["is_active"])
    answer = _submit(_client(alice), a, "k1")
    assert answer.status_code == 409 and "closed" in answer.json()["detail"]
    assert not Judgment.objects.exists()


def test_expired_but_unreclaimed_assignment_is_gone(world):
    campaign, alice, _ = world
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    Assignment.objects.filter(pk=a.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    answer = _submit(_client(alice), a, "k1")
    assert answer.status_code == 410 and answer.json()["field"] == "token"
    assert not Judgment.objects.exists()


def test_skipped_assignment_is_gone_and_answered_one_conflicts(world):
    campaign, alice, _ = world
    client = _client(alice)
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    assignment_skip(assignment=a, annotator=alice, reason="unclear")
    assert _submit(client, a, "k1").status_code == 410
    b = assignment_issue_next(campaign=campaign, annotator=alice)
    assert _submit(client, b, "k2").status_code == 201
    assert _submit(client, b, "k3").status_code == 409
    assert Judgment.objects.count() == 1


def test_someone_elses_token_is_not_found(world):
    campaign, alice, bob = world
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    answer = _submit(_client(bob), a, "k1")
    assert answer.status_code == 404 and answer.json()["field"] == "token"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
def test_judgments_are_append_only_in_the_database(world):
    campaign, alice, _ = world
    a = assignment_issue_next(campaign=campaign, annotator=alice)
    assert _submit(_client(alice), a, "k1").status_code == 201
    judgment = Judgment.objects.get()
    for attempt in (lambda: Judgment.objects.filter(pk=judgment.pk).update(choice="tie"),
                    lambda: Judgment.objects.filter(pk=judgment.pk)._raw_delete("default")):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    judgment.refresh_from_db()
    assert judgment.choice in ("A", "B")
