"""``manage.py import_comparisons PATH --campaign NAME [--skip-invalid [--rejects OUT]]
[--allow-duplicates]``. Rows the campaign already has are skipped unless --allow-duplicates."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.importers import ImportFileError
from annotation.models import Campaign
from annotation.services import campaign_create
from annotation.services.imports import comparisons_import_file, import_rejects_write


class Command(BaseCommand):
    help = ("Import comparisons from JSONL, CSV or a Hugging Face dataset; all rows or none "
            "(--skip-invalid: the valid rows, with the refused ones written to a file).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--campaign", required=True, help="Campaign name (slug).")
        parser.add_argument("--format", choices=["jsonl", "csv", "dataset"], default=None)
        parser.add_argument("--create", action="store_true",
                            help="Create the campaign with default settings if it is missing.")
        parser.add_argument("--source", default=None,
                            help="Whose labels the rows' chosen/rejected (or label) are: one "
                                 "dataset annotator for the file. Default: each row's source, "
                                 "else the file's name.")
        parser.add_argument("--skip-invalid", action="store_true",
                            help="Import the valid rows; write the refused ones, with their "
                                 "reasons, to --rejects.")
        parser.add_argument("--rejects", type=Path, default=None,
                            help="Where --skip-invalid writes refused rows as JSON Lines "
                                 "{line, field, message, row}. Default: PATH.rejects.jsonl.")
        parser.add_argument("--allow-duplicates", action="store_true",
                            help="Import rows the campaign already has (same conversation, "
                                 "responses, kind and gold) again. By default they are "
                                 "skipped, so importing a file twice adds nothing.")

    def handle(self, *args, path: Path, campaign: str, format: str | None, create: bool,
               source: str | None, skip_invalid: bool, rejects: Path | None,
               allow_duplicates: bool, **options) -> None:
        target = Campaign.objects.filter(name=campaign).first()
        if target is None and not create:
            raise CommandError(f"No campaign named {campaign!r} (use --create to make it).")
        try:
            # One transaction: a campaign made by --create goes away with a refused file.
            with transaction.atomic():
                if target is None:
                    target = campaign_create(name=campaign)
                result = comparisons_import_file(campaign=target, source=path, fmt=format,
                                                 skip_invalid=skip_invalid, label_source=source,
                                                 allow_duplicates=allow_duplicates)
        except ImportFileError as exc:
            raise CommandError(f"Nothing imported: {exc}") from exc
        if result.rejects:
            out = rejects or path.with_name(path.name + ".rejects.jsonl")
            import_rejects_write(rejects=result.rejects, out=out)
            self.stderr.write(f"Skipped {result.rejected} invalid rows; written to {out}.")
        for warning in result.warnings:
            self.stderr.write(f"Warning: {warning}")
        sources = result.label_sources
        labels = ("".join(f", {n} labels of {s!r}" for s, n in sources.items())
                  if len(sources) <= 3 else f", {result.labels} labels of {len(sources)} sources")
        self.stdout.write(
            f"Imported {result.comparisons} comparisons ({result.calibration} calibration) "
            f"from {result.prompts} prompts into {target.name}{labels}"
            + (f"; {result.duplicates} rows it already had were skipped." if result.duplicates
               else ".")
        )
