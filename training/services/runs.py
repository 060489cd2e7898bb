"""Training runs and sweeps: create (validated, queued through the outbox), execute in a worker,
cancel, resume. Crash safety is the jobs layer's (``annotation.services.jobs``); this module adds
what a run has beyond a job: a method, its context, checkpoints, registered models, artifacts.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotation.errors import ApplicationError, ConflictError
from annotation.models import Campaign, CampaignQuality, JobStatus, Snapshot
from annotation.services.jobs import (
    job_cancel,
    job_cancelled,
    job_enqueue,
    job_fail,
    job_heartbeat,
    job_start,
    job_succeed,
)
from annotation.services.snapshots import snapshot_rows
from training.distributed import LaunchOutcome
from training.methods import ConfigError, method_config_clean, method_module
from training.methods.base import MethodResult, ModelRef, Reporter, RunContext
from training.models import ModelKind, RegisteredModel, RunArtifact, Sweep, TrainingRun
from training.rewards import true_reward_for
from training.services.progress import RunReporter

log = logging.getLogger(__name__)


class RunConfigError(ApplicationError):
    """A run that cannot be created; ``errors`` maps each field (config fields by their own
    name, inputs as ``snapshot``, ``base_model``, ...) to its messages. Nothing was queued."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("Invalid training run: " + "; ".join(
            f"{k}: {' '.join(v)}" for k, v in errors.items()), extra={"errors": errors})


@functools.cache
def code_version() -> str:
    """The code's git commit (or ``GAPLAB_CODE_VERSION``), recorded on every run."""
    if settings.GAPLAB_CODE_VERSION:
        return settings.GAPLAB_CODE_VERSION
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR,
                             capture_output=True, text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=settings.BASE_DIR, capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return out.stdout.strip()[:40] + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_dir(run: TrainingRun) -> Path:
    return settings.GAPLAB_ARTIFACT_ROOT / "runs" / str(run.pk)


def _inputs_check(method: str, *, config: dict[str, Any] | None,
                  snapshot: Snapshot | None, campaign: Campaign | None,
                  base_model: RegisteredModel | None,
                  reward_models: list[RegisteredModel]) -> dict[str, list[str]]:
    """What the method needs besides its config: ``REQUIRES`` and ``BASE_KINDS`` of its
    module, and its ``inputs_check(config, ...)`` where inputs depend on the config (the AI
    judge's backend). ``config`` is the cleaned config, or None when it did not validate."""
    module = method_module(method)
    requires: frozenset[str] = getattr(module, "REQUIRES", frozenset())
    given = {"snapshot": snapshot, "campaign": campaign, "base_model": base_model,
             "reward_models": reward_models or None}
    errors = {name: [f"{method} needs a {name.replace('_', ' ')}."]
              for name in sorted(requires) if given[name] is None}
    base_kinds = getattr(module, "BASE_KINDS", frozenset({ModelKind.POLICY}))
    if base_model is not None and base_model.kind not in base_kinds:
        errors["base_model"] = [f"{method} starts from a {' or '.join(sorted(base_kinds))} "
                                f"model; #{base_model.pk} is a {base_model.kind}."]
    bad = [m.pk for m in reward_models if m.kind != ModelKind.REWARD]
    if bad:
        errors["reward_models"] = [f"Not reward models: {', '.join(map(str, bad))}."]
    check = getattr(module, "inputs_check", None)
    if check is not None and config is not None:
        for name, messages in check(module.Config(**config), base_model=base_model,
                                    reward_models=reward_models, campaign=campaign).items():
            errors.setdefault(name, []).extend(messages)
    return errors


SEED_MIN, SEED_MAX = -(2**31), 2**31 - 1  # TrainingRun.seed is a 32-bit integer column


def _seed_errors(seed: Any) -> list[str]:
    if isinstance(seed, bool) or not isinstance(seed, int):
        return [f"A seed is a whole number, not {seed!r}."]
    if not SEED_MIN <= seed <= SEED_MAX:
        return [f"A seed is between {SEED_MIN} and {SEED_MAX}."]
    return []


def _config_clean(method: str, config: Mapping[str, Any] | None) -> tuple[dict, dict]:
    try:
        return method_config_clean(method, dict(config or {})), {}
    except ConfigError as exc:
        return {}, exc.errors


