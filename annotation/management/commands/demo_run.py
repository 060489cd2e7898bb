from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = ("Start the web server, a Celery worker on queue default with beat (the job reaper "
            "and the outbox relay) and a worker on queue gpu (training); Ctrl-C stops all.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options) -> None:
        python = sys.executable
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        # Two workers, so a long training run never blocks quality recomputes and exports.
        # The solo pool on gpu: training runs torch, and a forked pool can hang (ML-STACK.md).
        # --beat runs the periodic job reaper and outbox relay in the default worker.
        from django.conf import settings

        schedule = str(settings.CELERY_BEAT_SCHEDULE_FILENAME)
        procs = [
            subprocess.Popen([python, "manage.py", "runserver", f"{host}:{port}", "--noreload"],
                             env=env),
            subprocess.Popen([python, "-m", "celery", "-A", "config", "worker", "-Q",
                              "default", "-n", "default@%h", "--pool", "solo", "--beat",
                              "--schedule", schedule, "--loglevel", "INFO"], env=env),
            subprocess.Popen([python, "-m", "celery", "-A", "config", "worker", "-Q", "gpu",
                              "-n", "gpu@%h", "--pool", "solo", "--loglevel", "INFO"],
                             env={**env, "HF_HUB_DISABLE_TELEMETRY": "1"}),
        ]
        stopping = False

        def stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(f"Gaplab demo: http://{host}:{port}/  (Ctrl-C stops web and workers)",
                          ending="\n")
        self.stdout.flush()
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        # Web and the default worker stop warm (SIGTERM). The gpu worker stops cold (SIGQUIT):
        # a warm stop would wait for a training run to end. A run cut off this way is the
        # reaper's: at the next start it is re-queued and resumes from its last checkpoint.
        stop_signals = [signal.SIGTERM, signal.SIGTERM, signal.SIGQUIT]
        for p, sig in zip(procs, stop_signals, strict=True):
            if p.poll() is None:
                p.send_signal(sig)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.stdout.write("Stopped.")
        failed = [p.returncode for p in procs
                  if p.returncode not in (0, -signal.SIGTERM, -signal.SIGQUIT)]
        if failed and not stopping:
            raise SystemExit(1)
