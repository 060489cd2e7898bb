"""Recording judgments: idempotent by key, append-only, corrections supersede."""

from __future__ import annotations

import random

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.errors import (
    ApplicationError,
    ConflictError,
    ForbiddenError,
    GoneError,
    NotFoundError,
)
from annotation.models import AnnotatorProfile, Assignment, Choice, Judgment
from annotation.services.assignment import RETURNED_TO_POOL
from annotation.services.quality import quality_on_judgment


def choice_from_screen(screen_choice: str, *, a_on_left: bool) -> Choice:
    """Map what the annotator clicked (left/right/tie/both_bad) to canonical order."""
    if screen_choice == "left":
        return Choice.A if a_on_left else Choice.B
    if screen_choice == "right":
        return Choice.B if a_on_left else Choice.A
    if screen_choice == "tie":
        return Choice.TIE
    if screen_choice == "both_bad":
        return Choice.BOTH_BAD
    raise ApplicationError(f"Unknown choice {screen_choice!r}.", extra={"field": "choice"})


def _validated_fields(
    *, assignment: Assignment, choice: str, strength: int | None,
    criteria_choices: dict[str, str] | None, seconds_spent: float,
) -> dict:
    if choice not in Choice.values:
        raise ApplicationError(f"Unknown choice {choice!r}.", extra={"field": "choice"})
    if choice in (Choice.A, Choice.B):
        if strength not in (1, 2, 3):
            raise ApplicationError("Say how strong the preference is.", extra={"field": "strength"})
    else:
        strength = None  # a tie or both-bad has no direction, so no strength
    criteria_choices = criteria_choices or {}
    allowed = set(assignment.campaign.criteria)
    unknown = set(criteria_choices) - allowed
    if unknown:
        raise ApplicationError(
            f"Unknown criteria: {', '.join(sorted(unknown))}.", extra={"field": "criteria"}
        )
    bad = {k: v for k, v in criteria_choices.items() if v not in Choice.values}
    if bad:
        raise ApplicationError("Each criterion takes A, B, tie or both_bad.",
                               extra={"field": "criteria"})
    if seconds_spent is None or seconds_spent < 0:
        raise ApplicationError("seconds_spent must be >= 0.", extra={"field": "seconds_spent"})
    return {"choice": choice, "strength": strength, "criteria_choices": criteria_choices,
            "seconds_spent": float(seconds_spent)}


def _existing_for_key(idempotency_key: str, annotator: AbstractBaseUser) -> Judgment | None:
    # Keys are unique per annotator: another annotator's key is simply another key.
    return Judgment.objects.filter(annotator_id=annotator.pk,
                                   idempotency_key=idempotency_key).first()


def _replay_or_conflict(existing: Judgment, *, assignment_id: int) -> Judgment:
    """A key names one answer: the same assignment replays it, another one conflicts."""
    if existing.assignment_id != assignment_id:
        raise ConflictError(
            "This idempotency key was already used for another comparison; use a new key.",
            extra={"field": "idempotency_key"},
        )
    existing.was_replayed = True
    return existing


def _check_may_submit(locked: Assignment, *, annotator: AbstractBaseUser, now) -> None:
    """The state rules of a submit, each with its own status (403, 404, 409, 410)."""
    if locked.annotator_id != annotator.pk:
        raise NotFoundError("This comparison is not yours.", extra={"field": "token"})
    profile = getattr(locked.annotator, "annotator_profile", None)
    if profile is not None and profile.status == AnnotatorProfile.Status.PAUSED:
        raise ForbiddenError("Your annotation is paused; an admin has been told.")
    if not locked.campaign.is_active:
        raise ConflictError("This campaign is closed; it takes no more judgments.")
    if locked.status == Assignment.Status.COMPLETED:
        raise ConflictError("This comparison is already answered; submit a correction.")
    if locked.status != Assignment.Status.PENDING or locked.expires_at <= now:
        raise GoneError("This comparison expired or was skipped and went back to the pool.",
                        extra={"field": "token"})


