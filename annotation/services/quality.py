"""Quality, drift and pausing: persist what ``quality.py`` and ``drift.py`` compute.

Two paths. On every submit, ``quality_on_judgment`` does O(1) work: gold tallies, the Wilson
interval, the pause check, follow-up calibration items and adaptive redundancy, and counts the
campaign's judgments. Every GAPLAB_QUALITY_RECOMPUTE_EVERY judgments of a campaign (and on
demand) a ``QualityRecompute`` job runs the full recompute: Dawid-Skene, agreement,
Krippendorff's alpha, biases and the drift scan.

One owner per column: the submit path owns the gold tally (TALLY_FIELDS of AnnotatorQuality)
and CampaignTally; the recompute owns every other quality column.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.calibration import gold_correct
from annotation.models import (
    AnnotatorProfile,
    AnnotatorQuality,
    Campaign,
    CampaignQuality,
    CampaignTally,
    Comparison,
    DriftAlert,
    Judgment,
    QualityRecompute,
)
from annotation.quality import wilson_interval  # numpy only: cheap in the web process
from annotation.services.calibration import (
    calibration_reshow_create,
    calibration_transitivity_closer_create,
)
from annotation.services.jobs import (
    job_dispatch,
    job_fail,
    job_heartbeat,
    job_start,
    job_succeed,
)

if TYPE_CHECKING:
    from annotation.drift import ChangePoint
    from annotation.quality import DawidSkeneFit
    from annotation.selectors.frame import CampaignFrame

MIN_GOLD_FOR_PAUSE = 10
# AnnotatorQuality columns owned by the per-submit gold tally.
TALLY_FIELDS = frozenset({"n_gold", "gold_accuracy", "gold_ci_low", "gold_ci_high"})
# Adaptive redundancy asks for one more rater while the leading choice holds less than this
# share of the judgments.
DISAGREEMENT_SHARE = 2 / 3
_system_random = random.SystemRandom()


def quality_on_judgment(*, judgment: Judgment, rng: random.Random | None = None) -> None:
    """The per-submit update; runs inside the submit transaction, a few cheap queries."""
    rng = rng or _system_random
    comparison = judgment.comparison
    campaign = judgment.campaign
    ok = None
    if comparison.kind == Comparison.Kind.CALIBRATION:
        ok = gold_correct(judgment.choice, gold_choice=comparison.gold_choice,
                          gold_accepts=comparison.gold_accepts)
        if ok is not None:
            _gold_tally(campaign=campaign, annotator_id=judgment.annotator_id, correct=ok)
    if ok is None:
        # The annotator's row of the quality table from their first judgment on (the gold
        # tally makes it otherwise), so the table lists everyone who rated, with a live count,
        # before the first recompute. One INSERT ... ON CONFLICT DO NOTHING.
        AnnotatorQuality.objects.bulk_create(
            [AnnotatorQuality(campaign=campaign, annotator_id=judgment.annotator_id)],
            ignore_conflicts=True)
    if comparison.kind == Comparison.Kind.REGULAR:
        if campaign.reshow_rate > 0 and rng.random() < campaign.reshow_rate:
            calibration_reshow_create(judgment=judgment)
        # Only once the wanted judgments are all claimed can they disagree enough to matter.
        wanted = comparison.target_overlap or campaign.overlap
        if campaign.redundancy_cap > wanted and comparison.claimed_count >= wanted:
            comparison_redundancy_adapt(comparison=comparison, campaign=campaign)
    # The full recompute (which also makes transitivity closers) runs off the request path,
    # every GAPLAB_QUALITY_RECOMPUTE_EVERY judgments of this campaign (counted per campaign,
    # last in the transaction so that the tally's row lock is held only until commit).
    every = settings.GAPLAB_QUALITY_RECOMPUTE_EVERY
    judgments = _campaign_tally_increment(campaign_id=campaign.pk)
    if judgments % every == 0:
        quality_recompute_request(campaign=campaign, at_judgment=judgments)


def _campaign_tally_increment(*, campaign_id: int) -> int:
    """Add one to the campaign's judgment count and return the new count (one statement).

    One row per campaign, so a campaign's concurrent submits queue on its lock from this
    statement to commit (it runs last, so that is short). Chosen over the global judgment id
    (no lock), which fired a campaign's recompute at the mercy of other campaigns' traffic.
    """
    table = CampaignTally._meta.db_table
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute(
                f"UPDATE {table} SET judgments = judgments + 1 WHERE campaign_id = %s "
                "RETURNING judgments", [campaign_id],
            )
            row = cursor.fetchone()
            if row is not None:
                return int(row[0])
            # The first judgment of a campaign: make its row (a racing first judgment may
            # make it too; ignore_conflicts keeps one), then count.
            CampaignTally.objects.bulk_create([CampaignTally(campaign_id=campaign_id)],
                                              ignore_conflicts=True)
    raise RuntimeError("campaign tally row vanished")


def quality_recompute_request(*, campaign: Campaign,
                              at_judgment: int | None = None) -> QualityRecompute:
    """Queue a full recompute of the campaign, joining one that is already queued.

    At most one recompute waits per campaign (a partial unique index), so a burst of requests
    costs one run. It goes through the outbox: it runs even if the broker is down right now.
    """
    if at_judgment is None:  # on demand; the submit path passes the count it just made
        at_judgment = CampaignTally.objects.filter(campaign=campaign).values_list(
            "judgments", flat=True).first() or 0
    try:
        with transaction.atomic():  # a savepoint: the conflict below must not end the caller's
            job = QualityRecompute.objects.create(campaign=campaign,
                                                  requested_at_judgment=at_judgment)
            job_dispatch(job)
            return job
    except IntegrityError:  # one is already queued (quality_recompute_one_queued): join it
        return (QualityRecompute.objects
                .filter(campaign=campaign, status=QualityRecompute.Status.QUEUED).first()
                or QualityRecompute.objects.filter(campaign=campaign).order_by("-id").first())


def quality_recompute_run(*, job_id: int) -> QualityRecompute | None:
    """Run a queued recompute (a job: idempotent under redelivery, reaped if its worker dies)."""
    job = job_start(QualityRecompute, job_id=job_id)
    if job is None:
        return None
    with job_heartbeat(job):
        try:
            campaign_quality_recompute(campaign=job.campaign)
        except Exception as exc:
            job_fail(job, reason=f"{type(exc).__name__}: {exc}")
            raise
    job_succeed(job)
    return job


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
    """Ask for one more rater when the people's judgments on a comparison disagree, up to the cap.

    An import's own label (a dataset annotator's judgment) is not a rater: left out.
    """
    choices = list(
        Judgment.objects.filter(comparison=comparison, superseded_by__isnull=True)
        .exclude(annotator__annotator_profile__kind=AnnotatorProfile.Kind.DATASET)
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
    """Ask X vs Z of annotators whose own answers chain X > Y > Z where no X-Z item exists.

    People only: a dataset's labels are never issued work (and right after a bulk import,
    checking 200 of them took 12 s).
    """
    made = 0
    recent = (
        Judgment.objects.filter(campaign=campaign, superseded_by__isnull=True,
                                comparison__kind=Comparison.Kind.REGULAR,
                                choice__in=["A", "B"])
        .exclude(annotator__annotator_profile__kind=AnnotatorProfile.Kind.DATASET)
        .select_related("comparison")
        .order_by("-id")[: settings.GAPLAB_QUALITY_RECOMPUTE_EVERY * 4]
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
    from annotation.selectors.frame import judgment_frame

    data = judgment_frame(campaign=campaign)
    n_annotators = len(data.annotator_ids)
    # One gold-anchored Dawid-Skene fit, shared by competence, epsilon, biases and drift.
    report = quality.quality_recompute(data.frame, n_annotators)
    stats, cstats = report.annotators, report.campaign
    _transitivity_closers_create(campaign=campaign)
    with transaction.atomic():
        for index, s in enumerate(stats):
            fields = _annotator_fields(s)
            # The gold tally has one owner, the submit path (_gold_tally); the recompute
            # fills it only for a row the tally has not made yet.
            AnnotatorQuality.objects.update_or_create(
                campaign=campaign, annotator_id=data.annotator_ids[index],
                defaults={k: v for k, v in fields.items() if k not in TALLY_FIELDS},
                create_defaults=fields,
            )
        campaign_quality, _ = CampaignQuality.objects.update_or_create(
            campaign=campaign, defaults={**_campaign_fields(cstats), "fits": report.fits}
        )
        _drift_alerts_create(campaign=campaign, data=data, ds=report.ds)
        _speed_alerts_create(campaign=campaign, data=data)
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
            frame_rows = {id(p): (onset, alarm) for p, onset, alarm in points}
            new = drift.first_new_alarm(timed, reported_until=reported.get((user_id, stream)))
            if new is None:
                continue
            point, onset_at, detected_at = new
            onset_judgment, detected_judgment = _alert_judgment_numbers(
                data=data, rows=frame_rows[id(point)])
            _, made = DriftAlert.objects.get_or_create(
                campaign=campaign, annotator_id=user_id, stream=stream,
                onset_index=int(point.onset_index),
                defaults={
                    "detector": point.detector,
                    "detected_index": int(point.detected_index),
                    "onset_at": onset_at,
                    "detected_at": detected_at,
                    "onset_judgment": onset_judgment,
                    "detected_judgment": detected_judgment,
                    "statistic": float(point.statistic),
                    "message": _message_in_judgment_numbers(
                        point, onset_judgment=onset_judgment,
                        detected_judgment=detected_judgment)[:300],
                },
            )
            created += int(made)
    return created


def _speed_settings() -> dict:
    """The speed flag's knobs (``quality.speed_flag``): the GAPLAB_SPEED_* settings."""
    return {
        "min_seconds": settings.GAPLAB_SPEED_MIN_SECONDS,
        "chars_per_second": settings.GAPLAB_SPEED_CHARS_PER_SECOND,
        "window": settings.GAPLAB_SPEED_WINDOW,
        "share": settings.GAPLAB_SPEED_SHARE,
        "min_judgments": settings.GAPLAB_SPEED_MIN_JUDGMENTS,
    }


