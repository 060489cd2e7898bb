from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.importers import ImportFileError
from annotation.models import Campaign
from annotation.services import campaign_create
from annotation.services.imports import comparisons_import_file


class Command(BaseCommand):
    help = "Import comparisons from JSONL, CSV or a Hugging Face dataset; all rows or none."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--campaign", required=True, help="Campaign name (slug).")
        parser.add_argument("--format", choices=["jsonl", "csv", "dataset"], default=None)
        parser.add_argument("--create", action="store_true",
                            help="Create the campaign with default settings if it is missing.")

    def handle(self, *args, path: Path, campaign: str, format: str | None, create: bool,
               **options) -> None:
        target = Campaign.objects.filter(name=campaign).first()
        if target is None and not create:
            raise CommandError(f"No campaign named {campaign!r} (use --create to make it).")
        try:
            # One transaction: a campaign made by --create goes away with a refused file.
            with transaction.atomic():
                if target is None:
                    target = campaign_create(name=campaign)
                result = comparisons_import_file(campaign=target, source=path, fmt=format)
        except ImportFileError as exc:
            raise CommandError(f"Nothing imported: {exc}") from exc
        self.stdout.write(
            f"Imported {result.comparisons} comparisons ({result.calibration} calibration) "
            f"from {result.prompts} prompts into {target.name}."
        )
