"""The bridge from a transformers ``Trainer`` to a run's reporter: progress, metrics and the
heartbeat every ``GAPLAB_RUN_REPORT_EVERY`` steps, the checkpoint it saved, and a cancel obeyed
at the next report, by every rank of a launched run at once (imports transformers: worker-only)."""

from __future__ import annotations

import math
import os

from transformers import TrainerCallback

from training.methods.base import Reporter


class ReporterCallback(TrainerCallback):
    def __init__(self, reporter: Reporter, *, every: int = 5, step_offset: int = 0,
                 total_override: int | None = None, prefix: str = "") -> None:
        self.reporter = reporter
        self.every = max(1, every)
        self.offset = step_offset  # for methods that chain several trainers (ReST rounds)
        self.total = total_override
        self.prefix = prefix

    def _total(self, state) -> int:
        return self.total if self.total is not None else state.max_steps + self.offset

    def on_step_end(self, args, state, control, **kwargs):
        # Every rank of a launched run asks at the same steps: its reporter's ``cancelled()`` is
        # a collective there (``training.distributed.RankReporter``: rank 0's answer broadcast),
        # so all ranks stop at one step and none waits alone in the next gradient all-reduce.
        if state.global_step % self.every == 0:
            self.reporter.progress(self.offset + state.global_step, self._total(state))
            if self.reporter.cancelled():
                control.should_training_stop = True
                control.should_save = False
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = {f"{self.prefix}{k}": float(v) for k, v in (logs or {}).items()
                  if isinstance(v, int | float) and not isinstance(v, bool)
                  and math.isfinite(v)}
        if values:
            self.reporter.metrics(self.offset + state.global_step, values)
        return control

    def on_save(self, args, state, control, **kwargs):
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(path):
            self.reporter.checkpoint(path)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.reporter.progress(self.offset + state.global_step, self._total(state))
        return control
