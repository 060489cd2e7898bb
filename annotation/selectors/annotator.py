"""Every non-trivial read of the annotation app.

``comparison_for_annotator`` is the one access path from a comparison to what an annotator may
see: it returns screen-ordered texts and nothing else (no kind, no gold, no canonical order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from annotation.importers import CONTEXT_FIELD
from annotation.models import AnnotatorProfile, Assignment, Campaign, Comparison, Judgment


@dataclass(frozen=True)
class AnnotatorView:
    """What the annotator sees of an assignment: screen order only."""

    token: str
    turns: list[dict[str, str]]
    left_text: str
    right_text: str
    criteria: list[str]
    expires_at: str
    # Passages the prompt came with (an imported ``context`` field), shown in a collapsible
    # panel; [] when none. Read from the prompt whatever the comparison's kind, so a
    # calibration item on a prompt with context shows the same panel as a regular one.
    context: list[str] = field(default_factory=list)


def prompt_context(extra: dict | None) -> list[str]:
    """The prompt's ``context`` as a list of non-blank passages (a string is one passage)."""
    value = (extra or {}).get(CONTEXT_FIELD)
    passages = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [p for p in passages if isinstance(p, str) and p.strip()]


def comparison_for_annotator(*, assignment: Assignment) -> AnnotatorView:
    comparison = (
        Comparison.objects.select_related("prompt", "response_a", "response_b", "campaign")
        .only("prompt__turns", "prompt__extra", "response_a__text", "response_b__text",
              "campaign__criteria")
        .get(pk=assignment.comparison_id)
    )
    a, b = comparison.response_a.text, comparison.response_b.text
    left, right = (a, b) if assignment.a_on_left else (b, a)
    return AnnotatorView(
        token=str(assignment.token), turns=comparison.prompt.turns, left_text=left,
        right_text=right, criteria=list(comparison.campaign.criteria),
        expires_at=assignment.expires_at.isoformat(),
        context=prompt_context(comparison.prompt.extra),
    )


PROGRESS_BATCH = 25
# How long a skip can be undone (``services.assignment.assignment_skip_undo``): long enough to
# notice a mis-pressed key on the next item, short enough that the freed place is still open.
SKIP_UNDO_SECONDS = 120


@dataclass(frozen=True)
class AnnotatorProgress:
    """Progress as judgments done and the position in a batch of PROGRESS_BATCH.

    Deliberately no count of open items: it would drop after a regular item and stay put after
    a calibration item, telling the annotator which items are gold.
    """

    done: int

    @property
    def in_batch(self) -> int:
        return self.done % PROGRESS_BATCH

    @property
    def batch_size(self) -> int:
        return PROGRESS_BATCH

    @property
    def batch_done(self) -> bool:
        """True right after a batch's last judgment (until the next one): say so, rather than
        let the counter wrap from 24/25 to 0/25 without a word."""
        return self.done > 0 and self.in_batch == 0

    @property
    def batches_done(self) -> int:
        return self.done // PROGRESS_BATCH

    @property
    def bar_value(self) -> int:
        """The bar's fill: a completed batch shows full, not empty."""
        return PROGRESS_BATCH if self.batch_done else self.in_batch


def annotator_progress(*, campaign: Campaign, annotator: AbstractBaseUser) -> AnnotatorProgress:
    done = Assignment.objects.filter(
        campaign=campaign, annotator=annotator, status=Assignment.Status.COMPLETED
    ).count()
    return AnnotatorProgress(done=done)


def assignment_get_for_annotator(*, token: str, annotator: AbstractBaseUser) -> Assignment | None:
    return (
        Assignment.objects.select_related("campaign")
        .filter(token=token, annotator=annotator)
        .first()
    )


def assignment_live_for_annotator(
    *, campaign: Campaign, annotator: AbstractBaseUser, now: datetime | None = None,
) -> Assignment | None:
    """Return the annotator's live (pending, unexpired) assignment in the campaign, or None.

    Read-only: unlike ``assignment_issue_next`` it never claims, so a GET can show the item an
    annotator holds without changing state. The oldest live one, as the claim path returns.
    """
    now = now or timezone.now()
    return (
        Assignment.objects.filter(
            annotator=annotator, campaign=campaign, status=Assignment.Status.PENDING,
            expires_at__gt=now,
        )
        .order_by("issued_at")
        .first()
    )


def assignment_skip_undoable(
    *, campaign: Campaign, annotator: AbstractBaseUser, now: datetime | None = None,
) -> Assignment | None:
    """Return the skip the annotator may still undo in the campaign, or None.

    That is their most recently finished assignment there (nothing answered or skipped since),
    if it was a skip less than SKIP_UNDO_SECONDS ago. Whether its comparison still has a free
    place is for the undo itself to find out (under its locks).
    """
    now = now or timezone.now()
    latest = (
        Assignment.objects.filter(
            campaign=campaign, annotator=annotator,
            status__in=[Assignment.Status.COMPLETED, Assignment.Status.SKIPPED],
        )
        .order_by("-finished_at", "-id")
        .first()
    )
    if (latest is None or latest.status != Assignment.Status.SKIPPED
            or latest.finished_at is None
            or now - latest.finished_at > timedelta(seconds=SKIP_UNDO_SECONDS)):
        return None
    return latest


@dataclass(frozen=True)
class AnnotatorPause:
    """Why an annotator is paused (``AnnotatorProfile.paused_reason``; may be blank)."""

    reason: str


def annotator_pause(*, annotator: AbstractBaseUser) -> AnnotatorPause | None:
    """Return the annotator's pause, or None when they may rate (or have no profile)."""
    reason = (
        AnnotatorProfile.objects.filter(user_id=annotator.pk,
                                        status=AnnotatorProfile.Status.PAUSED)
        .values_list("paused_reason", flat=True)
        .first()
    )
    return None if reason is None else AnnotatorPause(reason=reason)


def campaign_list_for_annotator(*, annotator: AbstractBaseUser) -> QuerySet[Campaign]:
    return Campaign.objects.filter(is_active=True).annotate(
        my_done=Count(
            "assignments",
            filter=Q(assignments__annotator=annotator,
                     assignments__status=Assignment.Status.COMPLETED),
        )
    )


def judgment_list(*, campaign: Campaign | None = None, annotator: AbstractBaseUser | None = None,
                  current_only: bool = True) -> QuerySet[Judgment]:
    qs = Judgment.objects.select_related("annotator", "comparison").order_by("id")
    if campaign is not None:
        qs = qs.filter(campaign=campaign)
    if annotator is not None:
        qs = qs.filter(annotator=annotator)
    if current_only:
        qs = qs.filter(superseded_by__isnull=True)
    return qs
