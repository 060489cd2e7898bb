from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import ApplicationError
from annotation.models import Campaign, Comparison
from evaluation.services import campaign_world_name, world_campaign_create
from evaluation.worlds import world_names


class Command(BaseCommand):
    help = (
        "Create an annotation campaign from a world (prompts, candidate replies, comparisons, "
        "calibration items). Safe to run again: an existing campaign of that world is left as is."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--world", default="arithmetic", choices=world_names())
        parser.add_argument("--campaign", required=True, help="Campaign name (slug).")
        parser.add_argument("--prompts", type=int, default=200, help="Regular prompts.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--pairs-per-prompt", type=int, default=2)
        parser.add_argument("--overlap", type=int, default=3, help="Judgments per comparison.")
        parser.add_argument("--calibration-rate", type=float, default=0.1)
        parser.add_argument("--calibration-items", type=int, default=None,
                            help="Calibration items (default: rate x regular comparisons).")
        parser.add_argument("--include-held-out", action="store_true",
                            help="Also use the world's held-out categories.")
        parser.add_argument("--title", default="")

    def handle(self, *args, **o) -> None:
        existing = Campaign.objects.filter(name=o["campaign"]).first()
        if existing is not None:
            world = campaign_world_name(campaign=existing)
            if world != o["world"]:
                raise CommandError(
                    f"Campaign {existing.name!r} exists and was not built from the "
                    f"{o['world']!r} world ({world or 'not from a world'}); pick another name."
                )
            self.stdout.write(f"Campaign {existing.name!r} already exists "
                              f"({existing.comparisons.count()} comparisons); nothing to do.")
            return
        try:
            campaign = world_campaign_create(
                world_name=o["world"], name=o["campaign"], n_prompts=o["prompts"],
                seed=o["seed"], overlap=o["overlap"], calibration_rate=o["calibration_rate"],
                pairs_per_prompt=o["pairs_per_prompt"], n_calibration=o["calibration_items"],
                include_held_out=o["include_held_out"], title=o["title"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        n_regular = campaign.comparisons.filter(kind=Comparison.Kind.REGULAR).count()
        n_calibration = campaign.comparisons.filter(kind=Comparison.Kind.CALIBRATION).count()
        self.stdout.write(self.style.SUCCESS(
            f"Created campaign {campaign.name!r} (id {campaign.pk}) from the {o['world']} world: "
            f"{campaign.prompts.count()} prompts, {n_regular} regular comparisons, "
            f"{n_calibration} calibration items."
        ))
