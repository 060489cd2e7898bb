from __future__ import annotations

import time
from dataclasses import replace

from django.core.management.base import BaseCommand

from annotation.models import Campaign
from annotation.services.quality import campaign_quality_recompute
from evaluation.services import simulate_campaign, world_campaign_create
from evaluation.simulation import CROWD, EXPERT, DriftSchedule, PoolMember

DEMO_CAMPAIGN = "arithmetic-demo"
# One drifting annotator among a noisy, length-biased crowd and one expert, so that every
# dashboard (annotator table, timeline with a change point, campaign page) has data at once.
# The drifter is a careful rater who, after 60 judgments, starts clicking at random (a
# speeder). Drift alerts mean change from the annotator's own level; in a
# 1,500-judgment demo among noisy peers a milder fall (the `drifting` preset's 74% -> 53%) is
# not caught reliably (benchmarks/README.md gives the delays), so the demo shows a clear one.
DEMO_POOL = [
    PoolMember("crowd", 3, CROWD),
    PoolMember("drifting", 1, replace(EXPERT, drift=DriftSchedule(t0=60, random_rate=1.0))),
    PoolMember("expert", 1, EXPERT),
]


class Command(BaseCommand):
    help = "Seed the arithmetic world campaign and run a simulated crowd on it (safe to rerun)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--judgments", type=int, default=1500)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, judgments: int, seed: int, **options) -> None:
        if Campaign.objects.filter(name=DEMO_CAMPAIGN).exists():
            self.stdout.write(f"Campaign {DEMO_CAMPAIGN!r} exists; nothing to seed.")
            return
        started = time.monotonic()
        campaign = world_campaign_create(
            world_name="arithmetic", name=DEMO_CAMPAIGN, n_prompts=200, seed=seed, overlap=3,
            # A high gold rate lets the drift detector see the drifting annotator in a short run.
            calibration_rate=0.35, title="Arithmetic world (simulated crowd)",
        )
        result = simulate_campaign(campaign=campaign, pool=DEMO_POOL, n_judgments=judgments,
                                   seed=seed)
        quality = campaign_quality_recompute(campaign=campaign)
        self.stdout.write(
            f"Seeded {DEMO_CAMPAIGN!r}: {result.n_judgments} simulated judgments, "
            f"alpha {quality.alpha_nominal or float('nan'):.2f}, "
            f"{campaign.alerts.count()} drift alert(s), {time.monotonic() - started:.0f} s."
        )
