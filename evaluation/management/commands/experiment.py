"""Run an alignment-gap experiment (evaluation/experiments.py) from flags."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from evaluation.experiments import (
    AGGREGATIONS,
    EVAL_CATEGORIES,
    NOISE_BASES,
    PRESSURE_METHODS,
    REWARDS,
)
from evaluation.worlds import world_names


class Command(BaseCommand):
    help = (
        "Simulate a pool on a world's campaign, snapshot it, inject label noise at each "
        "--epsilon, train the reward model(s), apply pressure to pi0's pools and measure the "
        "gap, for the baseline and each MAPS --variants entry. Prints progress; the last line is "
        "one JSON object: {spec_key, seconds, arms: [per (variant, epsilon): variant, lever, "
        "epsilon injected/measured/true, per pressure method the gap slope with its interval, "
        "the peak or \"no peak\", d*, and for a variant its slope and intercept change]}. "
        "With --queue it creates an Experiment job on the "
        "gpu queue instead and ends with {experiment_id, status, queue, spec_key, epsilons}."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--world", default="arithmetic", choices=world_names())
        parser.add_argument("--pool", default="crowd:6,expert:2",
                            help="Simulated pool, KIND:COUNT,... (expert, crowd, drifting, "
                                 "random).")
        parser.add_argument("--prompts", type=int, default=100, help="Campaign prompts.")
        parser.add_argument("--overlap", type=int, default=3, help="Judgments per comparison.")
        parser.add_argument("--aggregation", default="majority", choices=AGGREGATIONS)
        parser.add_argument("--epsilon", type=float, action="append",
                            help="Injected flip rate in [0, 0.5); repeat for a noise sweep "
                                 "(default: 0).")
        parser.add_argument("--noise-base", default="snapshot", choices=NOISE_BASES,
                            help="Flip the aggregated labels (snapshot) or labels oriented by "
                                 "the world's utility (truth: epsilon is exact).")
        parser.add_argument("--reward", default="trained", choices=REWARDS)
        parser.add_argument("--ensemble", type=int, default=1, help="Reward models (seeds).")
        parser.add_argument("--ensemble-rule", default="mean",
                            choices=("mean", "mean_minus_k_std", "min"))
        parser.add_argument("--pressure", action="append", choices=PRESSURE_METHODS,
                            help="Pressure method; repeat for both (default: both).")
        parser.add_argument("--eval-prompts", type=int, default=200,
                            help="Evaluation prompts of pi0's pools.")
        parser.add_argument("--samples", type=int, default=16, help="K samples per prompt.")
        parser.add_argument("--seeds", type=int, default=1, help="Seeds 0..N-1.")
        parser.add_argument("--n-boot", type=int, default=300, help="Bootstrap resamples.")
        parser.add_argument("--eval-categories", default="all", choices=EVAL_CATEGORIES,
                            help="Evaluation prompts: all categories (held-out ones too: the "
                                 "mirage split) or the training ones.")
        parser.add_argument("--variants", default="",
                            help="MAPS variants as JSON: [{\"name\": \"ens\", \"lever\": "
                                 "\"P\", \"overrides\": {\"ensemble_size\": 4, "
                                 "\"ensemble_rule\": \"min\"}}, ...].")
        parser.add_argument("--queue", action="store_true",
                            help="Queue an Experiment job on the gpu queue (a worker runs it; "
                                 "admin and /api/v1/experiments/ show it) instead of running "
                                 "here.")
        parser.add_argument("--name", default="", help="The queued experiment's name.")

    def handle(self, *args, **o) -> None:
        from evaluation.experiments import experiment_noise_sweep, result_headline, spec_from_dict
        from training.methods.base import ConfigError

        if o["seeds"] < 1:
            raise CommandError("--seeds must be >= 1")
        try:
            variants = json.loads(o["variants"]) if o["variants"] else []
        except json.JSONDecodeError as exc:
            raise CommandError(f"--variants is not JSON: {exc}") from exc
        try:
            spec = spec_from_dict({
                "world": o["world"], "pool": o["pool"], "n_prompts": o["prompts"],
                "overlap": o["overlap"], "aggregation": o["aggregation"],
                "noise_base": o["noise_base"], "reward": o["reward"],
                "ensemble_size": o["ensemble"], "ensemble_rule": o["ensemble_rule"],
                "pressure": list(dict.fromkeys(o["pressure"] or PRESSURE_METHODS)),
                "n_eval_prompts": o["eval_prompts"], "samples_per_prompt": o["samples"],
                "n_boot": o["n_boot"], "seeds": list(range(o["seeds"])),
                "eval_categories": o["eval_categories"], "variants": variants,
            })
        except (ConfigError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        epsilons = o["epsilon"] or [0.0]
        if o["queue"]:
            self._queue(spec, epsilons, name=o["name"])
            return

        def progress(stage: str, fraction: float) -> None:
            self.stderr.write(f"[{fraction:4.0%}] {stage}")
            sys.stderr.flush()

        try:
            results = experiment_noise_sweep(spec=spec, epsilons=epsilons, progress=progress)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for r in results:
            self.stdout.write(f"{r.variant} epsilon {r.epsilon_injected:g}: " + ", ".join(
                f"{m} gap slope {r.summary[m]['gap_slope_median']:.3f}"
                for m in spec.pressure) + f" ({r.seconds:.1f} s)")
        self.stdout.write(json.dumps({
            "spec_key": spec.key(), "seconds": round(sum(r.seconds for r in results), 3),
            "arms": [result_headline(r) for r in results],
        }))

    def _queue(self, spec, epsilons: list[float], *, name: str) -> None:
        from evaluation.experiment_jobs import (
            ExperimentConfigError,
            experiment_create,
            spec_as_json,
        )

        try:
            experiment = experiment_create(spec=spec_as_json(spec), epsilons=epsilons,
                                           name=name)
        except ExperimentConfigError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"queued experiment #{experiment.pk} on the {experiment.job_queue} "
                          f"queue ({len(experiment.epsilons)} arm(s))")
        self.stdout.write(json.dumps({
            "experiment_id": experiment.pk, "status": experiment.status,
            "queue": experiment.job_queue, "spec_key": spec.key(),
            "epsilons": experiment.epsilons,
        }))