def judgment_submit(
    *, assignment: Assignment, annotator: AbstractBaseUser, choice: str,
    strength: int | None, idempotency_key: str, seconds_spent: float,
    criteria_choices: dict[str, str] | None = None, rationale: str = "",
    rng: random.Random | None = None,
) -> Judgment:
    """Record an annotator's answer (canonical order); a repeated key returns the first answer.

    Idempotent: the same key on the same assignment, also sent concurrently, yields exactly one
    judgment (returned with ``was_replayed = True`` on a repeat). Raises NotFoundError if the
    assignment is someone else's, ForbiddenError if the annotator is paused, ConflictError if
    the campaign is closed, the assignment is already answered (corrections go through
    judgment_supersede) or the key was used on another assignment, and GoneError if the
    assignment expired (reclaimed or not) or was skipped.
    """
    if not idempotency_key or len(idempotency_key) > 100:
        raise ApplicationError("An idempotency key of 1-100 characters is required.",
                               extra={"field": "idempotency_key"})
    now = timezone.now()
    try:
        with transaction.atomic():
            # The row lock orders concurrent submits for one assignment; the key is looked up
            # under it (once: a repeated or concurrent key gets the first answer here).
            locked = (
                Assignment.objects.select_for_update(of=("self",))
                .select_related("campaign", "comparison", "annotator__annotator_profile")
                .filter(pk=assignment.pk).first()
            )
            if locked is None:  # an undone skip gave its replacement back to the pool
                raise GoneError(RETURNED_TO_POOL)
            existing = _existing_for_key(idempotency_key, annotator)
            if existing is not None:
                return _replay_or_conflict(existing, assignment_id=locked.pk)
            _check_may_submit(locked, annotator=annotator, now=now)
            fields = _validated_fields(
                assignment=locked, choice=choice, strength=strength,
                criteria_choices=criteria_choices, seconds_spent=seconds_spent,
            )
            judgment = Judgment(
                assignment=locked, campaign_id=locked.campaign_id,
                comparison_id=locked.comparison_id, annotator_id=annotator.pk,
                a_on_left=locked.a_on_left, rationale=rationale.strip()[:5000],
                idempotency_key=idempotency_key, **fields,
            )
            # Already loaded with the lock: the quality update reads them without a query.
            judgment.comparison = locked.comparison
            judgment.campaign = locked.campaign
            judgment.save(force_insert=True)
            locked.status = Assignment.Status.COMPLETED
            locked.finished_at = now
            locked.save(update_fields=["status", "finished_at"])
            if settings.GAPLAB_QUALITY_ON_SUBMIT:
                quality_on_judgment(judgment=judgment, rng=rng)
            judgment.was_replayed = False
            return judgment
    except IntegrityError:
        # Backstop for the unique key (a racing insert on a backend without row locks).
        existing = _existing_for_key(idempotency_key, annotator)
        if existing is None:
            raise
        return _replay_or_conflict(existing, assignment_id=assignment.pk)


def judgment_submit_from_screen(
    *, token: str, annotator: AbstractBaseUser, choice: str, strength: int | None,
    idempotency_key: str, seconds_spent: float | None = None,
    criteria: dict[str, str] | None = None, rationale: str = "",
    rng: random.Random | None = None,
) -> Judgment:
    """Submit what the annotator clicked on their screen (left/right/tie/both_bad).

    The one place where screen sides become canonical choices (the page, the API and the
    simulated annotators all come here). ``seconds_spent`` defaults to the time since issue.
    Raises NotFoundError when the token is not one of the annotator's assignments.
    """
    assignment = Assignment.objects.filter(token=token, annotator_id=annotator.pk).first()
    if assignment is None:
        raise NotFoundError("This comparison is not yours.", extra={"field": "token"})
    if seconds_spent is None:
        seconds_spent = max(0.0, (timezone.now() - assignment.issued_at).total_seconds())
    return judgment_submit(
        assignment=assignment, annotator=annotator,
        choice=choice_from_screen(choice, a_on_left=assignment.a_on_left),
        strength=strength, idempotency_key=idempotency_key, seconds_spent=seconds_spent,
        criteria_choices={name: choice_from_screen(value, a_on_left=assignment.a_on_left)
                          for name, value in (criteria or {}).items()},
        rationale=rationale, rng=rng,
    )


def judgment_supersede(
    *, judgment: Judgment, annotator: AbstractBaseUser, choice: str, strength: int | None,
    idempotency_key: str, seconds_spent: float,
    criteria_choices: dict[str, str] | None = None, rationale: str = "",
) -> Judgment:
    """Record a correction: a new judgment that supersedes the latest one. Nothing is updated.

    A repeated key returns the correction it made; a key used on another comparison conflicts.
    """
    if judgment.annotator_id != annotator.pk:
        raise ForbiddenError("Only the author can correct a judgment.")
    existing = _existing_for_key(idempotency_key, annotator)
    if existing is not None:
        return _replay_or_conflict(existing, assignment_id=judgment.assignment_id)
    with transaction.atomic():
        latest = Judgment.objects.select_for_update().select_related(
            "assignment__campaign"
        ).get(pk=judgment.pk)
        while hasattr(latest, "superseded_by"):
            latest = latest.superseded_by
        fields = _validated_fields(
            assignment=latest.assignment, choice=choice, strength=strength,
            criteria_choices=criteria_choices, seconds_spent=seconds_spent,
        )
        correction = Judgment(
            assignment_id=latest.assignment_id, campaign_id=latest.campaign_id,
            comparison_id=latest.comparison_id, annotator_id=annotator.pk,
            a_on_left=latest.a_on_left, rationale=rationale.strip()[:5000],
            idempotency_key=idempotency_key, supersedes=latest, **fields,
        )
        try:
            correction.save(force_insert=True)
        except (IntegrityError, ValidationError) as exc:
            raise ConflictError("This judgment was corrected concurrently; retry.") from exc
        return correction
