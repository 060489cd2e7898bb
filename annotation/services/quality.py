"""Quality, drift and pausing: persist what ``quality.py`` and ``drift.py`` compute.

Two paths. On every submit, ``quality_on_judgment`` does O(1) work: gold tallies, the Wilson
interval, the pause check, follow-up calibration items and adaptive redundancy. Every
RECOMPUTE_EVERY judgments of a campaign (and on demand) a task runs the full recompute:
Dawid-Skene, agreement, Krippendorff's alpha, biases and the drift scan.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.calibration import gold_correct
from annotation.models import (
    AnnotatorProfile,
    AnnotatorQuality,
    Campaign,
    CampaignQuality,
    Comparison,
    DriftAlert,
    Judgment,
)
from annotation.quality import wilson_interval  # numpy only: cheap in the web process
from annotation.services.calibration import (
    calibration_reshow_create,
    calibration_transitivity_closer_create,
)

if TYPE_CHECKING:
    from annotation.quality import DawidSkeneFit
    from annotation.selectors_frame import CampaignFrame

RECOMPUTE_EVERY = 50
MIN_GOLD_FOR_PAUSE = 10
# Adaptive redundancy asks for one more rater while the leading choice holds less than this
# share of the judgments.
DISAGREEMENT_SHARE = 2 / 3
_system_random = random.SystemRandom()


def quality_on_judgment(*, judgment: Judgment, rng: random.Random | None = None) -> None:
    """The per-submit update; runs inside the submit transaction, a few cheap queries."""
    rng = rng or _system_random
    comparison = judgment.comparison
    campaign = judgment.campaign
    if comparison.kind == Comparison.Kind.CALIBRATION:
        ok = gold_correct(judgment.choice, gold_choice=comparison.gold_choice,
                          gold_accepts=comparison.gold_accepts)
        if ok is not None:
            _gold_tally(campaign=campaign, annotator_id=judgment.annotator_id, correct=ok)
    elif comparison.kind == Comparison.Kind.REGULAR:
        if campaign.reshow_rate > 0 and rng.random() < campaign.reshow_rate:
            calibration_reshow_create(judgment=judgment)
        # Only once the wanted judgments are all claimed can they disagree enough to matter.
        wanted = comparison.target_overlap or campaign.overlap
        if campaign.redundancy_cap > wanted and comparison.claimed_count >= wanted:
            comparison_redundancy_adapt(comparison=comparison, campaign=campaign)
    # The full recompute (which also makes transitivity closers) runs off the request path.
    if judgment.pk % RECOMPUTE_EVERY == 0:
        from annotation.tasks import campaign_quality_recompute as recompute_task

        transaction.on_commit(lambda: recompute_task.delay(campaign.pk))


def _gold_tally(*, campaign: Campaign, annotator_id: int, correct: bool) -> None:
    row, _ = AnnotatorQuality.objects.select_for_update().get_or_create(
        campaign=campaign, annotator_id=annotator_id
    )
    n = row.n_gold + 1
    hits = round((row.gold_accuracy or 0.0) * row.n_gold) + int(correct)
    low, high = wilson_interval(hits, n)
    AnnotatorQuality.objects.filter(pk=row.pk).update(
        n_gold=n, gold_accuracy=hits / n, gold_ci_low=low, gold_ci_high=high
    )
    if n >= MIN_GOLD_FOR_PAUSE and high < campaign.accuracy_threshold:
        _pause_if_evidence_since_unpause(campaign=campaign, annotator_id=annotator_id)


def _pause_if_evidence_since_unpause(*, campaign: Campaign, annotator_id: int) -> None:
    """Pause unless an admin un-paused after the gold that condemns the annotator."""
    profile = AnnotatorProfile.objects.filter(user_id=annotator_id).first()
    if profile is None or profile.status == AnnotatorProfile.Status.PAUSED:
        return
    if profile.unpaused_at is not None:
        since = list(
            Judgment.objects.filter(
                campaign=campaign, annotator_id=annotator_id, superseded_by__isnull=True,
                comparison__kind=Comparison.Kind.CALIBRATION,
                created_at__gt=profile.unpaused_at,
            ).values_list("choice", "comparison__gold_choice", "comparison__gold_accepts")
        )
        scored = [gold_correct(c, gold_choice=g, gold_accepts=a or []) for c, g, a in since]
        scored = [s for s in scored if s is not None]
        if len(scored) < MIN_GOLD_FOR_PAUSE:
            return
        if wilson_interval(sum(scored), len(scored))[1] >= campaign.accuracy_threshold:
            return
    profile.status = AnnotatorProfile.Status.PAUSED
    profile.paused_reason = (
        f"Gold accuracy in {campaign.name} is below {campaign.accuracy_threshold:.0%} "
        f"with 95% confidence."
    )[:300]
    profile.save(update_fields=["status", "paused_reason"])


def comparison_redundancy_adapt(*, comparison: Comparison, campaign: Campaign) -> bool:
    """Ask for one more rater when a comparison's judgments disagree, up to the cap."""
    choices = list(
        Judgment.objects.filter(comparison=comparison, superseded_by__isnull=True)
        .values_list("choice", flat=True)
    )
    wanted = comparison.target_overlap or campaign.overlap
    if len(choices) < wanted or wanted >= campaign.redundancy_cap:
        return False
    top = Counter(choices).most_common(1)[0][1]
    if top / len(choices) >= DISAGREEMENT_SHARE:
        return False
    Comparison.objects.filter(pk=comparison.pk).update(target_overlap=wanted + 1, is_full=False)
    return True


