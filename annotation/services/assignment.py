"""Issuing comparisons to annotators: overlap, calibration rate, expiry and reclaim.

Claims are writes. On PostgreSQL the open comparison is taken with
``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent annotators never wait on each other and a
comparison's live claims never exceed the campaign's overlap. SQLite ignores FOR UPDATE; there
every transaction starts with BEGIN IMMEDIATE (settings), which serialises claims instead.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from annotation.errors import ApplicationError
from annotation.models import AnnotatorProfile, Assignment, Campaign, Comparison
from annotation.services.calibration import reshow_a_on_left

_system_random = random.SystemRandom()
# Comparisons whose claims count toward the campaign overlap (calibration items do not: every
# annotator may see each gold item once).
OVERLAP_KINDS = (Comparison.Kind.REGULAR, Comparison.Kind.EVAL)


def _ensure_may_annotate(annotator: AbstractBaseUser) -> None:
    status = (
        AnnotatorProfile.objects.filter(user=annotator).values_list("status", flat=True).first()
    )
    if status == AnnotatorProfile.Status.PAUSED:
        raise ApplicationError("Your annotation is paused; an admin has been told.")


def assignment_reclaim_expired(*, campaign: Campaign, now: datetime | None = None,
                               limit: int = 200) -> int:
    """Return expired, unanswered assignments' comparisons to the pool; return how many.

    Safe to run concurrently: expired rows are taken with SKIP LOCKED, and comparison counters
    are decremented in ascending id order so that two reclaimers cannot deadlock.
    """
    now = now or timezone.now()
    due = Assignment.objects.filter(
        campaign=campaign, status=Assignment.Status.PENDING, expires_at__lte=now
    )
    # Runs before every claim and nearly always finds nothing: then one plain read is enough,
    # instead of a locking transaction (three round trips).
    if not due.exists():
        return 0
    with transaction.atomic():
        expired = list(
            due.select_for_update(skip_locked=True)
            .values_list("id", "comparison_id", "comparison__kind")[:limit]
        )
        if not expired:
            return 0
        Assignment.objects.filter(id__in=[row[0] for row in expired]).update(
            status=Assignment.Status.EXPIRED, finished_at=now
        )
        released = Counter(cid for _, cid, kind in expired if kind in OVERLAP_KINDS)
        for comparison_id in sorted(released):
            _release(comparison_id, released[comparison_id])
    return len(expired)


def _release(comparison_id: int, n: int = 1) -> None:
    Comparison.objects.filter(pk=comparison_id).update(
        claimed_count=F("claimed_count") - n, is_full=False
    )


def _claim_overlap_item(*, campaign: Campaign, annotator: AbstractBaseUser) -> Comparison | None:
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    comparison = (
        Comparison.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(campaign=campaign, kind__in=OVERLAP_KINDS, is_full=False)
        .filter(~Exists(seen))
        .order_by("-priority", "id")
        .only("id", "claimed_count", "target_overlap", "calibration_type")
        .first()
    )
    if comparison is None:
        return None
    claimed = comparison.claimed_count + 1
    wanted = comparison.target_overlap or campaign.overlap
    Comparison.objects.filter(pk=comparison.pk).update(
        claimed_count=claimed, is_full=claimed >= wanted
    )
    return comparison


def _claim_calibration_item(*, campaign: Campaign, annotator: AbstractBaseUser,
                            rng: random.Random) -> Comparison | None:
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    calibration = Comparison.objects.filter(
        campaign=campaign, kind=Comparison.Kind.CALIBRATION
    ).filter(~Exists(seen))
    # Items made for this annotator (swapped re-shows, transitivity closers) go first: they
    # exist only because this annotator answered their sources.
    mine = calibration.filter(for_annotator=annotator).only(
        "id", "calibration_type", "source_comparison_id"
    ).first()
    if mine is not None:
        return mine
    candidates = list(
        calibration.filter(for_annotator__isnull=True).order_by("id")
        .values_list("id", flat=True)[:500]
    )
    if not candidates:
        return None
    # Random order, so annotators do not meet the gold items in one shared sequence.
    return Comparison(pk=rng.choice(candidates))


def assignment_issue_next(
    *, campaign: Campaign, annotator: AbstractBaseUser, now: datetime | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """Give the annotator their next comparison, or None when no work is left for them.

    A live (pending, unexpired) assignment is returned again, so a reload shows the same item.
    Calibration items are drawn with probability ``campaign.calibration_rate`` (falling back to
    regular work when none is left). When regular work runs out, no calibration item is issued
    alone: a stream of only gold items would give them away. Raises ApplicationError when the
    annotator is paused or the campaign is closed.
    """
    now = now or timezone.now()
    rng = rng or _system_random
    if not campaign.is_active:
        raise ApplicationError("This campaign is closed.")
    _ensure_may_annotate(annotator)
    live = (
        Assignment.objects.filter(
            annotator=annotator, campaign=campaign, status=Assignment.Status.PENDING,
            expires_at__gt=now,
        )
        .order_by("issued_at")
        .first()
    )
    if live is not None:
        return live
    assignment_reclaim_expired(campaign=campaign, now=now)
    with transaction.atomic():
        comparison = None
        if campaign.calibration_rate > 0 and rng.random() < campaign.calibration_rate:
            if _has_open_regular_work(campaign=campaign, annotator=annotator):
                comparison = _claim_calibration_item(
                    campaign=campaign, annotator=annotator, rng=rng
                )
        if comparison is None:
            comparison = _claim_overlap_item(campaign=campaign, annotator=annotator)
        if comparison is None:
            return None
        a_on_left = None
        if comparison.calibration_type == Comparison.CalibrationType.SWAPPED_RESHOW:
            a_on_left = reshow_a_on_left(comparison=comparison, annotator_id=annotator.pk)
        return Assignment.objects.create(
            campaign=campaign,
            comparison_id=comparison.pk,
            annotator=annotator,
            a_on_left=rng.random() < 0.5 if a_on_left is None else a_on_left,
            issued_at=now,
            expires_at=now + timedelta(seconds=campaign.assignment_ttl_seconds),
        )


def _has_open_regular_work(*, campaign: Campaign, annotator: AbstractBaseUser) -> bool:
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    # Ordered like the claim, so PostgreSQL walks comparison_claim_idx; a bare EXISTS may be
    # planned as a sequential scan of every comparison (a new campaign's rows sit at the end).
    return (
        Comparison.objects.filter(campaign=campaign, kind__in=OVERLAP_KINDS, is_full=False)
        .filter(~Exists(seen))
        .order_by("-priority", "id")
        .values_list("id", flat=True)
        .first()
        is not None
    )


@transaction.atomic
def assignment_skip(*, assignment: Assignment, annotator: AbstractBaseUser, reason: str) -> None:
    """Give a pending assignment back with a reason; the annotator will not see it again."""
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Say why you skip this comparison.")
    locked = Assignment.objects.select_for_update().select_related("comparison").get(
        pk=assignment.pk
    )
    if locked.annotator_id != annotator.pk:
        raise ApplicationError("This assignment is not yours.")
    if locked.status != Assignment.Status.PENDING:
        raise ApplicationError("This assignment is no longer open.")
    locked.status = Assignment.Status.SKIPPED
    locked.skip_reason = reason[:200]
    locked.finished_at = timezone.now()
    locked.save(update_fields=["status", "skip_reason", "finished_at"])
    if locked.comparison.kind in OVERLAP_KINDS:
        _release(locked.comparison_id)
