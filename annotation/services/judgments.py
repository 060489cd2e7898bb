"""Recording judgments: idempotent by key, append-only, corrections supersede."""

from __future__ import annotations

import random
from typing import Literal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.errors import ApplicationError
from annotation.models import Assignment, Choice, Judgment
from annotation.services.quality import quality_on_judgment

ScreenChoice = Literal["left", "right", "tie", "both_bad"]
SCREEN_CHOICES: tuple[str, ...] = ("left", "right", "tie", "both_bad")


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
    existing = Judgment.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None and existing.annotator_id != annotator.pk:
        raise ApplicationError("This idempotency key belongs to someone else.")
    return existing


def judgment_submit(
    *, assignment: Assignment, annotator: AbstractBaseUser, choice: str,
    strength: int | None, idempotency_key: str, seconds_spent: float,
    criteria_choices: dict[str, str] | None = None, rationale: str = "",
    rng: random.Random | None = None,
) -> Judgment:
    """Record an annotator's answer (canonical order); a repeated key returns the first answer.

    Idempotent: the same key, also sent concurrently, yields exactly one judgment. Raises
    ApplicationError if the assignment is someone else's, was skipped or reclaimed after expiry,
    or already has an answer under another key (corrections go through judgment_supersede).
    """
    if not idempotency_key or len(idempotency_key) > 100:
        raise ApplicationError("An idempotency key of 1-100 characters is required.")
    try:
        with transaction.atomic():
            # The row lock orders concurrent submits for one assignment; the key is looked up
            # under it (once: a repeated or concurrent key gets the first answer here).
            locked = (
                Assignment.objects.select_for_update(of=("self",))
                .select_related("campaign", "comparison")
                .get(pk=assignment.pk)
            )
            existing = _existing_for_key(idempotency_key, annotator)
            if existing is not None:
                return existing
            if locked.annotator_id != annotator.pk:
                raise ApplicationError("This assignment is not yours.")
            if locked.status == Assignment.Status.COMPLETED:
                raise ApplicationError("This comparison is already answered; submit a correction.")
            if locked.status != Assignment.Status.PENDING:
                raise ApplicationError(
                    "This comparison expired or was skipped and went back to the pool."
                )
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
            locked.finished_at = timezone.now()
            locked.save(update_fields=["status", "finished_at"])
            if settings.GAPLAB_QUALITY_ON_SUBMIT:
                quality_on_judgment(judgment=judgment, rng=rng)
            return judgment
    except IntegrityError:
        # Backstop for the unique key (a racing insert on a backend without row locks).
        existing = _existing_for_key(idempotency_key, annotator)
        if existing is None:
            raise
        return existing


def judgment_supersede(
    *, judgment: Judgment, annotator: AbstractBaseUser, choice: str, strength: int | None,
    idempotency_key: str, seconds_spent: float,
    criteria_choices: dict[str, str] | None = None, rationale: str = "",
) -> Judgment:
    """Record a correction: a new judgment that supersedes the latest one. Nothing is updated."""
    existing = _existing_for_key(idempotency_key, annotator)
    if existing is not None:
        return existing
    with transaction.atomic():
        latest = Judgment.objects.select_for_update().select_related(
            "assignment__campaign"
        ).get(pk=judgment.pk)
        if latest.annotator_id != annotator.pk:
            raise ApplicationError("Only the author can correct a judgment.")
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
            raise ApplicationError("This judgment was corrected concurrently; retry.") from exc
        return correction
