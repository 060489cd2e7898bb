from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import ApplicationError
from annotation.models import Campaign
from evaluation.services import simulate_campaign, simulation_summary
from evaluation.simulation import PRESETS, parse_pool


class Command(BaseCommand):
    help = (
        "Run simulated annotators on a campaign through the annotation services (or, with "
        "--http, the REST API of a running server). Safe to run again: annotators continue "
        "where they stopped. The last line is one JSON object: this run, and each annotator's "
        "true accuracy (against the world's utility), parameters and drift onset (a judgment "
        "number), and the campaign's true judgment-weighted error."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name (slug).")
        parser.add_argument("--pool", default="crowd:8,drifting:1,expert:2",
                            help=f"KIND:COUNT,... with kinds {', '.join(PRESETS)}.")
        parser.add_argument("--judgments", type=int, default=None,
                            help="Stop after this many judgments (default: until no work).")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--world", default=None,
                            help="World that scores the texts (default: the campaign's own).")
        parser.add_argument("--http", metavar="BASE_URL", default=None,
                            help="Go through the REST API at BASE_URL, e.g. http://127.0.0.1:8000")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, **o) -> None:
        campaign = Campaign.objects.filter(name=o["campaign"]).first()
        if campaign is None:
            raise CommandError(f"No campaign named {o['campaign']!r} (create one with seed_world).")
        try:
            pool = parse_pool(o["pool"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        from tqdm import tqdm

        bar = tqdm(total=o["judgments"], unit="judgment", file=sys.stderr,
                   disable=o["no_progress"], dynamic_ncols=True, mininterval=0.5)
        try:
            result = simulate_campaign(
                campaign=campaign, pool=pool, n_judgments=o["judgments"], seed=o["seed"],
                world_name=o["world"], http_base_url=o["http"], progress=bar.update,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        except OSError as exc:  # requests' connection errors derive from OSError
            raise CommandError(f"HTTP load mode failed against {o['http']}: {exc}") from exc
        finally:
            bar.close()
        rate = result.n_judgments / result.seconds if result.seconds else 0.0
        self.stdout.write(self.style.SUCCESS(
            f"{result.n_judgments} judgments on {campaign.name!r} in {result.seconds:.1f} s "
            f"({rate:.0f}/s); {'no work left' if result.exhausted else 'stopped at the limit'}."
        ))
        summary = simulation_summary(campaign=campaign, result=result, pool=o["pool"],
                                     seed=o["seed"])
        truth = {a["username"]: a for a in summary["annotators"]}
        for username, n in result.per_annotator.items():
            why = result.stopped.get(username, "")
            acc = truth.get(username, {}).get("true_accuracy")
            onset = truth.get(username, {}).get("drift_onset_judgment")
            self.stdout.write(
                f"  {username:<18} {n:>6}"
                + ("" if acc is None else f"  true accuracy {acc:.3f}")
                + ("" if onset is None else f"  drift from judgment #{onset}")
                + (f"  ({why})" if why else "")
            )
        error = summary["totals"]["true_error"]
        if error is not None:
            self.stdout.write(f"True judgment-weighted error of the campaign: {error:.4f}")
        self.stdout.write(json.dumps(summary, sort_keys=True, allow_nan=False))
