"""Seed the demo's training: tiny models, a snapshot and an export of the demo campaign, the
reference policy π₀ (SFT, run here), then a reward model and a small DPO β sweep queued for the
gpu worker, so the run pages show live progress and then finished runs (issue 8, "Demo")."""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Campaign, Snapshot
from training.models import Method, RegisteredModel, TrainingRun

DEMO_CAMPAIGN = "arithmetic-demo"
DEMO_MODELS = "tiny-arithmetic"
DPO_BETAS = [0.05, 0.2, 1.0]


class Command(BaseCommand):
    help = ("Build tiny models from the arithmetic world, snapshot the demo campaign (gold-"
            "anchored Dawid-Skene), train pi0 by SFT here, and queue a reward model and a "
            "DPO beta sweep on the gpu queue. Safe to rerun: does nothing once runs exist.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", default=DEMO_CAMPAIGN)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, campaign: str, seed: int, **options) -> None:
        from evaluation.corpus import world_corpus
        from training.services.models import tiny_models_build
        from training.services.runs import run_create, run_execute, sweep_create

        if TrainingRun.objects.exists():
            self.stdout.write("Training runs exist; nothing to seed.")
            return
        target = Campaign.objects.filter(name=campaign).first()
        if target is None:
            raise CommandError(f"No campaign {campaign!r}: run demo_world first.")
        started = time.monotonic()
        tiny = tiny_models_build(corpus=world_corpus("arithmetic", n_prompts=500, seed=seed),
                                 name=DEMO_MODELS, seed=seed)
        from annotation.services.snapshots import snapshot_create

        snapshot = snapshot_create(campaign=target, method=Snapshot.Method.DAWID_SKENE)
        # And an export of the same campaign, so the data page (/data/) lists one of each.
        from annotation.services.exports import preference_export_create, preference_export_run

        export = preference_export_create(campaign=target, fmt="jsonl", requested_by=None)
        preference_export_run(export_id=export.pk)
        # pi0 first, here: DPO needs it as its base and reference.
        sft = run_create(method=Method.SFT, snapshot=snapshot, base_model=tiny["policy"],
                         seed=seed, name="demo: pi0 by SFT on the world's replies")
        run_execute(run_id=sft.pk)
        sft.refresh_from_db()
        if sft.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"SFT failed: {sft.error[-2000:]}")
        pi0 = RegisteredModel.objects.get(produced_by=sft)
        rm = run_create(method=Method.REWARD_MODEL, snapshot=snapshot,
                        base_model=tiny["reward"], seed=seed, name="demo: reward model")
        sweep = sweep_create(method=Method.DPO, snapshot=snapshot, base_model=pi0,
                             reference_model=pi0, grid={"beta": DPO_BETAS}, seed=seed,
                             name="demo: DPO beta sweep")
        self.stdout.write(f"Demo training: pi0 #{pi0.pk} in {time.monotonic() - started:.0f} s; "
                          f"queued reward model run #{rm.pk} and DPO sweep #{sweep.pk} "
                          f"({len(DPO_BETAS)} runs) for the gpu worker.")
        self.stdout.write(json.dumps({"snapshot": snapshot.pk, "pi0": pi0.pk,
                                      "reward_model_run": rm.pk, "sweep": sweep.pk}))
