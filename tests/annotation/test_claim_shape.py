"""A draw runs the same SQL whether it issues a calibration item or a regular one (issue 6.2).

Timing told gold items apart when a calibration draw ran one more query and loaded candidate ids.
These tests capture the statements of each draw, replace literals by placeholders, and require
one sequence for every kind of draw: regular, shared calibration, and a swapped re-show.
"""

from __future__ import annotations

import random
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from annotation.models import Assignment, Comparison
from annotation.services import assignment_issue_next, judgment_submit
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users

_LITERALS = [
    (re.compile(r"'(?:[^']|'')*'(?:::\w+)?"), "?"),  # strings, timestamps, uuids (+ a cast)
    (re.compile(r"\b\d+(?:\.\d+)?\b"), "?"),  # numbers
    (re.compile(r'"s\w+_x\w+"|\bs\w+_x\w+\b'), "SAVEPOINT_ID"),  # Django's savepoint names
    (re.compile(r"\b(true|false)\b", re.I), "?"),
    (re.compile(r"\?(?:\s*,\s*\?)+"), "?"),  # IN (?, ?, ...) of any length
]


def normalise(sql: str) -> str:
    """The statement's shape: every literal (string, number, boolean, list) becomes ``?``."""
    for pattern, placeholder in _LITERALS:
        sql = pattern.sub(placeholder, sql)
    return " ".join(sql.split())


def _answer(assignment, user) -> None:
    judgment_submit(assignment=assignment, annotator=user, choice="A", strength=2,
                    idempotency_key=str(assignment.token), seconds_spent=1.0)


def _kind_of(assignment) -> str:
    comparison = Comparison.objects.get(pk=assignment.comparison_id)
    return comparison.calibration_type or comparison.kind


def _draw_shapes(draw, users, *, rounds: int) -> dict[str, set[tuple[str, ...]]]:
    """Draw ``rounds`` items per user through ``draw``, answering each; shapes by item kind."""
    shapes: dict[str, set[tuple[str, ...]]] = {}
    for _ in range(rounds):
        for user in users:
            with CaptureQueriesContext(connection) as captured:
                assignment = draw(user)
            assert assignment is not None
            shape = tuple(normalise(q["sql"]) for q in captured.captured_queries)
            shapes.setdefault(_kind_of(assignment), set()).add(shape)
            _answer(assignment, user)
    return shapes


@pytest.fixture
def mixed_campaign(db):
    # reshow_rate 1.0: every decisive regular answer schedules a swapped re-show for its author,
    # which the next calibration draw issues first (the third kind of draw compared here).
    campaign = CampaignFactory(overlap=3, calibration_rate=0.5, reshow_rate=1.0)
    ComparisonFactory.create_batch(80, campaign=campaign)
    CalibrationFactory.create_batch(40, campaign=campaign)
    return campaign


def test_every_draw_runs_the_same_statements_whatever_it_issues(mixed_campaign):
    """Regular, shared calibration and re-show draws run one normalised statement sequence."""
    users = make_users(3)
    rng = random.Random(5)
    shapes = _draw_shapes(
        lambda user: assignment_issue_next(campaign=mixed_campaign, annotator=user, rng=rng),
        users, rounds=12,
    )
    assert {"regular", "calibration", "swapped_reshow"} <= set(shapes), shapes.keys()
    every = set().union(*shapes.values())
    assert len(every) == 1, "\n\n".join("\n".join(s) for s in every)
    (sequence,) = every
    # The annotator lock, the live re-check, then (a) claim (b) pick (c) update (d) insert.
    verbs = [s.split()[0] for s in sequence if not s.startswith(("SAVEPOINT", "RELEASE"))]
    assert verbs == ["SELECT", "SELECT", "SELECT", "SELECT", "SELECT", "UPDATE", "INSERT"]
    if connection.vendor == "postgresql":  # SQLite has no row locks: BEGIN IMMEDIATE instead
        assert sum("FOR NO KEY UPDATE OF" in s for s in sequence) == 1  # the annotator lock
        assert sum("SKIP LOCKED" in s for s in sequence) == 1  # the regular claim


def test_next_api_answers_with_the_same_statements_for_gold_and_regular(mixed_campaign):
    """The whole POST /api/campaigns/<id>/next/ request, auth and rendering included."""
    # The server draws with its own randomness; without re-shows (which calibration draws issue
    # first) about half of the 24 draws issue shared gold items, none failing ~1e-7 of runs.
    mixed_campaign.reshow_rate = 0.0
    mixed_campaign.save(update_fields=["reshow_rate"])
    users = make_users(2, prefix="api")
    clients = {}
    for user in users:
        clients[user.pk] = Client(
            HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}"
        )

    def draw(user):
        response = clients[user.pk].post(f"/api/campaigns/{mixed_campaign.pk}/next/")
        assert response.status_code == 200, response.content
        return Assignment.objects.get(token=response.json()["token"])

    shapes = _draw_shapes(draw, users, rounds=12)
    assert {"regular", "calibration"} <= set(shapes), shapes.keys()
    every = set().union(*shapes.values())
    assert len(every) == 1, "\n\n".join("\n".join(s) for s in every)


def test_normalise_keeps_the_shape_and_drops_the_values():
    a = normalise("SELECT x FROM t WHERE id = 12 AND k IN ('a', 'b') AND t > '2026-01-01'::"
                  "timestamptz LIMIT 1")
    b = normalise("SELECT x FROM t WHERE id = 7 AND k IN ('c') AND t > '2027-02-02'::"
                  "timestamptz LIMIT 1")
    assert a == b == "SELECT x FROM t WHERE id = ? AND k IN (?) AND t > ? LIMIT ?"
    assert normalise("SELECT 1 FROM t WHERE id = 1") != normalise("SELECT 1 FROM u WHERE id = 1")
