"""A running run's voice: progress, metrics, log tail, checkpoints, and its ear for a cancel.

Every write goes through ``job_owned``: once the reaper has given the run to another attempt
(this worker was presumed dead), writes touch no row and ``cancelled()`` answers True, so a
zombie attempt stops instead of racing the new one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from annotation.services.jobs import job_owned
from training.models import RunMetric, TrainingRun

LOG_TAIL_LINES = 200
_PENDING_MAX = 500  # metric rows held before a write of their own
_CANCEL_CHECK_SECONDS = 1.0


class RunReporter:
    """The ``training.methods.base.Reporter`` of one attempt of one run."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.lost = False
        self.cancel_seen = False
        self._lines: deque[str] = deque(run.log_tail.splitlines()[-LOG_TAIL_LINES:],
                                        maxlen=LOG_TAIL_LINES)
        self._checked_at = 0.0
        self._pending: list[RunMetric] = []
        self._log_dirty = False  # lines logged since the tail was last written

    def _write(self, **fields) -> None:
        """One transaction (one commit: on SQLite each commit is an fsync): the metrics
        gathered since the last write, then the run's fields and its heartbeat."""
        if self.lost:
            return
        with transaction.atomic():
            if not job_owned(self.run).update(heartbeat_at=timezone.now(), **fields):
                self.lost = True
                self._pending.clear()
                return
            if self._pending:
                RunMetric.objects.bulk_create(self._pending)
                self._pending.clear()
        for name, value in fields.items():
            setattr(self.run, name, value)

    def _tail(self) -> dict[str, str]:
        """``log_tail`` when lines came since the last write (the tail is up to 200 lines:
        rewriting it unchanged every report interval is wasted I/O on the training loop)."""
        if not self._log_dirty:
            return {}
        self._log_dirty = False
        return {"log_tail": "\n".join(self._lines)}

    def progress(self, step: int, total: int) -> None:
        self._write(step=step, total_steps=max(total, step), **self._tail())

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """Kept until the next progress write (every report interval) or ``flush``."""
        if self.lost:
            return
        self._pending += [
            RunMetric(run_id=self.run.pk, step=step, name=str(name)[:100], value=float(v))
            for name, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
        if len(self._pending) >= _PENDING_MAX:
            self.flush()

    def log(self, line: str) -> None:
        for part in str(line).splitlines() or [""]:
            self._lines.append(f"{timezone.now():%H:%M:%S} {part}"[:1000])
        self._log_dirty = True

    def flush(self) -> None:
        self._write(**self._tail())

    def checkpoint(self, path: str | Path) -> None:
        self._write(last_checkpoint=str(path))

    def cancelled(self) -> bool:
        if self.lost or self.cancel_seen:
            return True
        now = time.monotonic()
        if now - self._checked_at >= _CANCEL_CHECK_SECONDS:
            self._checked_at = now
            row = TrainingRun.objects.filter(pk=self.run.pk).values(
                "cancel_requested", "status", "attempts").first()
            if row is None or row["cancel_requested"]:
                self.cancel_seen = True
            elif row["status"] != TrainingRun.Status.RUNNING or (
                    row["attempts"] != self.run.attempts):
                self.lost = True
        return self.lost or self.cancel_seen
