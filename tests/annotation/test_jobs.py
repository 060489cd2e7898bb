"""Jobs as rows: the outbox, job_start's idempotence, the reaper, export limits and retention,
and the per-campaign quality recompute. Real database; time is passed in, never slept."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from annotation.models import (
    CampaignTally,
    JobStatus,
    OutboxMessage,
    PreferenceExport,
    QualityRecompute,
)
from annotation.services import assignment_issue_next, judgment_submit
from annotation.services.exports import preference_export_create, preference_exports_purge
from annotation.services.jobs import job_start, job_succeed, jobs_reap
from annotation.services.quality import quality_recompute_request
from tests.factories import CampaignFactory, ComparisonFactory, make_users


@pytest.fixture
def export_campaign(db):
    campaign = CampaignFactory()
    ComparisonFactory.create_batch(2, campaign=campaign)
    return campaign


def test_export_goes_through_the_outbox_and_runs_once(export_campaign, cast, settings,
                                                      tmp_path, django_capture_on_commit_callbacks):
    settings.GAPLAB_EXPORT_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        export = preference_export_create(campaign=export_campaign, fmt="jsonl",
                                          requested_by=cast["researcher"])
    export.refresh_from_db()
    message = OutboxMessage.objects.get(task=PreferenceExport.job_task, args=[export.pk])
    assert message.sent_at is not None and message.attempts == 1
    assert (export.status, export.attempts) == (JobStatus.SUCCEEDED, 1)
    assert Path(export.path).exists() and export.worker
    # A redelivered message finds the job finished and does nothing.
    assert job_start(PreferenceExport, job_id=export.pk) is None
    export.refresh_from_db()
    assert export.attempts == 1


def test_without_commit_the_message_waits_unsent(export_campaign, cast):
    export = preference_export_create(campaign=export_campaign, fmt="jsonl",
                                      requested_by=cast["researcher"])
    message = OutboxMessage.objects.get(args=[export.pk])
    assert message.sent_at is None and export.status == JobStatus.QUEUED


def _running(export_campaign, *, heartbeat_age_s: float, attempts: int = 1):
    now = timezone.now()
    return PreferenceExport.objects.create(
        campaign=export_campaign, status=JobStatus.RUNNING, attempts=attempts,
        started_at=now - timedelta(seconds=heartbeat_age_s + 1),
        heartbeat_at=now - timedelta(seconds=heartbeat_age_s), worker="gone-host:4242",
    )


def test_reaper_requeues_a_job_whose_heartbeat_stopped(export_campaign, settings):
    settings.GAPLAB_JOB_STALE_SECONDS = 30
    lost = _running(export_campaign, heartbeat_age_s=31)
    live = _running(export_campaign, heartbeat_age_s=5)
    counts = jobs_reap()
    assert counts["requeued"] == 1 and counts["failed"] == 0
    lost.refresh_from_db()
    live.refresh_from_db()
    assert lost.status == JobStatus.QUEUED
    assert "gone-host:4242 lost" in lost.error and "Re-queued" in lost.error
    assert OutboxMessage.objects.filter(args=[lost.pk], sent_at__isnull=True).exists()
    assert live.status == JobStatus.RUNNING
    assert not OutboxMessage.objects.filter(args=[live.pk]).exists()
    # The dead attempt can no longer finish the job; the next start is attempt 2.
    assert job_succeed(lost, row_count=1) is False
    restarted = job_start(PreferenceExport, job_id=lost.pk)
    assert restarted is not None and restarted.attempts == 2


def test_reaper_fails_a_lost_job_after_its_last_attempt(export_campaign, settings):
    settings.GAPLAB_JOB_STALE_SECONDS = 30
    lost = _running(export_campaign, heartbeat_age_s=300, attempts=3)
    assert jobs_reap()["failed"] == 1
    lost.refresh_from_db()
    assert lost.status == JobStatus.FAILED and lost.finished_at is not None
    assert "no heartbeat since" in lost.error and "Not retried" in lost.error


def test_a_live_run_is_not_started_twice(export_campaign, settings):
    settings.GAPLAB_JOB_STALE_SECONDS = 30
    live = _running(export_campaign, heartbeat_age_s=2)
    assert job_start(PreferenceExport, job_id=live.pk) is None
    live.refresh_from_db()
    assert live.attempts == 1


def test_reaper_redispatches_a_queued_job_whose_message_was_lost(export_campaign, settings):
    settings.GAPLAB_JOB_REDISPATCH_SECONDS = 600
    old = PreferenceExport.objects.create(campaign=export_campaign,
                                          queued_at=timezone.now() - timedelta(seconds=601))
    fresh = PreferenceExport.objects.create(campaign=export_campaign)
    assert jobs_reap()["redispatched"] == 1
    assert OutboxMessage.objects.filter(args=[old.pk]).count() == 1
    assert not OutboxMessage.objects.filter(args=[fresh.pk]).exists()


def test_export_limits_answer_429_with_retry_after(export_campaign, client_for, settings):
    settings.GAPLAB_EXPORT_MAX_ACTIVE = 2
    client = client_for("researcher")
    url = f"/api/campaigns/{export_campaign.pk}/exports/"
    codes = [client.post(url, {"format": "jsonl"}).status_code for _ in range(2)]
    assert codes == [202, 202]  # not run: on_commit never fires inside the test transaction
    refused = client.post(url, {"format": "jsonl"})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "queued or running" in refused.json()["detail"]
    assert PreferenceExport.objects.count() == 2


def test_hourly_export_limit(export_campaign, cast, settings):
    settings.GAPLAB_EXPORT_PER_HOUR = 3
    for _ in range(3):
        PreferenceExport.objects.create(campaign=export_campaign, status=JobStatus.SUCCEEDED,
                                        requested_by=cast["admin"])
    from annotation.errors import RateLimitedError

    with pytest.raises(RateLimitedError) as caught:
        preference_export_create(campaign=export_campaign, fmt="jsonl",
                                 requested_by=cast["admin"])
    assert 0 < caught.value.retry_after <= 3600


def test_retention_deletes_old_files_and_keeps_the_rows(export_campaign, settings, tmp_path,
                                                        client_for):
    settings.GAPLAB_EXPORT_RETENTION_DAYS = 7
    old_file, new_file = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old_file.write_text("{}\n")
    new_file.write_text("{}\n")
    now = timezone.now()
    old = PreferenceExport.objects.create(campaign=export_campaign, status=JobStatus.SUCCEEDED,
                                          path=str(old_file), finished_at=now - timedelta(days=8))
    new = PreferenceExport.objects.create(campaign=export_campaign, status=JobStatus.SUCCEEDED,
                                          path=str(new_file), finished_at=now - timedelta(days=1))
    assert preference_exports_purge() == 1
    assert not old_file.exists() and new_file.exists()
    old.refresh_from_db()
    assert old.purged_at is not None
    gone = client_for("researcher").get(f"/api/exports/{old.pk}/download/")
    assert gone.status_code in (404, 410)
    kept = client_for("researcher").get(f"/api/exports/{new.pk}/download/")
    assert kept.status_code == 200


def _judge(campaign, user, n: int, key: str):
    for i in range(n):
        assignment = assignment_issue_next(campaign=campaign, annotator=user)
        judgment_submit(assignment=assignment, annotator=user, choice="A", strength=2,
                        seconds_spent=3.0, idempotency_key=f"{key}-{i}")


def test_recompute_is_requested_per_campaign_however_judgments_interleave(db, settings):
    """Judgments alternate between two campaigns: each campaign gets its own recompute after
    every 4 of its own judgments (a global id modulus would starve one of them)."""
    settings.GAPLAB_QUALITY_RECOMPUTE_EVERY = 4
    first, second = CampaignFactory(overlap=1), CampaignFactory(overlap=1)
    ComparisonFactory.create_batch(8, campaign=first)
    ComparisonFactory.create_batch(8, campaign=second)
    (user,) = make_users(1)
    for i in range(8):
        _judge(first, user, 1, f"first-{i}")
        _judge(second, user, 1, f"second-{i}")
    for campaign in (first, second):
        assert CampaignTally.objects.get(campaign=campaign).judgments == 8
        # One waits per campaign: the 8th judgment's request joined the 4th's.
        jobs = QualityRecompute.objects.filter(campaign=campaign)
        assert [j.status for j in jobs] == [JobStatus.QUEUED]
        assert jobs[0].requested_at_judgment == 4


def test_a_second_recompute_request_joins_the_queued_one(db):
    campaign = CampaignFactory()
    one = quality_recompute_request(campaign=campaign)
    two = quality_recompute_request(campaign=campaign)
    assert one.pk == two.pk
    assert QualityRecompute.objects.filter(campaign=campaign).count() == 1
    assert OutboxMessage.objects.filter(task=QualityRecompute.job_task).count() == 1
    # Once it runs, a new request queues a new one.
    started = job_start(QualityRecompute, job_id=one.pk)
    assert started is not None
    three = quality_recompute_request(campaign=campaign)
    assert three.pk != one.pk and three.status == JobStatus.QUEUED


def test_recompute_job_runs_and_leaves_the_gold_tally_to_its_owner(
        db, django_capture_on_commit_callbacks):
    from annotation.models import AnnotatorQuality
    from annotation.services.quality import quality_recompute_run
    from tests.factories import CalibrationFactory

    campaign = CampaignFactory(calibration_rate=1.0, overlap=1)
    ComparisonFactory.create_batch(3, campaign=campaign)
    CalibrationFactory.create_batch(2, campaign=campaign, gold_choice="B")
    (user,) = make_users(1)
    _judge(campaign, user, 4, "tally")
    tally = AnnotatorQuality.objects.get(campaign=campaign, annotator=user)
    assert tally.n_gold == 2 and tally.gold_accuracy == 0.0
    # The tally says 2 gold items; pretend a submit raced the recompute and counted a third.
    AnnotatorQuality.objects.filter(pk=tally.pk).update(n_gold=3)
    job = quality_recompute_request(campaign=campaign)
    ran = quality_recompute_run(job_id=job.pk)
    assert ran is not None and ran.status == JobStatus.SUCCEEDED
    tally.refresh_from_db()
    assert tally.n_gold == 3  # not overwritten by the recompute's own count
    assert tally.n_judgments == 4  # the recompute's columns are written


def test_a_lost_recompute_gives_way_to_one_already_queued(db, settings):
    """One recompute may wait per campaign: re-queueing a lost one beside a queued one would
    break that rule, so the lost one is cancelled with the reason and the queued one stands."""
    settings.GAPLAB_JOB_STALE_SECONDS = 30
    campaign = CampaignFactory()
    now = timezone.now()
    lost = QualityRecompute.objects.create(
        campaign=campaign, status=JobStatus.RUNNING, attempts=1, worker="gone:1",
        started_at=now - timedelta(seconds=100), heartbeat_at=now - timedelta(seconds=90))
    waiting = QualityRecompute.objects.create(campaign=campaign)
    export = _running(ComparisonFactory().campaign, heartbeat_age_s=90)
    counts = jobs_reap()
    assert counts == {"requeued": 1, "failed": 1, "redispatched": 0}
    lost.refresh_from_db()
    waiting.refresh_from_db()
    export.refresh_from_db()
    assert lost.status == JobStatus.CANCELLED and "queued since then" in lost.error
    assert waiting.status == JobStatus.QUEUED
    assert export.status == JobStatus.QUEUED  # the reap went on after the conflict
