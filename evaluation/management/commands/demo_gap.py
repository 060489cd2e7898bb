"""Seed the demo's first noise-vs-gap experiment and run it here, so the researchers' gap
dashboard has points the first time it opens (issue 9, "Demo").

The experiment goes through the same path as one an admin queues (``experiment_create``
validates and stores it; ``experiment_execute`` runs one attempt), only in this process instead
of on the gpu worker: the demo's worker is busy with the training runs ``demo_training`` queued.
"""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from evaluation.models import Experiment

DEMO_NAME = "demo: annotation noise vs gap (arithmetic, crowd)"
DEMO_EPSILONS = [0.0, 0.1, 0.2, 0.3]
# A crowd-heavy pool (about 25% judgment error, length- and agreement-biased) on a small
# campaign; tilting and best-of-n over pi0's pools cost seconds, the reward models most of it.
DEMO_SPEC = {
    "world": "arithmetic", "pool": "crowd:6,expert:2", "n_prompts": 60, "overlap": 3,
    "aggregation": "dawid_skene", "noise_base": "snapshot", "reward": "trained",
    "pressure": ["tilting", "best_of_n"], "n_eval_prompts": 150, "samples_per_prompt": 16,
    "n_boot": 200, "seeds": [0],
}


class Command(BaseCommand):
    help = ("Create and run the demo's noise-vs-gap experiment (four injected flip rates on a "
            "crowd pool of the arithmetic world). Safe to rerun: does nothing once one exists.")

    def handle(self, *args, **options) -> None:
        from evaluation.experiment_jobs import experiment_create, experiment_execute

        if Experiment.objects.exists():
            self.stdout.write("An experiment exists; nothing to seed.")
            return
        started = time.monotonic()
        experiment = experiment_create(spec=DEMO_SPEC, epsilons=DEMO_EPSILONS, name=DEMO_NAME)
        experiment_execute(experiment_id=experiment.pk)
        experiment.refresh_from_db()
        if experiment.status != Experiment.Status.SUCCEEDED:
            raise CommandError(f"The demo experiment {experiment.status}: "
                               f"{experiment.error[-2000:]}")
        self.stdout.write(f"Demo experiment #{experiment.pk}: {len(DEMO_EPSILONS)} noise arms "
                          f"in {time.monotonic() - started:.0f} s.")
        self.stdout.write(json.dumps({"experiment": experiment.pk,
                                      "arms": experiment.headline.get("arms", [])}))