def run_create(*, method: str, config: Mapping[str, Any] | None = None,
               snapshot: Snapshot | None = None, campaign: Campaign | None = None,
               base_model: RegisteredModel | None = None,
               reference_model: RegisteredModel | None = None,
               reward_models: Iterable[RegisteredModel] = (), seed: int = 0, name: str = "",
               sweep: Sweep | None = None, requested_by: AbstractBaseUser | None = None,
               max_attempts: int = 3) -> TrainingRun:
    """Validate and queue one run. Raises ``RunConfigError`` (every field error at once) and
    then queues nothing; the task is published after commit through the outbox."""
    reward_models = list(reward_models)
    clean, errors = _config_clean(method, config)
    if errors.get("method"):
        raise RunConfigError(errors)
    errors |= _inputs_check(method, config=None if errors else clean, snapshot=snapshot,
                            campaign=campaign, base_model=base_model,
                            reward_models=reward_models)
    if _seed_errors(seed):
        errors["seed"] = _seed_errors(seed)
    if reference_model is not None and reference_model.kind != ModelKind.POLICY:
        errors["reference_model"] = [f"#{reference_model.pk} is not a policy."]
    if errors:
        raise RunConfigError(errors)
    with transaction.atomic():
        run = TrainingRun(method=method, config=clean, snapshot=snapshot, campaign=campaign,
                          base_model=base_model, reference_model=reference_model, seed=seed,
                          name=name[:200], sweep=sweep, requested_by=requested_by,
                          max_attempts=max_attempts, code_version=code_version())
        run.save()
        run.reward_models.set(reward_models)
        job_enqueue(run)
    return run


def _grid_points(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(grid[k] for k in keys))]


def sweep_create(*, method: str, grid: Mapping[str, list[Any]],
                 config: Mapping[str, Any] | None = None, snapshot: Snapshot | None = None,
                 campaign: Campaign | None = None, base_model: RegisteredModel | None = None,
                 reference_model: RegisteredModel | None = None,
                 reward_models: Iterable[RegisteredModel] = (), seed: int = 0, name: str = "",
                 requested_by: AbstractBaseUser | None = None) -> Sweep:
    """A sweep: one child run per point of ``grid`` ({field: [values]}; the key ``seed`` sets
    the run's seed, as for a k-seed reward-model ensemble). All-or-nothing: any invalid point
    raises ``RunConfigError`` naming it, and nothing is created."""
    reward_models = list(reward_models)
    base_config, config_errors = _config_clean(method, config)
    if config_errors.get("method"):
        raise RunConfigError(config_errors)
    errors = _inputs_check(method, config=base_config or None, snapshot=snapshot,
                           campaign=campaign, base_model=base_model,
                           reward_models=reward_models)
    shaped = bool(grid) and all(isinstance(v, list) and v for v in grid.values())
    if not shaped:
        errors["grid"] = ["A grid is {field: [value, ...]} with at least one value each."]
    points = _grid_points(grid) if shaped else []
    if len(points) > 200:
        errors["grid"] = [f"{len(points)} runs; a sweep has at most 200."]
    for point in points:
        cfg = {**dict(config or {}), **{k: v for k, v in point.items() if k != "seed"}}
        _, point_errors = _config_clean(method, cfg)
        if _seed_errors(point.get("seed", seed)):
            point_errors["seed"] = _seed_errors(point.get("seed", seed))
        for field, messages in point_errors.items():
            errors.setdefault(field, []).extend(f"{m} (grid point {point})" for m in messages)
    if errors:
        raise RunConfigError(errors)
    with transaction.atomic():
        sweep = Sweep.objects.create(method=method, snapshot=snapshot, config=dict(config or {}),
                                     grid=dict(grid), name=name[:200], created_by=requested_by)
        for point in points:
            label = ", ".join(f"{k}={v}" for k, v in point.items())
            run_create(method=method, snapshot=snapshot, campaign=campaign,
                       config={**dict(config or {}),
                               **{k: v for k, v in point.items() if k != "seed"}},
                       base_model=base_model, reference_model=reference_model,
                       reward_models=reward_models, seed=point.get("seed", seed),
                       name=f"{sweep} [{label}]", sweep=sweep, requested_by=requested_by)
    return sweep


