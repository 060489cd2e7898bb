"""Build and register a tiny tokenizer, policy and reward model from a world's text."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from evaluation.worlds import world_names


class Command(BaseCommand):
    help = (
        "Train a byte-level BPE tokenizer on a world's prompts and candidate replies, build a "
        "tiny Llama policy and reward model on it, and register the three as <name>-tokenizer, "
        "<name>-policy, <name>-reward. Safe to run again (existing ones are reused unless "
        "--force). The last line is a JSON object {kind: registered model id}."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--world", default="arithmetic", choices=world_names())
        parser.add_argument("--name", default="", help="Name prefix (default: tiny-<world>).")
        parser.add_argument("--seed", type=int, default=0,
                            help="Seed of the corpus prompts and the initial weights.")
        parser.add_argument("--prompts", type=int, default=500,
                            help="Prompts whose text (with candidate replies) is the corpus.")
        parser.add_argument("--vocab-size", type=int, default=1024)
        parser.add_argument("--hidden", type=int, default=128, help="Model width.")
        parser.add_argument("--layers", type=int, default=2)
        parser.add_argument("--force", action="store_true", help="Rebuild and register anew.")

    def handle(self, *args, **o) -> None:
        from evaluation.corpus import world_corpus
        from training.services.models import tiny_models_build

        corpus = world_corpus(o["world"], n_prompts=o["prompts"], seed=o["seed"])
        rows = tiny_models_build(corpus=corpus, name=o["name"] or f"tiny-{o['world']}",
                                 seed=o["seed"], vocab_size=o["vocab_size"],
                                 hidden=o["hidden"], layers=o["layers"], force=o["force"])
        for row in rows.values():
            self.stdout.write(f"{row} at {row.path} ({row.parameters or '-'} parameters)")
        self.stdout.write(json.dumps({kind: row.pk for kind, row in rows.items()}))
