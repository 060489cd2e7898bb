"""Shared builders for training tests: a simulated arithmetic campaign and its snapshot."""

from __future__ import annotations

from annotation.models import Campaign, Snapshot
from annotation.services.snapshots import snapshot_create
from evaluation.services import simulate_campaign, world_campaign_create


def world_snapshot(*, name: str = "arith-train", n_prompts: int = 30, pool: str = "expert:3",
                   seed: int = 0, method: str = "majority") -> Snapshot:
    """A simulated arithmetic campaign, fully annotated by ``pool``, and its snapshot."""
    campaign = world_campaign_create(world_name="arithmetic", name=name, n_prompts=n_prompts,
                                     seed=seed, overlap=3, calibration_rate=0.1,
                                     accuracy_threshold=0.0)
    Campaign.objects.filter(pk=campaign.pk).update(reshow_rate=0.0)
    campaign.refresh_from_db()
    simulate_campaign(campaign=campaign, pool=pool, seed=seed)
    return snapshot_create(campaign=campaign, method=method)