def run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Cancel a run (``job_cancel``: a queued one at once, a running one within a few steps,
    its reporter sees the flag); ``ConflictError`` once it ended."""
    return job_cancel(TrainingRun, job_id=run.pk, what="Run")


def run_resume(*, run: TrainingRun) -> TrainingRun:
    """Queue a failed or cancelled run again; it continues from its last checkpoint."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise ConflictError(f"Only a failed or cancelled run resumes; #{run.pk} is "
                                f"{run.status}.")
        run.cancel_requested = False
        run.max_attempts = run.attempts + 3
        run.finished_at = None
        run.error = ""
        run.save(update_fields=["cancel_requested", "max_attempts", "finished_at", "error"])
        job_enqueue(run)
    return run


def model_ref(model: RegisteredModel | None) -> ModelRef | None:
    if model is None:
        return None
    return ModelRef(id=model.pk, path=model.path, kind=model.kind, name=model.name,
                    tokenizer_path=model.tokenizer.path if model.tokenizer_id else "")


def run_context(run: TrainingRun, reporter: Reporter) -> RunContext:
    """What the run's method gets: its config, inputs, output folder and ``reporter`` (the same
    for an attempt in the worker's process and for each rank of a launched one)."""
    resume = Path(run.last_checkpoint) if run.last_checkpoint else None
    campaign = run.snapshot.campaign if run.snapshot_id else run.campaign
    return RunContext(
        config=method_module(run.method).Config(**run.config), output_dir=run_dir(run),
        reporter=reporter, seed=run.seed, run_id=run.pk,
        rows=snapshot_rows(run.snapshot) if run.snapshot_id else None,
        base_model=model_ref(run.base_model), reference_model=model_ref(run.reference_model),
        reward_models=[model_ref(m) for m in run.reward_models.order_by("pk")],
        campaign_id=run.campaign_id,
        resume_from=resume if resume is not None and resume.exists() else None,
        true_reward=true_reward_for(campaign),
        noise_epsilon=_noise_epsilon(campaign), snapshot_id=run.snapshot_id,
    )


def _noise_epsilon(campaign: Campaign | None) -> float | None:
    if campaign is None:
        return None
    quality = CampaignQuality.objects.filter(campaign=campaign).first()
    return quality.noise_epsilon if quality is not None else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            out.append(p)
    return out


def _record_outputs(run: TrainingRun, result: MethodResult) -> list[int]:
    """Register the run's models and artifacts; returns the registered model ids."""
    root = run_dir(run)
    ids = []
    for produced in result.models:
        model = RegisteredModel.objects.create(
            name=produced.name[:200], kind=produced.kind, path=str(produced.path),
            produced_by=run, architecture=str(produced.meta.get("architecture", ""))[:100],
            parameters=produced.meta.get("parameters"), meta=produced.meta,
            # The tokenizer is saved in the model's own folder (``modeling.model_save``), with
            # any setting the run gave it (an encoder's truncation side): no separate row.
            tokenizer=None)
        ids.append(model.pk)
    seen = set(run.artifacts.values_list("name", flat=True))
    artifacts = []
    for f in _files([*result.artifacts, *(m.path for m in result.models)]):
        name = str(f.relative_to(root)) if f.is_relative_to(root) else f.name
        if name in seen:
            continue
        seen.add(name)
        artifacts.append(RunArtifact(run=run, name=name[:200], path=str(f),
                                     size=f.stat().st_size, sha256=file_sha256(f)))
    RunArtifact.objects.bulk_create(artifacts)
    return ids


# Methods that train through a transformers ``Trainer`` (data-parallel under ``accelerate
# launch``); best_of_n and ai_judge only sample or label, in the worker's own process.
LAUNCHED_METHODS = frozenset({"reward_model", "sft", "dpo", "rlhf", "rest"})
_CHILD_POLL_SECONDS = 1.0
_CHILD_CHECK_SECONDS = 5.0  # how often the waiting worker reads the row (cancel, ownership)
# Rank 0 obeys a cancel (or a lost attempt) at its next report; a launch still alive this long
# after the worker saw it (ranks stuck in a collective, a hung load) is stopped from outside.
_CHILD_STOP_GRACE_SECONDS = 60.0


