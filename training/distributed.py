"""One attempt of a training run as N data-parallel processes on one machine.

``training.services.runs.run_execute`` starts it, when ``GAPLAB_RUN_PROCESSES`` gives a run
more than one process, as ``accelerate launch --multi_gpu --num_processes N -m
training.distributed RUN_ID ATTEMPT FOLDER`` and keeps the job's heartbeat while it waits. Every
rank loads the run, builds the same context (``runs.run_context``) and calls the method's
``run``; the method's ``Trainer`` sees the launcher's environment and trains with DDP (NCCL on
GPUs, gloo on the CPU), each rank on its own shard of every batch (so a run's effective batch is
N × ``batch_size``).

- Rank 0 speaks for the run: its reporter is a ``RunReporter`` on the attempt the worker started
  (progress, metrics, log, checkpoints written once), and it writes the ``MethodResult`` to
  ``FOLDER/result.json``, which the worker records exactly as for an in-process attempt.
- The other ranks report nothing and write into a private temporary folder (what they save,
  their copy of the final model included, is deleted at exit). That folder starts as a copy of
  the run's folder, checkpoint files linked, so a resumed attempt resumes every rank from the
  same checkpoint and the same finished ReST rounds.
- A cancel or a lost attempt must stop every rank together, or the others wait forever in the
  next collective: ``RankReporter.cancelled`` is itself a collective (rank 0's answer, broadcast),
  and every rank asks at the same points, since every rank runs the same method code.
- A rank that raises writes its traceback to ``FOLDER/error-rank<r>.txt``; the launcher then
  stops the others and the worker fails the run with it. A worker that dies (SIGKILL) is seen
  by rank 0 at its next report (``RankReporter``), and the ranks stop without writing.

Limits: the other ranks' RNG states saved with a checkpoint go to their private folders and are
lost, so on resume only rank 0 restores its own (tiny models have no dropout; data order comes
from the seeded sampler). Ranks must take the same branches: sampling is seeded identically on
every rank, but on GPUs it need not be bit-identical, so a ReST round that keeps no sample on one
rank only would leave the others waiting.

Post-training work (the KL measurement, sampling, saving) runs on every rank, as the methods
are written for one process: correct with the private folders, but the other ranks' copies of it
are wasted time.

Why ``--multi_gpu`` on the CPU as well: accelerate's ``--cpu`` uses its simple launcher, which
starts one process (several only under ``mpirun``); ``--multi_gpu`` starts the ranks through
torchrun, and each rank picks the CPU and gloo itself (``use_cpu`` from
``training.modeling.trainer_kwargs``, ``PartialState(cpu=True)`` here).

Light at import (``runs`` imports ``LaunchOutcome`` from here in the web process): Django,
torch and accelerate are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.methods.base import MethodResult, ProducedModel, Reporter

RESULT_FILE = "result.json"
ERROR_FILE = "error-rank{rank}.txt"
OUTPUT_FILE = "output.log"
# Folders of the run's output that are the launch's own (logs, results), never a rank's input.
_LAUNCH_FOLDER = "launch"


def launch_command(*, run_id: int, attempt: int, processes: int, folder: Path) -> list[str]:
    """The worker's command for one launched attempt (its own Python, a free port)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
            "-m", "training.distributed", str(run_id), str(attempt), str(folder)]


# --- What rank 0 hands back ---------------------------------------------------------------------


@dataclass
class LaunchOutcome:
    """A launched attempt's result and what rank 0's reporter saw."""

    result: MethodResult = field(default_factory=MethodResult)
    lost: bool = False
    cancelled: bool = False


def result_dump(path: Path, outcome: LaunchOutcome) -> None:
    """Write the outcome as JSON, atomically (a reader sees all of it or no file)."""
    result = outcome.result
    data = {"metrics": {k: float(v) for k, v in result.metrics.items()},
            "models": [{"name": m.name, "kind": m.kind, "path": str(m.path), "meta": m.meta}
                       for m in result.models],
            "artifacts": [str(a) for a in result.artifacts],
            "lost": outcome.lost, "cancelled": outcome.cancelled}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def result_load(path: Path) -> LaunchOutcome:
    """Read what ``result_dump`` wrote; a launch that exited 0 without it raises."""
    if not path.exists():
        raise RuntimeError(f"The launched processes exited without a result ({path}).")
    data = json.loads(path.read_text(encoding="utf-8"))
    return LaunchOutcome(
        result=MethodResult(
            metrics=dict(data["metrics"]),
            models=[ProducedModel(name=m["name"], kind=m["kind"], path=Path(m["path"]),
                                  meta=dict(m["meta"])) for m in data["models"]],
            artifacts=[Path(a) for a in data["artifacts"]]),
        lost=bool(data["lost"]), cancelled=bool(data["cancelled"]))


def launch_failure(folder: Path, *, tail_chars: int = 4000) -> str:
    """Why a launch failed: the first failing rank's traceback, else its output's tail."""
    errors = sorted(folder.glob(ERROR_FILE.format(rank="*")),
                    key=lambda p: int(p.stem.rsplit("rank", 1)[-1]))
    if errors:
        return f"{errors[0].stem}:\n{errors[0].read_text(encoding='utf-8', errors='replace')}"
    output = folder / OUTPUT_FILE
    text = output.read_text(encoding="utf-8", errors="replace") if output.exists() else ""
    return text[-tail_chars:] or "(no output)"


# --- A rank's reporter ----------------------------------------------------------------------------


