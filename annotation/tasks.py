from __future__ import annotations

from celery import shared_task


@shared_task(name="annotation.preference_export_run", acks_late=True)
def preference_export_run(export_id: int) -> int:
    """Thin task: run the export service (idempotent, so late acks are safe)."""
    from annotation.services.exports import preference_export_run as run

    return run(export_id=export_id).row_count or 0


@shared_task(name="annotation.campaign_quality_recompute", acks_late=True)
def campaign_quality_recompute(campaign_id: int) -> None:
    """Thin task: full quality recompute and drift scan (idempotent: it rewrites the rows)."""
    from annotation.models import Campaign
    from annotation.services.quality import campaign_quality_recompute as recompute

    recompute(campaign=Campaign.objects.get(pk=campaign_id))
