"""The annotator page's pause, skip undo and batch notice, through HTTP on PostgreSQL (issue 10,
points 6 and 7): a paused annotator is told only that, with why and what comes next; a skip can
be given back while it is the latest and recent, with claim counts as if it never happened, and
an undo that can no longer be done is refused with a message and changes nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation.errors import ConflictError, ForbiddenError
from annotation.models import AnnotatorProfile, Assignment, Comparison
from annotation.selectors import PROGRESS_BATCH, SKIP_UNDO_SECONDS
from annotation.services import (
    assignment_issue_next,
    assignment_skip,
    assignment_skip_undo,
    judgment_submit,
)
from tests.factories import CalibrationFactory, CampaignFactory, ComparisonFactory, make_users

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
REASON = "Gold accuracy in demo is below 70% with 95% confidence."


def _token(html: str) -> str:
    return re.search(r'name="token" value="([0-9a-f-]{36})"', html).group(1)


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def rater(cast):
    return _client(cast["annotator"]), cast["annotator"]


def _pause(user, reason: str = REASON) -> None:
    AnnotatorProfile.objects.filter(user=user).update(
        status=AnnotatorProfile.Status.PAUSED, paused_reason=reason)


def _counts(*comparisons: Comparison) -> list[tuple[int, bool]]:
    return [Comparison.objects.values_list("claimed_count", "is_full").get(pk=c.pk)
            for c in comparisons]


def _state() -> list[tuple]:
    """Every assignment and comparison counter, to show that a refused undo changed nothing."""
    return (list(Assignment.objects.order_by("id").values_list(
                "id", "comparison_id", "status", "skip_reason", "finished_at", "expires_at"))
            + list(Comparison.objects.order_by("id").values_list(
                "id", "claimed_count", "is_full")))


# --- pause ------------------------------------------------------------------------------------

def test_paused_annotator_sees_only_the_pause_with_why_and_what_next(rater):
    client, user = rater
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(2, campaign=campaign)
    token = _token(client.post(f"/annotate/{campaign.pk}/start/", **HTMX).content.decode())
    _pause(user)

    for resp in (client.get(f"/annotate/{campaign.pk}/"),
                 client.post(f"/annotate/{campaign.pk}/start/", **HTMX),
                 client.post(f"/annotate/{campaign.pk}/submit/",
                             {"token": token, "idempotency_key": token, "choice": "tie"},
                             **HTMX),
                 # A plain post too (a tab opened before the pause, or no JavaScript).
                 client.post(f"/annotate/{campaign.pk}/start/")):
        html = resp.content.decode()
        assert resp.status_code == 200
        assert 'id="paused"' in html and "Your rating is paused" in html
        assert REASON in html
        assert "an admin reviews your work and can un-pause you" in html
        assert "every judgment you have made is kept" in html
        # Nothing else: no item, no Start, no "no work left", no error, no progress bar.
        for absent in ("No work left", "Thank you", 'id="start-form"', 'name="token"',
                       'class="error"', "<progress", 'id="instructions"'):
            assert absent not in html, absent
    # The held item stays unanswered; nothing more was claimed.
    assert list(Assignment.objects.values_list("token", "status")) == [
        (Assignment.objects.get().token, Assignment.Status.PENDING)]
    assert str(Assignment.objects.get().token) == token


def test_campaign_list_and_my_work_say_the_annotator_is_paused(rater):
    client, user = rater
    campaign = CampaignFactory(title="Pause campaign")
    ComparisonFactory(campaign=campaign)
    index = client.get("/annotate/").content.decode()
    assert "Your rating is paused" not in index and "Pause campaign" in index
    _pause(user, reason="")

    index = client.get("/annotate/").content.decode()
    assert "Your rating is paused" in index and "An admin paused your account." in index
    assert f'href="/annotate/{campaign.pk}/"' not in index
    mine = client.get(reverse("my-quality")).content.decode()
    assert "Your rating is paused" in mine and "every judgment you have made is kept" in mine


# --- skip and undo ----------------------------------------------------------------------------

@pytest.fixture
def skipped(rater):
    """One annotator, overlap 1, three comparisons: the first claimed, skipped, the second
    issued in its place (the htmx response to the skip)."""
    client, user = rater
    campaign = CampaignFactory(overlap=1)
    first, second, third = ComparisonFactory.create_batch(3, campaign=campaign)
    token = _token(client.post(f"/annotate/{campaign.pk}/start/", **HTMX).content.decode())
    assert Assignment.objects.get(token=token).comparison == first
    resp = client.post(f"/annotate/{campaign.pk}/skip/",
                       {"token": token, "reason": "offensive content"}, **HTMX)
    return client, user, campaign, (first, second, third), token, resp


def test_skip_shows_a_notice_with_the_reason_and_an_undo(skipped):
    client, _, campaign, (first, second, _third), token, resp = skipped
    html = resp.content.decode()
    assert resp.status_code == 200
    assert 'id="skip-notice"' in html and "Skipped (Offensive content)" in html
    assert f'name="skipped_token" value="{token}"' in html and "Undo <kbd>u</kbd>" in html
    assert _token(html) != token  # the next item is shown under the notice
    assert _counts(first, second) == [(0, False), (1, True)]
    # A reload shows the same notice (it is read from the database, not carried in the page).
    assert "Skipped (Offensive content)" in client.get(f"/annotate/{campaign.pk}/").content.decode()


def test_undo_gives_the_skipped_item_back_and_releases_the_one_shown_instead(skipped):
    client, user, campaign, (first, second, third), token, resp = skipped
    replacement = _token(resp.content.decode())
    resp = client.post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": token}, **HTMX)
    html = resp.content.decode()
    assert resp.status_code == 200 and _token(html) == token
    assert 'id="skip-notice"' not in html and 'class="error"' not in html

    restored = Assignment.objects.get(token=token)
    assert restored.status == Assignment.Status.PENDING
    assert (restored.skip_reason, restored.finished_at) == ("", None)
    assert restored.expires_at > timezone.now()
    # The item shown instead went back to the pool: no row left for it, its place free again.
    assert not Assignment.objects.filter(token=replacement).exists()
    assert _counts(first, second, third) == [(1, True), (0, False), (0, False)]
    assert _token(client.get(f"/annotate/{campaign.pk}/").content.decode()) == token

    # Answering it then goes on as usual, and the released item can come to this annotator.
    client.post(f"/annotate/{campaign.pk}/submit/",
                {"token": token, "idempotency_key": token, "choice": "tie"}, **HTMX)
    assert Assignment.objects.get(token=token).status == Assignment.Status.COMPLETED
    assert Assignment.objects.get(status=Assignment.Status.PENDING).comparison == second
    assert _counts(first, second, third) == [(1, True), (1, True), (0, False)]


def test_plain_undo_post_redirects_to_the_page_showing_the_item(skipped):
    client, _, campaign, _, token, _ = skipped
    resp = client.post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": token})
    assert resp.status_code == 302 and resp["Location"] == f"/annotate/{campaign.pk}/"
    assert _token(client.get(resp["Location"]).content.decode()) == token


def test_undo_too_late_is_refused_with_a_message_and_changes_nothing(skipped):
    client, _, campaign, _, token, _ = skipped
    Assignment.objects.filter(token=token).update(
        finished_at=timezone.now() - timedelta(seconds=SKIP_UNDO_SECONDS + 1))
    before = _state()
    html = client.get(f"/annotate/{campaign.pk}/").content.decode()
    assert 'id="skip-notice"' not in html  # no longer offered
    resp = client.post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": token})
    assert resp.status_code == 400 and "Too late to undo this skip" in resp.content.decode()
    resp = client.post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": token}, **HTMX)
    assert resp.status_code == 200 and "Too late to undo this skip" in resp.content.decode()
    assert _state() == before


def test_undo_of_someone_elses_skip_is_refused(skipped, cast):
    _, _, campaign, _, token, _ = skipped
    (other,) = make_users(1, prefix="intruder")
    before = _state()
    resp = _client(other).post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": token})
    assert resp.status_code == 400 and "not yours" in resp.content.decode()
    assert _state() == before
    with pytest.raises(ForbiddenError):
        assignment_skip_undo(assignment=Assignment.objects.get(token=token), annotator=other)
    assert _state() == before


def test_undo_with_nothing_to_undo_is_refused(skipped):
    client, user, campaign, _, token, resp = skipped
    replacement = _token(resp.content.decode())
    before = _state()
    # The token of an item that was not skipped.
    resp = client.post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": replacement})
    assert resp.status_code == 400 and "no skip to undo" in resp.content.decode()
    # No token, or not a token: the field is named.
    for data in ({}, {"skipped_token": "not-a-uuid"}):
        resp = client.post(f"/annotate/{campaign.pk}/skip/undo/", data)
        assert resp.status_code == 400 and "skipped_token" in resp.content.decode()
    assert _state() == before
    # Once the next item is answered, the skip is no longer the latest: too late for it.
    client.post(f"/annotate/{campaign.pk}/submit/",
                {"token": replacement, "idempotency_key": replacement, "choice": "tie"}, **HTMX)
    before = _state()
    html = client.get(f"/annotate/{campaign.pk}/").content.decode()
    assert 'id="skip-notice"' not in html
    resp = client.post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": token})
    assert resp.status_code == 400 and "Only your most recent skip" in resp.content.decode()
    assert _state() == before


def test_undo_is_refused_when_others_took_the_freed_place(skipped):
    client, _, campaign, (first, *_), token, _ = skipped
    (other,) = make_users(1, prefix="taker")
    taken = assignment_issue_next(campaign=campaign, annotator=other)
    assert taken.comparison == first and _counts(first) == [(1, True)]
    before = _state()
    resp = client.post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": token})
    assert resp.status_code == 400 and "Other annotators have taken" in resp.content.decode()
    assert _state() == before


def test_undo_refused_for_a_paused_annotator_or_a_closed_campaign(skipped):
    _, user, campaign, _, token, _ = skipped
    before = _state()
    campaign.is_active = False
    campaign.save(update_fields=["is_active"])
    with pytest.raises(ConflictError, match="closed"):
        assignment_skip_undo(assignment=Assignment.objects.get(token=token), annotator=user)
    campaign.is_active = True
    campaign.save(update_fields=["is_active"])
    _pause(user)
    with pytest.raises(ForbiddenError, match="paused"):
        assignment_skip_undo(assignment=Assignment.objects.get(token=token), annotator=user)
    assert _state() == before


def test_undo_of_a_calibration_skip_moves_no_regular_claim():
    """A gold item carries no claim: undoing its skip only releases the item shown instead."""
    campaign = CampaignFactory(overlap=1, calibration_rate=0.0)
    (user,) = make_users(1, prefix="gold")
    regular = ComparisonFactory(campaign=campaign)
    gold = CalibrationFactory(campaign=campaign)
    # The gold item as the live one, as a calibration draw would have issued it.
    now = timezone.now()
    held = Assignment.objects.create(campaign=campaign, comparison=gold, annotator=user,
                                     a_on_left=True, issued_at=now,
                                     expires_at=now + timedelta(hours=1))
    assignment_skip(assignment=held, annotator=user, reason="broken item")
    shown = assignment_issue_next(campaign=campaign, annotator=user)
    assert shown.comparison == regular and _counts(regular) == [(1, True)]
    assignment_skip_undo(assignment=held, annotator=user)
    held.refresh_from_db()
    assert held.status == Assignment.Status.PENDING
    assert not Assignment.objects.filter(pk=shown.pk).exists()
    assert _counts(regular, gold) == [(0, False), (0, False)]


# --- batch notice -----------------------------------------------------------------------------

def test_a_finished_batch_is_said_instead_of_wrapping_to_zero(rater):
    client, user = rater
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(PROGRESS_BATCH + 2, campaign=campaign)
    for _ in range(PROGRESS_BATCH - 1):
        a = assignment_issue_next(campaign=campaign, annotator=user)
        judgment_submit(assignment=a, annotator=user, choice="tie", strength=None,
                        idempotency_key=str(a.token), seconds_spent=1.0)
    html = client.get(f"/annotate/{campaign.pk}/").content.decode()
    assert f"batch {PROGRESS_BATCH - 1}/{PROGRESS_BATCH}" in html and "Batch 1 done" not in html

    token = _token(client.post(f"/annotate/{campaign.pk}/start/", **HTMX).content.decode())
    html = client.post(f"/annotate/{campaign.pk}/submit/",
                       {"token": token, "idempotency_key": token, "choice": "tie"},
                       **HTMX).content.decode()
    assert "Batch 1 done: 25 judgments. Take a break or go on." in html
    assert f"{PROGRESS_BATCH} done · batch 1 done" in html
    assert f'value="{PROGRESS_BATCH}"' in html  # the bar full, not empty
    assert "batch 0/" not in html

    token = _token(html)
    html = client.post(f"/annotate/{campaign.pk}/submit/",
                       {"token": token, "idempotency_key": token, "choice": "tie"},
                       **HTMX).content.decode()
    assert "Batch 1 done" not in html and f"batch 1/{PROGRESS_BATCH}" in html


def test_undo_after_no_work_left_brings_the_only_item_back(rater):
    client, _ = rater
    campaign = CampaignFactory(overlap=1)
    only = ComparisonFactory(campaign=campaign)
    token = _token(client.post(f"/annotate/{campaign.pk}/start/", **HTMX).content.decode())
    html = client.post(f"/annotate/{campaign.pk}/skip/", {"token": token, "reason": "other"},
                       **HTMX).content.decode()
    assert "No work left" in html and "Skipped (Other)" in html
    assert _counts(only) == [(0, False)]
    html = client.post(f"/annotate/{campaign.pk}/skip/undo/", {"skipped_token": token},
                       **HTMX).content.decode()
    assert _token(html) == token and "No work left" not in html
    assert _counts(only) == [(1, True)]


def test_the_api_undoes_the_latest_skip_and_next_returns_it(skipped):
    """``POST /api/assignments/skip/undo/``: 204, then ``next`` gives the skipped item back; a
    second undo (nothing left to undo) is a 409 that changes nothing, an unknown token a 404
    naming the field."""
    client, _, campaign, (first, second, third), token, _ = skipped
    resp = client.post("/api/assignments/skip/undo/", {"token": token},
                       content_type="application/json")
    assert resp.status_code == 204
    nxt = client.post(f"/api/campaigns/{campaign.pk}/next/")
    assert nxt.status_code == 200 and nxt.json()["token"] == token
    assert _counts(first, second, third) == [(1, True), (0, False), (0, False)]

    before = _state()
    again = client.post("/api/assignments/skip/undo/", {"token": token},
                        content_type="application/json")
    assert again.status_code == 409 and "no skip to undo" in again.json()["detail"]
    missing = client.post("/api/assignments/skip/undo/",
                          {"token": "00000000-0000-0000-0000-000000000000"},
                          content_type="application/json")
    assert missing.status_code == 404 and missing.json().get("field") == "token"
    assert _state() == before


def test_a_submit_or_skip_that_loses_its_item_to_an_undo_is_told_so(skipped):
    """A request that looked the item shown instead up just before an undo deleted its row
    (another tab) gets a 410 saying the item went back to the pool, not a 500."""
    from annotation.errors import GoneError

    _, user, _, (first, second, third), token, resp = skipped
    replacement = Assignment.objects.get(token=_token(resp.content.decode()))
    assignment_skip_undo(assignment=Assignment.objects.get(token=token), annotator=user)
    before = _state()
    with pytest.raises(GoneError, match="went back to the pool"):
        judgment_submit(assignment=replacement, annotator=user, choice="A", strength=2,
                        idempotency_key="late", seconds_spent=3.0)
    with pytest.raises(GoneError, match="went back to the pool"):
        assignment_skip(assignment=replacement, annotator=user, reason="cannot judge")
    assert _state() == before
