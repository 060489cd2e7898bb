"""Issuing comparisons to annotators: overlap, calibration rate, expiry and reclaim.

Claims are writes. On PostgreSQL the open comparison is taken with
``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent annotators never wait on each other and a
comparison's live claims never exceed the campaign's overlap. One annotator's own claims are
serialised by a lock on their user row, so parallel calls (two tabs, a retry) get one assignment.
SQLite ignores FOR UPDATE; there every transaction starts with BEGIN IMMEDIATE (settings), which
serialises claims instead.

A draw runs the same statements whether it issues a calibration item or a regular one (see
``_issue``): gold items must not be told apart by how long ``/next/`` takes.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import BigIntegerField, Exists, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Cast
from django.utils import timezone

from annotation.errors import ApplicationError, ConflictError, ForbiddenError, GoneError
from annotation.models import AnnotatorProfile, Assignment, Campaign, Comparison
from annotation.selectors.annotator import (
    SKIP_UNDO_SECONDS,
    assignment_live_for_annotator,
    assignment_skip_undoable,
)

_system_random = random.SystemRandom()
# Said of an item whose row an undone skip deleted (``assignment_skip_undo``).
RETURNED_TO_POOL = ("This comparison went back to the pool when you undid a skip; your "
                    "skipped comparison is the current one again.")
# Comparisons whose claims count toward the campaign overlap (calibration items do not: every
# annotator may see each gold item once).
OVERLAP_KINDS = (Comparison.Kind.REGULAR, Comparison.Kind.EVAL)


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


# A prime modulus for the per-draw shuffle of calibration items (see _pick_calibration).
_SHUFFLE_MODULUS = 2_147_483_647


def _lock_annotator(*, annotator: AbstractBaseUser) -> tuple[str | None, str | None]:
    """Lock the annotator's user row for this transaction; return their profile status, kind.

    One annotator's claims are serialised here: two tabs or a client retry would otherwise both
    find no live assignment and both insert one, and the second insert of the same calibration
    item breaks ``assignment_once_per_annotator`` (calibration items carry no claim counter
    to lock). The user row always exists, the profile not necessarily (a user given the
    annotator group by hand), so the user row is the one locked, and the pause status is read
    in the same statement. FOR NO KEY UPDATE, not FOR UPDATE: inserts that reference the user
    (judgments, assignments in other transactions) take KEY SHARE locks and must not wait.
    """
    User = get_user_model()
    # "id" is selected so that Django emits OF auth_user (it drops OF for a table none of
    # whose columns are selected, and PostgreSQL refuses to lock the outer join's null side).
    rows = list(
        User.objects.select_for_update(no_key=True, of=("self",))
        .filter(pk=annotator.pk)
        .values_list("id", "annotator_profile__status", "annotator_profile__kind")
    )
    return (rows[0][1], rows[0][2]) if rows else (None, None)


def _lock_open_regular(*, campaign: Campaign,
                       annotator: AbstractBaseUser) -> tuple[int, int, int | None] | None:
    """Lock the next open regular/eval comparison this annotator has not seen.

    Returns (id, claimed_count, target_overlap), or None when no regular work is left for them.
    Ordered like ``comparison_open_idx``, so PostgreSQL walks the partial index of open rows.
    """
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    return (
        Comparison.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(campaign=campaign, kind__in=OVERLAP_KINDS, is_full=False)
        .filter(~Exists(seen))
        .order_by("-priority", "id")
        .values_list("id", "claimed_count", "target_overlap")
        .first()
    )


def _pick_calibration(*, campaign: Campaign, annotator: AbstractBaseUser,
                      rng: random.Random) -> tuple[int, str, bool | None] | None:
    """Pick the calibration item this annotator would get: (id, calibration type, re-show side).

    Items made for this annotator (swapped re-shows, transitivity closers) come first: they
    exist only because this annotator answered their sources. Otherwise an unseen shared item
    in a random order drawn per call: ids are shuffled by an affine map modulo a prime with
    random coefficients, so annotators do not meet gold items in one shared sequence, and no
    candidate ids leave the database. The third value is the screen side the re-show's source
    was shown with (None when the item is not a re-show or the source assignment is gone):
    annotated here so that a re-show costs no extra query.
    """
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    source_side = Assignment.objects.filter(
        comparison_id=OuterRef("source_comparison_id"), annotator=annotator
    ).values("a_on_left")[:1]
    mult = rng.randrange(1, _SHUFFLE_MODULUS)
    offset = rng.randrange(_SHUFFLE_MODULUS)
    items = Comparison.objects.filter(campaign=campaign, kind=Comparison.Kind.CALIBRATION)
    # Ids are taken relative to the campaign's first calibration item, so a seeded rng gives
    # the same sequence in two campaigns built alike (reproducible simulations). BIGINT
    # arithmetic: (id - first) * mult stays below 2**63 for any id below 2**32.
    first = Subquery(items.order_by("id").values("id")[:1], output_field=BigIntegerField())
    shuffle = (
        (Cast("id", BigIntegerField()) - first) * Value(mult, BigIntegerField())
        + Value(offset, BigIntegerField())
    ) % Value(_SHUFFLE_MODULUS, BigIntegerField())
    return (
        items.filter(Q(for_annotator=annotator) | Q(for_annotator__isnull=True))
        .filter(~Exists(seen))
        .annotate(source_a_on_left=Subquery(source_side), shuffle=shuffle)
        .order_by(F("for_annotator_id").asc(nulls_last=True), "shuffle")
        .values_list("id", "calibration_type", "source_a_on_left")
        .first()
    )


def _issue(*, campaign: Campaign, annotator: AbstractBaseUser, now: datetime,
           rng: random.Random) -> Assignment | None:
    with transaction.atomic():
        status, kind = _lock_annotator(annotator=annotator)
        if status == AnnotatorProfile.Status.PAUSED:
            raise ForbiddenError("Your annotation is paused; an admin has been told.")
        if kind == AnnotatorProfile.Kind.DATASET:
            # An import's own labels: they are written by the import, never claimed.
            raise ForbiddenError("A dataset's labels receive no work.")
        # Re-checked under the lock: a parallel call of this annotator that held the lock
        # first has committed its assignment by now, and this call returns the same one.
        live = assignment_live_for_annotator(campaign=campaign, annotator=annotator, now=now)
        if live is not None:
            return live
        # Every draw runs the same four statements, whatever it turns out to be, so neither
        # the number of queries nor their cost tells a calibration item from a regular one:
        # (a) lock the next regular row, (b) pick a calibration item, (c) update the regular
        # row's claimed_count by 1 or 0, (d) insert the assignment.
        draw_calibration = (campaign.calibration_rate > 0
                            and rng.random() < campaign.calibration_rate)
        regular = _lock_open_regular(campaign=campaign, annotator=annotator)
        if regular is None:
            # No calibration item is issued alone: a stream of only gold would give it away.
            return None
        # A campaign without gold draws none, so it has nothing to hide by timing either.
        calibration = (_pick_calibration(campaign=campaign, annotator=annotator, rng=rng)
                       if campaign.calibration_rate > 0 else None)
        regular_id, claimed, target_overlap = regular
        a_on_left = rng.random() < 0.5
        if draw_calibration and calibration is not None:
            comparison_id, calibration_type, source_side = calibration
            if calibration_type == Comparison.CalibrationType.SWAPPED_RESHOW \
                    and source_side is not None:
                # Re-show A is the original B: the original's A side, shown left then, is shown
                # right now (and vice versa), so the two screens mirror each other.
                a_on_left = source_side
            delta = 0
        else:
            comparison_id, delta = regular_id, 1
        claimed += delta
        # With delta 0 this rewrites the row unchanged: the same statement at the same cost.
        Comparison.objects.filter(pk=regular_id).update(
            claimed_count=claimed, is_full=claimed >= (target_overlap or campaign.overlap)
        )
        return Assignment.objects.create(
            campaign=campaign,
            comparison_id=comparison_id,
            annotator=annotator,
            a_on_left=a_on_left,
            issued_at=now,
            expires_at=now + timedelta(seconds=campaign.assignment_ttl_seconds),
        )


def assignment_issue_next(
    *, campaign: Campaign, annotator: AbstractBaseUser, now: datetime | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """Give the annotator their next comparison, or None when no work is left for them.

    A live (pending, unexpired) assignment is returned again, so a reload, a second tab or a
    retried request shows the same item; one annotator's parallel calls are serialised and all
    get that one assignment. Calibration items are drawn with probability
    ``campaign.calibration_rate`` (falling back to regular work when none is left for this
    annotator); when regular work runs out, no calibration item is issued alone. Every draw
    runs the same statements at the same cost, so timing does not tell gold items apart.
    Raises ConflictError when the campaign is closed and ForbiddenError when the annotator is
    paused or is a dataset's labels (``AnnotatorProfile.Kind.DATASET``).
    """
    now = now or timezone.now()
    rng = rng or _system_random
    if not campaign.is_active:
        raise ConflictError("This campaign is closed.")
    assignment_reclaim_expired(campaign=campaign, now=now)
    try:
        return _issue(campaign=campaign, annotator=annotator, now=now, rng=rng)
    except IntegrityError:
        # Backstop: the annotator lock makes a second claim of one item impossible here, but a
        # conflicting insert must still never surface as a 500. Whatever committed wins.
        live = assignment_live_for_annotator(campaign=campaign, annotator=annotator, now=now)
        if live is not None:
            return live
        raise ConflictError("Your next comparison could not be issued; try again.") from None


@transaction.atomic
def assignment_skip(*, assignment: Assignment, annotator: AbstractBaseUser, reason: str) -> None:
    """Give a pending assignment back with a reason; the annotator will not see it again."""
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Say why you skip this comparison.")
    locked = (Assignment.objects.select_for_update().select_related("comparison")
              .filter(pk=assignment.pk).first())
    if locked is None:  # an undone skip gave its replacement back to the pool
        raise GoneError(RETURNED_TO_POOL)
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


def assignment_skip_undo(*, assignment: Assignment, annotator: AbstractBaseUser,
                         now: datetime | None = None) -> Assignment:
    """Give a just-skipped comparison back to the annotator who skipped it; return it, pending.

    Only the annotator's most recent skip in the campaign (nothing answered or skipped since),
    within SKIP_UNDO_SECONDS, in an open campaign, and for a regular item only while it has a
    free place: the skip released its claim, and other annotators may have filled it since.
    The item issued in its place (their live assignment, issued after the skip) goes back to
    the pool: its claim is released and its unanswered row deleted, so the annotator may still
    be given it later. Claim counts end as if the skip had never happened.
    Raises ForbiddenError (someone else's item, a paused annotator) and ConflictError (nothing
    to undo, too late, campaign closed, place taken); nothing changes then.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # The annotator's lock serialises this with their claims (a parallel Start or next
        # item) and with a second undo from another tab.
        status, _ = _lock_annotator(annotator=annotator)
        if status == AnnotatorProfile.Status.PAUSED:
            raise ForbiddenError("Your annotation is paused; an admin has been told.")
        skipped = (Assignment.objects.select_for_update(of=("self",))
                   .select_related("campaign", "comparison").get(pk=assignment.pk))
        if skipped.annotator_id != annotator.pk:
            raise ForbiddenError("This comparison is not yours.")
        campaign = skipped.campaign
        if not campaign.is_active:
            raise ConflictError("This campaign is closed.")
        if skipped.status != Assignment.Status.SKIPPED:
            raise ConflictError("There is no skip to undo: this comparison was not skipped.")
        # The items issued in its place, locked before the "latest skip" check: a submit of one
        # of them commits either before the check (which then refuses) or after the undo
        # (which has deleted it: the submit is told the item went back to the pool).
        replacements = list(
            Assignment.objects.select_for_update(of=("self",))
            .filter(campaign=campaign, annotator=annotator, status=Assignment.Status.PENDING,
                    issued_at__gte=skipped.finished_at)
            .values_list("id", "comparison_id", "comparison__kind")
        )
        undoable = assignment_skip_undoable(campaign=campaign, annotator=annotator, now=now)
        if undoable is None or undoable.pk != skipped.pk:
            if now - skipped.finished_at > timedelta(seconds=SKIP_UNDO_SECONDS):
                raise ConflictError(
                    f"Too late to undo this skip: a skip can be undone for "
                    f"{SKIP_UNDO_SECONDS // 60} minutes.")
            raise ConflictError("Only your most recent skip can be undone, before you answer "
                                "or skip the next comparison.")
        deltas: Counter[int] = Counter()
        if skipped.comparison.kind in OVERLAP_KINDS:
            deltas[skipped.comparison_id] += 1
        for _, comparison_id, kind in replacements:
            if kind in OVERLAP_KINDS:
                deltas[comparison_id] -= 1
        # Locked in ascending id order, as assignment_reclaim_expired releases them, so that
        # the two cannot deadlock.
        counts = {
            pk: (claimed, target)
            for pk, claimed, target in Comparison.objects.select_for_update()
            .filter(pk__in=sorted(deltas)).order_by("id")
            .values_list("id", "claimed_count", "target_overlap")
        }
        if skipped.comparison.kind in OVERLAP_KINDS:
            claimed, target = counts[skipped.comparison_id]
            if claimed >= (target or campaign.overlap):
                raise ConflictError("Other annotators have taken this comparison since you "
                                    "skipped it; it cannot be given back.")
        if replacements:
            Assignment.objects.filter(pk__in=[row[0] for row in replacements]).delete()
        for pk in sorted(deltas):
            claimed, target = counts[pk]
            claimed += deltas[pk]
            Comparison.objects.filter(pk=pk).update(
                claimed_count=claimed, is_full=claimed >= (target or campaign.overlap))
        skipped.status = Assignment.Status.PENDING
        skipped.skip_reason = ""
        skipped.finished_at = None
        skipped.expires_at = now + timedelta(seconds=campaign.assignment_ttl_seconds)
        skipped.save(update_fields=["status", "skip_reason", "finished_at", "expires_at"])
    return skipped
