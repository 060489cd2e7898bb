"""Queue a training run (or a sweep) from the shell, and optionally follow it to the end.

    manage.py train dpo --snapshot 3 --base 1 --set beta=0.1 --set max_steps=50 --wait
    manage.py train reward_model --snapshot 3 --grid seed=0,1,2,3,4
    manage.py train best_of_n --snapshot 3 --base 1 --reward 7 --grid n=1,4,16,64

``--set`` and ``--grid`` values are read as JSON when they parse (``0.1``, ``true``,
``[1, 2]``) and as text otherwise. The run goes through ``run_create`` / ``sweep_create`` like
the admin and the API, so a bad config is refused with every field named and nothing queued.
With ``--wait`` the command polls the database (a worker does the training) and draws a text
progress bar on stderr; it always ends with one JSON line on stdout: the run id(s), status,
final metrics and registered model ids.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Campaign, Snapshot
from training.forms import parse_grid, parse_settings
from training.methods import METHODS
from training.models import RegisteredModel, TrainingRun
from training.selectors import runs as sr
from training.services.runs import RunConfigError, run_create, sweep_create

BAR = 30


class Command(BaseCommand):
    help = "Queue a training run (or a sweep with --grid); --wait follows it to the end."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("method", choices=METHODS)
        parser.add_argument("--snapshot", type=int, help="Snapshot id.")
        parser.add_argument("--campaign", type=int, help="Campaign id (the AI judge's).")
        parser.add_argument("--base", type=int, help="Base model id (RegisteredModel).")
        parser.add_argument("--reference", type=int, help="Reference policy id.")
        parser.add_argument("--reward", type=int, action="append", default=[],
                            help="Reward model id; repeat for an ensemble.")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="A config field; repeatable.")
        parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                            help="A sweep axis; repeatable (the sweep is their product).")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--name", default="")
        parser.add_argument("--wait", action="store_true",
                            help="Follow progress until every run has ended.")
        parser.add_argument("--poll", type=float, default=2.0, help="Seconds between polls.")
        parser.add_argument("--timeout", type=float, default=0,
                            help="With --wait: give up after this many seconds (0: never).")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            config = parse_settings(opts["set"])
            grid = parse_grid(opts["grid"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        kwargs = dict(
            method=opts["method"], config=config,
            snapshot=self._get(Snapshot, opts["snapshot"], "--snapshot"),
            campaign=self._get(Campaign, opts["campaign"], "--campaign"),
            base_model=self._get(RegisteredModel, opts["base"], "--base"),
            reference_model=self._get(RegisteredModel, opts["reference"], "--reference"),
            reward_models=[self._get(RegisteredModel, pk, "--reward") for pk in opts["reward"]],
            seed=opts["seed"], name=opts["name"])
        try:
            if grid:
                sweep = sweep_create(grid=grid, **kwargs)
                run_ids = list(sweep.runs.order_by("pk").values_list("pk", flat=True))
                self.stderr.write(f"Queued sweep #{sweep.pk}: runs {run_ids}")
                self.stdout.write(f"sweep {sweep.pk}")
            else:
                sweep = None
                run_ids = [run_create(**kwargs).pk]
                self.stdout.write(f"run {run_ids[0]}")
        except RunConfigError as exc:
            lines = [f"  {field}: {' '.join(msgs)}" for field, msgs in exc.errors.items()]
            raise CommandError("Invalid run; nothing queued.\n" + "\n".join(lines)) from exc
        if opts["wait"]:
            self._follow(run_ids, poll=opts["poll"], timeout=opts["timeout"])
        self.stdout.write(json.dumps(self._summary(run_ids, sweep_id=sweep.pk if sweep else None)))

    def _get(self, model, pk: int | None, flag: str):
        if pk is None:
            return None
        obj = model.objects.filter(pk=pk).first()
        if obj is None:
            raise CommandError(f"{flag} {pk}: no such {model._meta.verbose_name}.")
        return obj

    def _follow(self, run_ids: list[int], *, poll: float, timeout: float) -> None:
        """Draw one progress line per poll until every run has ended (or the timeout)."""
        started = time.monotonic()
        tty = sys.stderr.isatty()
        while True:
            runs = list(TrainingRun.objects.filter(pk__in=run_ids).order_by("pk"))
            steps = sum(r.step for r in runs)
            total = sum(max(r.total_steps, r.step) for r in runs)
            ended = [r for r in runs if r.status in TrainingRun.TERMINAL]
            share = 1.0 if len(ended) == len(runs) else (steps / total if total else 0.0)
            filled = int(round(share * BAR))
            line = (f"[{'#' * filled}{'.' * (BAR - filled)}] {share:6.1%} step {steps}/{total} "
                    f"{len(ended)}/{len(runs)} ended "
                    + " ".join(f"#{r.pk}:{r.status}" for r in runs[:8]))
            self.stderr.write(("\r" + line) if tty else line, ending="" if tty else "\n")
            self.stderr.flush()
            if len(ended) == len(runs):
                break
            if timeout and time.monotonic() - started > timeout:
                self.stderr.write("\ntimed out; the runs go on." if tty else "timed out")
                break
            time.sleep(poll)
        if tty:
            self.stderr.write("")

    def _summary(self, run_ids: list[int], *, sweep_id: int | None) -> dict[str, Any]:
        runs = list(TrainingRun.objects.filter(pk__in=run_ids).order_by("pk"))
        statuses = {r.status for r in runs}
        return {
            "sweep": sweep_id,
            "runs": [r.pk for r in runs],
            "status": statuses.pop() if len(statuses) == 1 else "mixed",
            "statuses": {str(r.pk): r.status for r in runs},
            "metrics": {str(r.pk): sr.run_final_metrics(r) for r in runs},
            "registered_models": sorted(m for r in runs
                                        for m in (r.result or {}).get("registered_models", [])),
        }