def run_processes(*, method: str) -> int:
    """How many processes an attempt of ``method`` uses on this worker.

    ``GAPLAB_RUN_PROCESSES`` ("auto" = every visible GPU), at most the visible GPUs; 1 for a
    method outside ``LAUNCHED_METHODS``; 1 without a GPU unless ``GAPLAB_RUN_PROCESSES_CPU``
    allows gloo ranks on the CPU (tests: the same launch, collectives and reports as on GPUs).
    """
    wanted = str(settings.GAPLAB_RUN_PROCESSES).strip().lower()
    if method not in LAUNCHED_METHODS or wanted == "1":
        return 1
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return gpus if wanted == "auto" else max(1, min(int(wanted), gpus))
    if wanted == "auto" or not settings.GAPLAB_RUN_PROCESSES_CPU:
        return 1
    return max(1, int(wanted))


def attempt_context(run: TrainingRun, reporter: Reporter) -> RunContext:
    """The run's context for this attempt, its output folder made, a resume logged."""
    ctx = run_context(run, reporter)
    if ctx.resume_from is not None:
        reporter.log(f"resuming from {ctx.resume_from}")
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    return ctx


def run_execute(*, run_id: int) -> TrainingRun | None:
    """Run one attempt of a run in this worker (the ``training.run_execute`` task's body).

    Idempotent under redelivery (``job_start``). An exception fails the run with its
    traceback; a cancel seen by the reporter ends it cancelled; an attempt that lost ownership
    to the reaper writes nothing more. With ``run_processes`` > 1 the method runs in
    ``accelerate launch`` processes (``training.distributed``, rank 0 reporting) while this
    process keeps the heartbeat, then finishes the attempt the same way.
    """
    run = job_start(TrainingRun, job_id=run_id)
    if run is None:
        return None
    reporter: RunReporter | None = RunReporter(run)
    reporter.log(f"attempt {run.attempts} of {run.max_attempts} on {run.worker}")
    try:
        processes = run_processes(method=run.method)
        with job_heartbeat(run):
            if processes > 1:
                reporter.log(f"launching {processes} processes (accelerate)")
                reporter.flush()
                reporter = None  # the launched rank 0 speaks for the run until it exits
                outcome = _launch(run, processes=processes)
                reporter = _reporter_after_launch(run, lost=outcome.lost,
                                                  cancelled=outcome.cancelled)
                result = outcome.result
            else:
                ctx = attempt_context(run, reporter)
                reporter.flush()
                result = method_module(run.method).run(ctx)
            # Still under the heartbeat: hashing a real model's files can outlast the stale
            # limit, and the reaper must not take a run that is only finishing.
            _attempt_finish(run, reporter, result)
    except Exception:
        reason = traceback.format_exc()
        log.exception("run #%s failed", run.pk)
        reporter = reporter or _reporter_after_launch(run)
        reporter.log(reason.strip().splitlines()[-1])
        reporter.flush()
        job_fail(run, reason=reason[-5000:])
    return run


def _attempt_finish(run: TrainingRun, reporter: RunReporter, result: MethodResult) -> None:
    """Record the attempt's outcome: nothing when it lost the run, cancelled when a cancel was
    seen, else its models, artifacts and metrics, succeeded."""
    reporter.flush()
    if reporter.lost:
        log.warning("run #%s: attempt %s lost ownership; its result is dropped",
                    run.pk, run.attempts)
        return
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics.setdefault("processes", 1.0)
    if reporter.cancel_seen:
        job_cancelled(run, reason=f"Cancelled at step {run.step}.", result=metrics)
        return
    with transaction.atomic():
        model_ids = _record_outputs(run, result)
        if not job_succeed(run, result={**metrics, "registered_models": model_ids},
                           output_dir=str(run_dir(run))):
            # The reaper gave the run to another attempt meanwhile: register nothing.
            transaction.set_rollback(True)
            log.warning("run #%s: attempt %s lost ownership while finishing; its outputs "
                        "are dropped", run.pk, run.attempts)


def _reporter_after_launch(run: TrainingRun, *, lost: bool = False,
                           cancelled: bool = False) -> RunReporter:
    """The worker's reporter again, from what the launched rank 0 wrote (its log tail, step,
    checkpoint), with what it saw: a lost attempt, a cancel."""
    run.refresh_from_db(fields=["step", "total_steps", "log_tail", "last_checkpoint"])
    reporter = RunReporter(run)
    reporter.lost, reporter.cancel_seen = lost, cancelled
    return reporter


