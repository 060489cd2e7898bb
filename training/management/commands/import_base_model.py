"""Register the pretrained models that ship as Python packages (no hub, no network)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Register pretrained models from installed packages: SmolLM2-135M-Instruct (a chat "
        "policy, de-quantized from GGUF once: 35-65 s on 2 cores) and all-MiniLM-L6-v2 (an "
        "encoder to put a reward head on). Safe to run again: registered models are reused. "
        "The last line is a JSON object {name: registered model id}."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--model", choices=["smollm2", "minilm", "all"], default="all",
                            help="Which model to import (default: both).")

    def handle(self, *args, **o) -> None:
        from training.services.models import base_policy_import, encoder_import

        wanted = ["smollm2", "minilm"] if o["model"] == "all" else [o["model"]]
        ids: dict[str, int] = {}
        for model in wanted:
            try:
                row = base_policy_import() if model == "smollm2" else encoder_import()
            except (ImportError, FileNotFoundError) as exc:
                raise CommandError(f"Cannot import {model}: {exc} (is its package installed?)"
                                   ) from exc
            self.stdout.write(f"{row} at {row.path} ({row.parameters or '?'} parameters)")
            ids[row.name] = row.pk
        self.stdout.write(json.dumps(ids))