class RankReporter:
    """The reporter every rank hands its method: rank 0's ``RunReporter`` (or a silent one on
    the other ranks) for progress, metrics, log and checkpoints, and a collective ``cancelled``:
    rank 0 decides (a cancel, a lost attempt, or a worker that is gone), every rank gets its
    answer through one broadcast, and once True it stays True on every rank without another
    collective."""

    def __init__(self, inner: Reporter, *, is_main: bool, device: Any,
                 parent_pid: int | None = None) -> None:
        self.inner = inner
        self.is_main = is_main
        self.device = device
        self.parent_pid = parent_pid
        self.stopped = False

    def progress(self, step: int, total: int) -> None:
        self.inner.progress(step, total)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.inner.metrics(step, values)

    def log(self, line: str) -> None:
        self.inner.log(line)

    def checkpoint(self, path: str | Path) -> None:
        self.inner.checkpoint(path)

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()

    def _parent_gone(self) -> bool:
        """The worker that launched the ranks died (SIGKILL): nobody will record the result,
        and the reaper gives the run to a new attempt once the heartbeat stops. It is gone when
        it is no longer among this process's ancestors (its children are re-parented when it
        exits, zombie or not)."""
        if self.parent_pid is None:
            return False
        import psutil

        try:
            return self.parent_pid not in {p.pid for p in psutil.Process().parents()}
        except psutil.Error:
            return False

    def cancelled(self) -> bool:
        if self.stopped:
            return True
        import torch
        import torch.distributed as dist

        decision = 0.0
        if self.is_main:
            if self._parent_gone() and hasattr(self.inner, "lost"):
                self.inner.lost = True  # write nothing more: the run is no longer ours
            decision = float(self.inner.cancelled())
        flag = torch.tensor([decision], device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(flag, src=0)
        self.stopped = bool(flag.item())
        return self.stopped


# --- The ranks' folders ---------------------------------------------------------------------------


def rank_folder(shared: Path, *, prefix: str) -> Path:
    """A private output folder for a rank other than 0, holding what earlier attempts left in
    ``shared``: files inside trainer checkpoints (``checkpoint-*``, only read on resume) as
    links, every other file copied (a method may rewrite it: a ReST round's samples, a final
    model), the launch's own folder left out."""
    private = Path(tempfile.mkdtemp(prefix=prefix))
    if not shared.is_dir():
        return private
    for src in sorted(shared.rglob("*")):
        rel = src.relative_to(shared)
        if rel.parts[0] == _LAUNCH_FOLDER:
            continue
        dst = private / rel
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            if any(part.startswith("checkpoint-") for part in rel.parts[:-1]):
                dst.symlink_to(src.resolve())
            else:
                shutil.copy2(src, dst)
    return private


def _moved(path: Path | None, old: Path, new: Path) -> Path | None:
    if path is None or not Path(path).is_relative_to(old):
        return path
    return new / Path(path).relative_to(old)


# --- The rank's work ------------------------------------------------------------------------------


def attempt_run(*, run_id: int, attempt: int, folder: Path) -> None:
    """This rank's part of the attempt (after ``django.setup()``, under the launcher)."""
    import torch
    from accelerate import PartialState

    from training.methods import method_module
    from training.methods.base import NullReporter
    from training.models import TrainingRun
    from training.services.progress import RunReporter
    from training.services.runs import attempt_context

    # Before any model loads: joins the process group and, on GPUs, makes "cuda" this rank's
    # device (the Trainer's own PartialState later reuses the group).
    state = PartialState(cpu=not torch.cuda.is_available())
    rank = state.process_index
    run = TrainingRun.objects.get(pk=run_id)
    # The attempt the worker started, whatever the row says now: if the reaper has given the
    # run to another attempt, rank 0's first write touches no row and the ranks stop.
    run.attempts = attempt
    inner: Reporter = RunReporter(run) if state.is_main_process else NullReporter()
    parent = os.environ.get("GAPLAB_RUN_PARENT_PID")
    reporter = RankReporter(inner, is_main=state.is_main_process, device=state.device,
                            parent_pid=int(parent) if parent else None)
    private: Path | None = None
    try:
        reporter.log(f"{state.num_processes} processes ({state.backend} on "
                     f"{state.device.type}); rank 0 reports")
        ctx = attempt_context(run, reporter)
        if not state.is_main_process:
            private = rank_folder(ctx.output_dir, prefix=f"gaplab-run{run_id}-rank{rank}-")
            ctx = dataclasses.replace(ctx, output_dir=private,
                                      resume_from=_moved(ctx.resume_from, ctx.output_dir,
                                                         private))
        # Rank 0 writes nothing into the shared folder before the others have copied it.
        state.wait_for_everyone()
        reporter.flush()
        result = method_module(run.method).run(ctx)
        if state.is_main_process:
            reporter.flush()
            result.metrics["processes"] = float(state.num_processes)
            result_dump(folder / RESULT_FILE, LaunchOutcome(
                result=result, lost=bool(getattr(inner, "lost", False)),
                cancelled=bool(getattr(inner, "cancel_seen", False))))
    except BaseException:
        (folder / ERROR_FILE.format(rank=rank)).write_text(traceback.format_exc(),
                                                           encoding="utf-8")
        raise
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
    state.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m training.distributed RUN_ID ATTEMPT FOLDER (under accelerate "
              "launch, started by training.services.runs.run_execute)", file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    attempt_run(run_id=int(args[0]), attempt=int(args[1]), folder=Path(args[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