def _transitivity_closers_create(*, campaign: Campaign) -> int:
    """Ask X vs Z of annotators whose own answers chain X > Y > Z where no X-Z item exists."""
    made = 0
    recent = (
        Judgment.objects.filter(campaign=campaign, superseded_by__isnull=True,
                                comparison__kind=Comparison.Kind.REGULAR,
                                choice__in=["A", "B"])
        .select_related("comparison")
        .order_by("-id")[: RECOMPUTE_EVERY * 4]
    )
    for judgment in recent:
        made += calibration_transitivity_closer_create(judgment=judgment) is not None
    return made


@transaction.atomic
def annotator_unpause(*, campaign: Campaign, annotator: AbstractBaseUser,
                      by: AbstractBaseUser) -> None:
    """Let a paused annotator work again; only gold answered from now on can re-pause them."""
    AnnotatorProfile.objects.filter(user=annotator).update(
        status=AnnotatorProfile.Status.ACTIVE,
        paused_reason=f"Un-paused by {by.get_username()}"[:300],
        unpaused_at=timezone.now(),
    )


def drift_alert_acknowledge(*, alert: DriftAlert, by: AbstractBaseUser) -> DriftAlert:
    if alert.acknowledged_at is None:
        alert.acknowledged_by = by
        alert.acknowledged_at = timezone.now()
        alert.save(update_fields=["acknowledged_by", "acknowledged_at"])
    return alert


def campaign_quality_recompute(*, campaign: Campaign) -> CampaignQuality:
    """Recompute and store every annotator's quality, the campaign's, and drift alerts."""
    # Heavy (numpy, crowd-kit): imported where the recompute runs, never in the web's import.
    from annotation import quality
    from annotation.selectors_frame import judgment_frame

    data = judgment_frame(campaign=campaign)
    n_annotators = len(data.annotator_ids)
    report = quality.quality_recompute(data.frame, n_annotators)  # one Dawid-Skene fit, shared
    stats, cstats = report.annotators, report.campaign
    _transitivity_closers_create(campaign=campaign)
    with transaction.atomic():
        for index, s in enumerate(stats):
            AnnotatorQuality.objects.update_or_create(
                campaign=campaign, annotator_id=data.annotator_ids[index],
                defaults=_annotator_fields(s),
            )
        campaign_quality, _ = CampaignQuality.objects.update_or_create(
            campaign=campaign, defaults=_campaign_fields(cstats)
        )
        _drift_alerts_create(campaign=campaign, data=data, ds=report.ds)
        for index, s in enumerate(stats):
            if (s.n_gold >= MIN_GOLD_FOR_PAUSE and s.gold_ci_high is not None
                    and s.gold_ci_high < campaign.accuracy_threshold):
                _pause_if_evidence_since_unpause(
                    campaign=campaign, annotator_id=data.annotator_ids[index]
                )
    return campaign_quality


def _annotator_fields(s) -> dict:
    names = [f.name for f in AnnotatorQuality._meta.concrete_fields
             if f.name not in ("id", "campaign", "annotator", "updated_at")]
    return {name: _plain(getattr(s, name, None)) for name in names}


def _campaign_fields(s) -> dict:
    names = [f.name for f in CampaignQuality._meta.concrete_fields
             if f.name not in ("id", "campaign", "updated_at")]
    return {name: _plain(getattr(s, name, None)) for name in names if hasattr(s, name)}


def _plain(value):
    """numpy scalars and NaN to what a JSON/float column stores."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _drift_alerts_create(*, campaign: Campaign, data: CampaignFrame,
                         ds: DawidSkeneFit | None = None) -> int:
    """Store new change points of the drift scan as alerts; return how many.

    With ``ds`` (the recompute's Dawid-Skene fit) accuracy is also watched on every judgment
    (``drift.peer_evidence``). One alert per episode: while a stream of an annotator has an
    open alert nothing new is raised on it (a persisting drift would otherwise alarm again after
    every CUSUM restart), and once it is acknowledged only a change that starts after the last
    reported alarm counts (``drift.first_new_alarm``).
    """
    from annotation import drift

    reported: dict[tuple[int, str], object] = {}
    open_streams: set[tuple[int, str]] = set()
    for annotator_id, stream, last, n_open in (
        DriftAlert.objects.filter(campaign=campaign).values("annotator_id", "stream")
        .annotate(last=Max(Coalesce("detected_at", "onset_at", "created_at")),
                  n_open=Count("id", filter=Q(acknowledged_at__isnull=True)))
        .values_list("annotator_id", "stream", "last", "n_open")
    ):
        reported[(annotator_id, stream)] = last
        if n_open:
            open_streams.add((annotator_id, stream))
    created = 0
    scans = drift.drift_scan_frame(data.frame, len(data.annotator_ids), ds=ds)
    for user_id, found in zip(data.annotator_ids, scans, strict=True):
        for stream, points in found.items():
            if (user_id, stream) in open_streams:
                continue
            timed = [(p, data.created_at[onset], data.created_at[alarm])
                     for p, onset, alarm in points]
            new = drift.first_new_alarm(timed, reported_until=reported.get((user_id, stream)))
            if new is None:
                continue
            point, onset_at, detected_at = new
            _, made = DriftAlert.objects.get_or_create(
                campaign=campaign, annotator_id=user_id, stream=stream,
                onset_index=int(point.onset_index),
                defaults={
                    "detector": point.detector,
                    "detected_index": int(point.detected_index),
                    "onset_at": onset_at,
                    "detected_at": detected_at,
                    "statistic": float(point.statistic),
                    "message": point.message[:300],
                },
            )
            created += int(made)
    return created
