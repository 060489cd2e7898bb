"""``manage.py snapshot_create --campaign NAME --method M [--params JSON]``: prints the hash."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import ApplicationError
from annotation.models import Campaign, Snapshot
from annotation.selectors.sources import SOURCES, SOURCES_ALL
from annotation.services.snapshots import snapshot_create


class Command(BaseCommand):
    help = ("Aggregate a campaign's judgments into an immutable, content-addressed snapshot and "
            "print its hash (the same content gives the same snapshot).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name (slug).")
        parser.add_argument("--method", required=True, choices=Snapshot.Method.values)
        parser.add_argument("--params", default=None,
                            help='Method parameters as a JSON object, e.g. \'{"margin_max": 2}\'.')
        parser.add_argument("--sources", choices=SOURCES, default=SOURCES_ALL,
                            help="Whose judgments: all (default), people, or dataset (an "
                                 "import's own labels).")

    def handle(self, *args, campaign: str, method: str, params: str | None, sources: str,
               **options) -> None:
        target = Campaign.objects.filter(name=campaign).first()
        if target is None:
            raise CommandError(f"No campaign named {campaign!r}.")
        try:
            parsed = json.loads(params) if params else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON: {exc}") from exc
        if parsed is not None and not isinstance(parsed, dict):
            raise CommandError("--params must be a JSON object.")
        try:
            snapshot = snapshot_create(campaign=target, method=method, params=parsed,
                                       sources=sources)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"{snapshot.row_count} rows in {snapshot.path}")
        self.stdout.write(snapshot.content_hash)
