from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Campaign, PreferenceExport
from annotation.selectors.sources import SOURCES, SOURCES_ALL
from annotation.services.exports import preferences_write


class Command(BaseCommand):
    help = "Export a campaign's preferences in TRL format ({prompt, chosen, rejected})."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--format", choices=PreferenceExport.Format.values,
                            default=PreferenceExport.Format.JSONL,
                            help="jsonl, or dataset (a datasets.Dataset saved to a folder).")
        parser.add_argument("--sources", choices=SOURCES, default=SOURCES_ALL,
                            help="Whose judgments: all (default), people, or dataset (an "
                                 "import's own labels).")

    def handle(self, *args, campaign: str, out: Path, format: str, sources: str,
               **options) -> None:
        target = Campaign.objects.filter(name=campaign).first()
        if target is None:
            raise CommandError(f"No campaign named {campaign!r}.")
        count = preferences_write(campaign=target, out=out, fmt=format, sources=sources)
        self.stdout.write(f"Wrote {count} preference rows to {out}.")
