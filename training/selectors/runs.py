"""Reads of training runs for the pages, the API and the ``train`` command: lists with their
filters, one run with what its page shows, metric series for the charts, sweeps as tables, and
the one access path to an artifact's file.

State changes live in ``training.services.runs``; nothing here writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, QuerySet

from training.methods.base import RESULT_KL, RESULT_REWARD_PROXY, RESULT_REWARD_TRUE
from training.models import RegisteredModel, RunArtifact, RunMetric, Sweep, TrainingRun

# Chart groups: a metric goes to the first group whose test its name passes (TRL's names:
# "loss", "rewards/chosen", "rewards/margins", "objective/kl", "kl", "objective/scores", ...).
CHART_GROUPS = (
    ("kl", "KL (nats)", lambda n: re.search(r"(^|[/_.])kl($|[/_.])", n.lower()) is not None),
    ("loss", "Loss", lambda n: "loss" in n.lower()),
    ("reward", "Reward", lambda n: any(w in n.lower() for w in ("reward", "score", "margin",
                                                                "accuracy", "utility"))),
)


def run_list(*, method: str = "", status: str = "", sweep: Sweep | None = None
             ) -> QuerySet[TrainingRun]:
    """Runs, newest first, optionally of one method, status or sweep."""
    runs = TrainingRun.objects.select_related("snapshot__campaign", "base_model", "sweep",
                                              "requested_by")
    if method:
        runs = runs.filter(method=method)
    if status:
        runs = runs.filter(status=status)
    if sweep is not None:
        runs = runs.filter(sweep=sweep)
    return runs.order_by("-created_at", "-pk")


def run_get(*, run_id: int) -> TrainingRun | None:
    """One run with what its page shows (inputs, reward models, artifacts, produced models)."""
    return (TrainingRun.objects
            .select_related("snapshot__campaign", "campaign", "base_model", "reference_model",
                            "sweep", "requested_by")
            .prefetch_related("reward_models", "artifacts", "produced_models")
            .filter(pk=run_id).first())


def run_progress(run: TrainingRun) -> float | None:
    """The share of steps done, in [0, 1]; None while the total is unknown."""
    if run.status == TrainingRun.Status.SUCCEEDED:
        return 1.0
    if not run.total_steps:
        return None
    return min(run.step / run.total_steps, 1.0)


def run_is_terminal(run: TrainingRun) -> bool:
    return run.status in TrainingRun.TERMINAL


def run_metric_list(*, run: TrainingRun, name: str = "", after_step: int | None = None
                    ) -> QuerySet[RunMetric]:
    """A run's metric rows in step order (the ``run, name, step`` index serves each filter)."""
    rows = RunMetric.objects.filter(run=run)
    if name:
        rows = rows.filter(name=name)
    if after_step is not None:
        rows = rows.filter(step__gt=after_step)
    return rows.order_by("step", "name", "pk")


def chart_group(name: str) -> str:
    for key, _title, test in CHART_GROUPS:
        if test(name):
            return key
    return "other"


def run_chart_data(*, run: TrainingRun, after_step: int | None = None) -> dict[str, Any]:
    """The charts' JSON: every metric as [[step, value], ...] after ``after_step`` (so a page
    that polls asks only for what is new), each metric's chart group, and the run's state."""
    series: dict[str, list[list[float]]] = {}
    for name, step, value in run_metric_list(run=run, after_step=after_step).values_list(
            "name", "step", "value"):
        series.setdefault(name, []).append([step, value])
    last = max((points[-1][0] for points in series.values()), default=after_step)
    return {
        "run": run.pk,
        "status": run.status,
        "terminal": run_is_terminal(run),
        "step": run.step,
        "total_steps": run.total_steps,
        "after_step": after_step,
        "last_step": last,
        "groups": {name: chart_group(name) for name in series},
        "titles": {key: title for key, title, _ in CHART_GROUPS} | {"other": "Other"},
        "series": series,
    }


def result_value(result: dict[str, Any], key: str) -> float | None:
    """A number of a run's final result (``training.methods.base.RESULT_*`` keys), or None."""
    value = result.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def run_final_metrics(run: TrainingRun) -> dict[str, Any]:
    """The run's final numbers without the registered-model list."""
    return {k: v for k, v in (run.result or {}).items() if k != "registered_models"}


@dataclass(frozen=True)
class SweepRow:
    run: TrainingRun
    point: dict[str, Any]  # the grid's values for this child (``seed`` included when swept)
    kl: float | None
    proxy_reward: float | None
    true_reward: float | None


def sweep_get(*, sweep_id: int) -> Sweep | None:
    return (Sweep.objects.select_related("snapshot__campaign", "created_by")
            .annotate(n_runs=Count("runs")).filter(pk=sweep_id).first())


def sweep_list() -> QuerySet[Sweep]:
    return (Sweep.objects.select_related("snapshot__campaign").annotate(n_runs=Count("runs"))
            .order_by("-created_at", "-pk"))


def sweep_rows(*, sweep: Sweep) -> list[SweepRow]:
    """One row per child run: its grid point, status, KL and final proxy reward."""
    keys = sorted(sweep.grid or {})
    rows = []
    for run in run_list(sweep=sweep).order_by("pk"):
        point = {k: (run.seed if k == "seed" else run.config.get(k)) for k in keys}
        result = run.result or {}
        rows.append(SweepRow(run=run, point=point, kl=result_value(result, RESULT_KL),
                             proxy_reward=result_value(result, RESULT_REWARD_PROXY),
                             true_reward=result_value(result, RESULT_REWARD_TRUE)))
    return rows


def run_registered_models(run: TrainingRun) -> list[RegisteredModel]:
    return list(run.produced_models.order_by("pk"))


def artifact_file(*, artifact: RunArtifact) -> Path | None:
    """The artifact's file, only if it is a regular file inside ``GAPLAB_ARTIFACT_ROOT``.

    The one access path for downloads: the stored path is resolved (symlinks and ``..``
    followed) before the containment test, so a row pointing outside the root, by a crafted
    path or a link, serves nothing.
    """
    root = Path(settings.GAPLAB_ARTIFACT_ROOT).resolve()
    try:
        path = Path(artifact.path).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def registered_model_list(*, kind: str = "") -> QuerySet[RegisteredModel]:
    models = RegisteredModel.objects.select_related("produced_by", "tokenizer")
    return models.filter(kind=kind) if kind else models