def _launch(run: TrainingRun, *, processes: int) -> LaunchOutcome:
    """Run the attempt as ``processes`` ranks (``training.distributed``) and wait for them.

    Their output goes to ``launch/attempt-<n>/output.log`` in the run's folder, rank 0's
    result to ``result.json`` there. A launch that exits with an error raises with the failing
    rank's traceback (or the output's tail). The ranks stop themselves at a cancel or a lost
    attempt; one still running ``_CHILD_STOP_GRACE_SECONDS`` after this process saw it is
    stopped (SIGTERM, then SIGKILL, to its process group).
    """
    from training.distributed import launch_command, launch_failure, result_load

    folder = run_dir(run) / "launch" / f"attempt-{run.attempts}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get(
               "DJANGO_SETTINGS_MODULE", "config.settings"),
           "PYTHONUNBUFFERED": "1", "GAPLAB_RUN_PARENT_PID": str(os.getpid()),
           # The ranks run with this worker's effective run settings.
           "GAPLAB_ARTIFACT_ROOT": str(settings.GAPLAB_ARTIFACT_ROOT),
           "GAPLAB_RUN_REPORT_EVERY": str(settings.GAPLAB_RUN_REPORT_EVERY),
           "GAPLAB_RUN_CHECKPOINT_EVERY": str(settings.GAPLAB_RUN_CHECKPOINT_EVERY)}
    with (folder / "output.log").open("wb") as out:
        proc = subprocess.Popen(
            launch_command(run_id=run.pk, attempt=run.attempts, processes=processes,
                           folder=folder),
            cwd=settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code, stopped = _launch_wait(run, proc)
        finally:
            if proc.poll() is None:  # this process is being stopped: so are its ranks
                _launch_stop(proc)
    if stopped is not None:
        return LaunchOutcome(result=MethodResult(metrics={"processes": float(processes)}),
                             lost=stopped == "lost",
                             cancelled=stopped == "cancelled")
    if code != 0:
        raise RuntimeError(f"The {processes} launched processes failed (exit code {code}):\n"
                           f"{launch_failure(folder)}")
    return result_load(folder / "result.json")


def _launch_wait(run: TrainingRun, proc: subprocess.Popen) -> tuple[int, str | None]:
    """(exit code, why it was stopped from here: "cancelled", "lost" or None)."""
    stop_at: float | None = None
    why: str | None = None
    next_check = time.monotonic() + _CHILD_CHECK_SECONDS
    while True:
        try:
            return proc.wait(timeout=_CHILD_POLL_SECONDS), None
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if why is None and now >= next_check:
            next_check = now + _CHILD_CHECK_SECONDS
            row = TrainingRun.objects.filter(pk=run.pk).values(
                "cancel_requested", "status", "attempts").first()
            if row is None or row["status"] != JobStatus.RUNNING or (
                    row["attempts"] != run.attempts):
                why = "lost"
            elif row["cancel_requested"]:
                why = "cancelled"
            if why is not None:
                stop_at = now + _CHILD_STOP_GRACE_SECONDS
        if stop_at is not None and now >= stop_at:
            log.warning("run #%s: launched processes still running %.0f s after the attempt "
                        "was %s; stopping them", run.pk, _CHILD_STOP_GRACE_SECONDS, why)
            return _launch_stop(proc), why


def _launch_stop(proc: subprocess.Popen) -> int:
    """SIGTERM the launch's process group (the launcher passes it to its ranks), SIGKILL it
    after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def model_register(*, name: str, kind: str, path: str | os.PathLike,
                   tokenizer: RegisteredModel | None = None,
                   meta: Mapping[str, Any] | None = None) -> RegisteredModel:
    """Register a model folder built or imported outside a run (tiny models, a base policy)."""
    meta = dict(meta or {})
    if kind not in ModelKind.values:
        raise ApplicationError(f"kind must be one of {', '.join(ModelKind.values)}.")
    if not Path(path).exists():
        raise ApplicationError(f"No model at {path}.")
    return RegisteredModel.objects.create(
        name=name[:200], kind=kind, path=str(path), tokenizer=tokenizer,
        architecture=str(meta.get("architecture", ""))[:100],
        parameters=meta.get("parameters"), meta=meta)
