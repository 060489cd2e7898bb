"""Experiments as jobs: create (validated, queued on ``gpu`` through the outbox), execute in a
worker with progress and cancellation, cancel. Crash safety is the jobs layer's
(``annotation.services.jobs``); the work is ``evaluation.experiments.experiment_noise_sweep``.

Progress and cancellation ride on the sweep's ``progress(stage, fraction)`` callback: each call
writes stage and fraction through ``job_owned`` (a write that touches no row means the reaper
gave the job to another attempt) and then reads ``cancel_requested``; either stops the sweep by
raising :class:`ExperimentStopped` from inside it, which ``experiment_execute`` turns into
``job_cancelled`` (or, for a lost attempt, into nothing: the new attempt owns the row).
"""

from __future__ import annotations

import json
import logging
import math
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotation.errors import ApplicationError
from annotation.services.jobs import (
    job_cancel,
    job_cancelled,
    job_enqueue,
    job_fail,
    job_heartbeat,
    job_owned,
    job_start,
    job_succeed,
)
from evaluation.experiments import ExperimentSpec, spec_from_dict
from evaluation.models import Experiment
from training.methods.base import ConfigError
from training.services.runs import code_version

log = logging.getLogger(__name__)

MAX_EPSILONS = 16  # ε per experiment; each arm trains its own reward model(s)
MAX_ARMS = 64  # (variants + the baseline) × ε
INPUT_FIELDS = frozenset({"epsilons", "name"})  # error keys that are not spec fields


class ExperimentConfigError(ApplicationError):
    """An experiment that cannot be created; ``errors`` maps each spec field (by its own name,
    ``spec`` for a rule spanning fields) and each input (``epsilons``, ``name``) to its
    messages. Nothing was queued."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("Invalid experiment: " + "; ".join(
            f"{k}: {' '.join(v)}" for k, v in errors.items()), extra={"errors": errors})


class ExperimentStopped(Exception):
    """Raised from the progress callback to stop a running sweep: a cancel was requested, or
    (``lost``) the reaper gave the job to another attempt."""

    def __init__(self, *, lost: bool = False) -> None:
        self.lost = lost
        super().__init__("lost ownership" if lost else "cancel requested")


def _epsilons_clean(epsilons: Any, default: float) -> tuple[list[float], list[str]]:
    if epsilons is None:
        return [default], []
    if isinstance(epsilons, str | bytes) or not isinstance(epsilons, Sequence):
        return [], ["A list of flip rates ε in [0, 0.5)."]
    out, errors = [], []
    for e in epsilons:
        if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e) or (
                not 0 <= e < 0.5):
            errors.append(f"{e!r} is not a flip rate in [0, 0.5).")
        else:
            out.append(float(e))
    if not epsilons:
        errors.append("At least one ε.")
    elif len(epsilons) > MAX_EPSILONS:
        errors.append(f"{len(epsilons)} arms; an experiment has at most {MAX_EPSILONS}.")
    elif len(set(out)) != len(out):
        errors.append("Each ε once.")
    return out, errors


def spec_as_json(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as stored: every field, tuples as lists."""
    return json.loads(json.dumps(asdict(spec)))


def experiment_create(*, spec: Mapping[str, Any] | None,
                      epsilons: Sequence[float] | None = None, name: str = "",
                      requested_by: AbstractBaseUser | None = None,
                      max_attempts: int = 3) -> Experiment:
    """Validate and queue one experiment on the ``gpu`` queue (through the outbox, after
    commit). ``epsilons`` defaults to ``[spec.flip_rate]``. Raises ``ExperimentConfigError``
    with every field error at once, and then writes nothing; a bad MAPS variant is named where
    it sits (``variants[1].overrides.ensemble_size``, ``variants[0].lever``)."""
    errors: dict[str, list[str]] = {}
    clean: ExperimentSpec | None = None
    try:
        clean = spec_from_dict(dict(spec or {}))
    except ConfigError as exc:
        errors |= exc.errors
    eps, eps_errors = _epsilons_clean(epsilons, clean.flip_rate if clean else 0.0)
    if eps_errors:
        errors["epsilons"] = eps_errors
    if clean is not None and eps and len(eps) * (1 + len(clean.variants)) > MAX_ARMS:
        errors["variants"] = [f"{len(eps)} ε × {1 + len(clean.variants)} variants (the "
                              f"baseline included) is over {MAX_ARMS} arms."]
    if len(name) > 200:
        errors["name"] = ["At most 200 characters."]
    if errors or clean is None:
        raise ExperimentConfigError(errors)
    with transaction.atomic():
        experiment = Experiment(name=name, spec=spec_as_json(clean), epsilons=eps,
                                requested_by=requested_by, max_attempts=max_attempts,
                                code_version=code_version())
        job_enqueue(experiment)
    return experiment


def experiment_cancel(*, experiment: Experiment) -> Experiment:
    """Cancel an experiment (``job_cancel``: a queued one at once, a running one at its next
    progress report); ``ConflictError`` once it ended."""
    return job_cancel(Experiment, job_id=experiment.pk, what="Experiment")


class _Progress:
    """The sweep's ``Progress`` callback for one attempt: writes, then listens for a cancel."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if not job_owned(self.experiment).update(progress=fraction, stage=stage[:200],
                                                 heartbeat_at=timezone.now()):
            raise ExperimentStopped(lost=True)
        self.experiment.progress, self.experiment.stage = fraction, stage[:200]
        if Experiment.objects.filter(pk=self.experiment.pk, cancel_requested=True).exists():
            raise ExperimentStopped()


def experiment_execute(*, experiment_id: int) -> Experiment | None:
    """Run one attempt of an experiment in this worker (the ``evaluation.experiment_execute``
    task's body); None when there is nothing to do (``job_start``: finished, cancelled, or
    owned by a live attempt).

    Success stores ``result`` (one ``ExperimentResult.as_dict()`` per (variant, ε): the
    baseline's arms first, then each MAPS variant's), ``headline`` (its ``arms`` in the same
    order, each with its variant and lever) and progress 1. A cancel seen at a progress
    report ends it cancelled at that stage; an exception fails it with the traceback; an
    attempt that lost ownership writes nothing more. The sweep starts over on a new attempt
    (it has no checkpoint; a seed's campaign is reused).
    """
    experiment = job_start(Experiment, job_id=experiment_id)
    if experiment is None:
        return None
    # The code that runs it (a worker may run other code than the web that queued it).
    job_owned(experiment).update(code_version=code_version(), progress=0.0, stage="starting")
    report = _Progress(experiment)
    try:
        from evaluation.experiments import experiment_noise_sweep, result_headline

        spec = spec_from_dict(experiment.spec)
        with job_heartbeat(experiment):
            results = experiment_noise_sweep(spec=spec, epsilons=experiment.epsilons,
                                             progress=report)
        headline = {"spec_key": spec.key(),
                    "seconds": round(sum(r.seconds for r in results), 3),
                    "arms": [result_headline(r) for r in results]}
        job_succeed(experiment, result=[r.as_dict() for r in results], headline=headline,
                    progress=1.0, stage="done")
    except ExperimentStopped as stop:
        if stop.lost:
            log.warning("experiment #%s: attempt %s lost ownership; its work is dropped",
                        experiment.pk, experiment.attempts)
        else:
            job_cancelled(experiment, reason=f"Cancelled at: {experiment.stage or 'start'}.")
    except Exception:
        log.exception("experiment #%s failed", experiment.pk)
        job_fail(experiment, reason=traceback.format_exc()[-5000:])
    return experiment