def _speed_alerts_create(*, campaign: Campaign, data: CampaignFrame) -> int:
    """Raise a SPEED alert for each annotator whose judgments became mostly too fast to read.

    The same path and episode rule as drift (``_drift_alerts_create``): stored as a DriftAlert,
    listed and acknowledged with them, nothing new while one is open, and after it is
    acknowledged only a run after its alarm counts. Like drift alerts it pauses nobody: pausing
    stays with the gold threshold. Its indices count the annotator's current judgments in the
    campaign (0-based); the alert also stores their judgment numbers. Returns how many were made.
    """
    from django.db.models.functions import Length

    from annotation import quality

    frame = data.frame
    if len(frame) == 0:
        return 0
    stream = DriftAlert.Stream.SPEED
    reported: dict[int, object] = {}
    open_ids: set[int] = set()
    for annotator_id, last, n_open in (
        DriftAlert.objects.filter(campaign=campaign, stream=stream).values("annotator_id")
        .annotate(last=Max(Coalesce("detected_at", "onset_at", "created_at")),
                  n_open=Count("id", filter=Q(acknowledged_at__isnull=True)))
        .values_list("annotator_id", "last", "n_open")
    ):
        reported[annotator_id] = last
        if n_open:
            open_ids.add(annotator_id)
    # Characters of both responses per judgment: the frame keeps only their difference.
    chars_of = dict(
        Judgment.objects.filter(campaign=campaign, superseded_by__isnull=True)
        .annotate(chars=Coalesce(Length("comparison__response_a__text"), 0)
                  + Coalesce(Length("comparison__response_b__text"), 0))
        .values_list("pk", "chars")
    )
    chars = np.array([chars_of.get(int(j), 0) for j in data.judgment_ids], float)
    knobs = _speed_settings()
    order = np.argsort(frame.annotator, kind="stable")
    bounds = np.cumsum(np.bincount(frame.annotator, minlength=len(data.annotator_ids)))
    created = 0
    for code, user_id in enumerate(data.annotator_ids):
        if user_id in open_ids:
            continue
        rows = order[(bounds[code - 1] if code else 0):bounds[code]]
        # Regular items only: degraded pairs and re-shows are meant to be answered quickly.
        rows = rows[~frame.is_calibration[rows]]
        since = reported.get(user_id)
        start = 0 if since is None else sum(data.created_at[r] <= since for r in rows)
        flag = quality.speed_flag(frame.seconds[rows], chars[rows], start=start, **knobs)
        if flag is None:
            continue
        onset_row, alarm_row = int(rows[flag.onset]), int(rows[flag.alarm])
        onset_judgment, detected_judgment = _alert_judgment_numbers(
            data=data, rows=(onset_row, alarm_row))
        # The run's judgment numbers need not be consecutive (calibration items are left out,
        # corrections are counted): name its ends only.
        span = (f"from #{onset_judgment} to #{detected_judgment}"
                if onset_judgment is not None and detected_judgment is not None else "")
        message = (
            f"{flag.n_fast} of {flag.n} regular judgments{' ' if span else ''}{span} took less "
            f"than the time to read "
            f"both responses (median {flag.median_seconds:.2f} s against a floor of "
            f"{flag.median_floor:.1f} s)"
        )
        _, made = DriftAlert.objects.get_or_create(
            campaign=campaign, annotator_id=user_id, stream=stream, onset_index=flag.onset,
            defaults={
                "detector": "reading_floor",
                "detected_index": flag.alarm,
                "onset_at": data.created_at[onset_row],
                "detected_at": data.created_at[alarm_row],
                "onset_judgment": onset_judgment,
                "detected_judgment": detected_judgment,
                "statistic": flag.share,
                "message": message[:300],
            },
        )
        created += int(made)
    return created


