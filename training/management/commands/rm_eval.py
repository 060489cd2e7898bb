"""``manage.py rm_eval --model ID --pairs FILE``: pairwise accuracy of a registered reward model.

    manage.py rm_eval --model 7 --pairs /work/shared/data/hh_rlhf_sample.jsonl --limit 200

The pairs file is JSON Lines in the HH shape (prompt string with ``Human:`` / ``Assistant:``
turns, reply strings) or TRL's conversational shape (``training.services.rm_eval`` says which).
Prints a short summary, then, as its LAST line, one JSON object: ``accuracy`` (a tie counts one
half), ``n``, ``ties`` and, when the pairs carry them, ``by_category`` / ``by_source`` with the
same numbers per subset. A missing model, a model that is not a reward model, or a bad pairs file
is a ``CommandError`` naming the problem.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.errors import ApplicationError
from annotation.management.jsonline import json_rounded
from training.models import RegisteredModel
from training.services.rm_eval import pairs_load, reward_model_evaluate


class Command(BaseCommand):
    help = ("Pairwise accuracy of a reward model on a JSONL file of preference pairs; the last "
            "line printed is a JSON summary.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", type=int, required=True, help="RegisteredModel id.")
        parser.add_argument("--pairs", required=True, help="JSON Lines file of pairs.")
        parser.add_argument("--limit", type=int, default=None,
                            help="Evaluate only the first N pairs.")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["limit"] is not None and opts["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        model = RegisteredModel.objects.filter(pk=opts["model"]).first()
        if model is None:
            raise CommandError(f"No registered model #{opts['model']}.")
        try:
            pairs = pairs_load(path=opts["pairs"], limit=opts["limit"])
            result = reward_model_evaluate(model=model, pairs=pairs)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{model}: accuracy {result['accuracy']:.3f} on {result['n']} pairs "
                          f"({result['ties']} ties)")
        for group in ("by_category", "by_source"):
            for name, sub in result[group].items():
                self.stdout.write(f"  {name}: {sub['accuracy']:.3f} (n={sub['n']})")
        summary = {"model": model.pk, **result}
        if not summary["by_category"]:
            del summary["by_category"]
        if not summary["by_source"]:
            del summary["by_source"]
        self.stdout.write(json.dumps(json_rounded(summary), sort_keys=True))
