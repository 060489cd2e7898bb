"""``manage.py crowd_eval --labels L.csv [--gold G.csv]``: compare label aggregation methods.

Reads crowd labels (columns ``item, worker, label``; any number of classes; items without gold
allowed) and optional gold (``item, label``). Runs majority vote, gold-weighted vote and
gold-anchored Dawid-Skene (both only with gold, cross-fitted: see below), Dawid-Skene and MACE,
then prints a short table and, as its LAST line, one JSON object: each method's accuracy against
the gold, for each iterative method its ``iterations`` and whether it ``converged``, and a
summary of the estimated worker qualities.

Choices, stated so the numbers can be read:

* Ids and labels are read as text, so ``1`` in the labels and ``1`` in the gold match and ids
  such as ``007`` keep their zeros.
* A worker who labels an item more than once keeps the last label in file order (a repeat is a
  correction); ``n_repeats_dropped`` says how many were dropped.
* ``accuracy`` is the expected accuracy under a uniformly random tie-break (a tied item scores
  1/|tied| when gold is among the tied labels), the convention behind Snow et al.'s (2008) 0.897
  for majority vote on RTE. ``accuracy_tie_broken`` is that of the deterministic tie-break (the
  label most frequent in the file, then sorted order).
* Gold-weighted vote learns its weights from gold, so it is scored by k-fold cross-fitting over
  the gold items (``--folds``, ``--seed``): each gold item is labelled with weights fit on the
  other folds' gold only. ``dawid_skene_gold`` (gold-anchored Dawid-Skene: gold items enter EM
  as observed truth) is cross-fitted the same way; it converged only if every fold's fit did.
* Dawid-Skene and MACE run until no parameter moves by more than ``--tol`` between iterations,
  at most ``--max-iter`` iterations; ``converged: false`` flags a fit that hit the cap. They are
  the module's own EM / variational Bayes (``annotation.aggregation`` says why not crowd-kit's).
* GLAD is not run: crowd-kit's GLAD takes about a minute on 8,000 labels (two cores).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from django.core.management.base import BaseCommand, CommandError

from annotation import aggregation
from annotation.management.jsonline import json_rounded


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise CommandError(f"{what} file {path} does not exist.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise CommandError(f"{what} file {path} is empty.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CommandError(f"{what} file {path} is not readable CSV: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CommandError(
            f"{what} file {path} lacks column(s) {', '.join(missing)}; it needs "
            f"{', '.join(required)} (found: {', '.join(frame.columns) or 'none'})."
        )
    frame = frame.loc[:, list(required)].apply(lambda col: col.str.strip())
    if frame.empty:
        raise CommandError(f"{what} file {path} has a header but no rows.")
    blank = frame.index[(frame == "").any(axis=1)]
    if len(blank):
        lines = ", ".join(str(i + 2) for i in blank[:5])  # +2: 1-based, after the header
        raise CommandError(f"{what} file {path} has empty values on line(s) {lines}.")
    return frame


class Command(BaseCommand):
    help = ("Evaluate crowd label aggregation (majority, gold-weighted, Dawid-Skene plain and "
            "gold-anchored, MACE) on an item,worker,label CSV; the last line printed is a JSON "
            "summary.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--labels", required=True, type=Path, help="CSV: item,worker,label.")
        parser.add_argument("--gold", type=Path, default=None, help="CSV: item,label.")
        parser.add_argument("--folds", type=int, default=5,
                            help="Cross-fitting folds over gold items for gold-weighted vote.")
        parser.add_argument("--seed", type=int, default=0, help="Seed for the folds.")
        parser.add_argument("--max-iter", type=int, default=500,
                            help="Most iterations of Dawid-Skene and MACE.")
        parser.add_argument("--tol", type=float, default=1e-5,
                            help="Convergence: largest parameter change between iterations.")
        parser.add_argument("--no-mace", action="store_true", help="Skip MACE (a few seconds).")

    def handle(self, *args, labels: Path, gold: Path | None, folds: int, seed: int,
               no_mace: bool, max_iter: int, tol: float, **options) -> None:
        if folds < 2:
            raise CommandError("--folds must be at least 2.")
        if max_iter < 1 or not tol > 0:
            raise CommandError("--max-iter must be at least 1 and --tol above 0.")
        raw = _read_csv(labels, ("item", "worker", "label"), "Labels")
        data, n_dropped = aggregation.dedupe_labels(raw.rename(columns={"item": "task"}))
        gold_series = None
        if gold is not None:
            gold_frame = _read_csv(gold, ("item", "label"), "Gold").drop_duplicates()
            clash = gold_frame["item"][gold_frame["item"].duplicated()]
            if len(clash):
                raise CommandError(f"Gold gives item(s) {', '.join(clash.unique()[:5])} "
                                   "more than one label.")
            gold_series = gold_frame.set_index("item")["label"]

        results: dict[str, aggregation.LabelAggregate] = {
            "majority": aggregation.majority_labels(data)
        }
        skipped: dict[str, str] = {}
        if gold_series is not None:
            try:
                results["gold_weighted"] = aggregation.gold_weighted_cross_fit(
                    data, gold_series, n_folds=folds, seed=seed
                )
            except ValueError as exc:
                skipped["gold_weighted"] = str(exc)
        else:
            skipped["gold_weighted"] = "no --gold given"
        results["dawid_skene"] = aggregation.dawid_skene_labels(data, n_iter=max_iter, tol=tol)
        if gold_series is not None:
            try:
                results["dawid_skene_gold"] = aggregation.dawid_skene_gold_cross_fit(
                    data, gold_series, n_folds=folds, seed=seed, n_iter=max_iter, tol=tol)
            except ValueError as exc:
                skipped["dawid_skene_gold"] = str(exc)
        else:
            skipped["dawid_skene_gold"] = "no --gold given"
        if not no_mace:
            results["mace"] = aggregation.mace_labels(data, n_iter=max_iter, tol=tol)

        methods: dict[str, dict[str, Any]] = {}
        for name, result in results.items():
            entry: dict[str, Any] = {"n_ties": result.n_ties}
            if gold_series is not None:
                entry.update(result.accuracy(gold_series))
            for key in ("iterations", "converged", "cross_fit_folds", "anchored_on_gold"):
                if key in result.info:
                    entry[key] = result.info[key]
            if "folds" in result.info:
                entry["fold_iterations"] = [f["iterations"] for f in result.info["folds"]]
            methods[name] = entry
        for name, reason in skipped.items():
            methods[name] = {"skipped": reason}

        quality = {
            "dawid_skene": aggregation.quality_summary(results["dawid_skene"].worker_quality)
        }
        if "mace" in results:
            quality["mace_competence"] = aggregation.quality_summary(
                results["mace"].worker_quality)
        if gold_series is not None:
            try:
                per_worker = aggregation.worker_gold_accuracy(data, gold_series)
                quality["gold_accuracy"] = aggregation.quality_summary(per_worker["accuracy"])
            except ValueError:
                pass  # no label on a gold item: nothing to summarise
        summary = {
            "labels": str(labels),
            "n_labels": int(len(data)),
            "n_items": int(data["task"].nunique()),
            "n_workers": int(data["worker"].nunique()),
            "classes": aggregation.label_order(data),
            "n_repeats_dropped": int(n_dropped),
            "n_gold": None if gold_series is None else int(len(gold_series)),
            "methods": methods,
            "worker_quality": quality,
        }

        for name, entry in methods.items():
            if "skipped" in entry:
                self.stdout.write(f"{name:16s} skipped: {entry['skipped']}")
                continue
            acc = entry.get("accuracy")
            acc_text = "n/a" if acc is None else f"{acc:.4f}"
            fit_text = ""
            if "iterations" in entry:
                state = "converged" if entry["converged"] else "NOT CONVERGED"
                fit_text = f"  {entry['iterations']} iterations, {state}"
            self.stdout.write(f"{name:16s} accuracy {acc_text}  ties {entry['n_ties']}{fit_text}")
        self.stdout.write(json.dumps(json_rounded(summary), sort_keys=False))