def _alert_judgment_numbers(*, data: CampaignFrame,
                            rows: tuple[int, int]) -> tuple[int | None, int | None]:
    """The annotator's judgment numbers (1-based) of an alert's onset and alarm frame rows.

    The scan's indices count one stream's observations (gold items, A/B answers, ...) and its
    frame rows count the whole campaign's current judgments; neither is what the annotator's
    own history says, which is what every chart and table shows
    (``selectors.quality.judgment_numbers``). One query.
    """
    from annotation.selectors.quality import judgment_numbers

    ids = [int(data.judgment_ids[row]) for row in rows]
    numbers = judgment_numbers(judgment_ids=ids)
    return numbers.get(ids[0]), numbers.get(ids[1])


def _message_in_judgment_numbers(point: ChangePoint, *, onset_judgment: int | None,
                                 detected_judgment: int | None) -> str:
    """The detector's message with its stream positions ("#12", 0-based in the stream) restated
    as the annotator's judgment numbers, so the alert table never shows two numberings side by
    side. A message without those positions is returned as it is."""
    wanted = {}
    if onset_judgment is not None:
        wanted[int(point.onset_index)] = onset_judgment
    if detected_judgment is not None:
        wanted[int(point.detected_index)] = detected_judgment

    def restate(match: re.Match) -> str:
        index = int(match.group(1))
        return f"judgment #{wanted[index]}" if index in wanted else match.group(0)

    return re.sub(r"#(\d+)\b", restate, point.message)
