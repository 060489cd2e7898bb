"""Real Celery worker (and beat) processes for tests, sharing the test database and broker.

The worker uses the test database (PostgreSQL ``test_<name>``, or the SQLite test file) and the
broker of CELERY_BROKER_URL (Redis in CI), else kombu's filesystem broker in the same data dir.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]


def worker_database_url() -> str:
    """DATABASE_URL of the database this test uses (pytest-django has switched NAME to it)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"  # sqlite:////abs/path
    configured = os.environ.get("DATABASE_URL")
    if configured:  # keep scheme, credentials and options; swap the database name
        parts = urlsplit(configured)
        return urlunsplit(parts._replace(path="/" + quote(db["NAME"])))
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{db['HOST']}{port}/{quote(db['NAME'])}"


def worker_env(**overrides: str) -> dict[str, str]:
    """The environment of a worker process on the test database and the test broker."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": worker_database_url(),
        # Same data dir: the SQLite test file and the filesystem broker's folders live there.
        "GAPLAB_DATA_DIR": str(settings.DATA_DIR),
        "GAPLAB_CELERY_EAGER": "0",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if not os.environ.get("CELERY_BROKER_URL"):
        env.pop("CELERY_BROKER_URL", None)  # the settings fall back to filesystem://
        assert settings.CELERY_BROKER_URL.startswith("filesystem://")
    env.update(overrides)
    return env


class Worker:
    """A `celery worker` subprocess (its own process group) whose output a thread collects."""

    def __init__(self, env: dict[str, str], *, pool: str = "solo", beat: bool = False,
                 queues: str = "default", schedule: Path | None = None):
        self.lines: list[str] = []
        self.ready = threading.Event()
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues,
               "--pool", pool, "--concurrency", "1", "-l", "INFO",
               "-n", f"test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"]
        if beat:
            cmd += ["--beat", "--schedule", str(schedule or Path(env["GAPLAB_DATA_DIR"])
                                                / f"beat-{uuid.uuid4().hex[:8]}")]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if " ready." in line:
                self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker not ready after {timeout} s:\n{self.output()}")

    def kill_all(self) -> None:
        """SIGKILL the whole worker: main process, pool children and embedded beat."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM); SIGKILL of the group only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill_all()
                return
        try:  # an embedded beat or pool children left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reader.join(timeout=5)


def purge_queue(app, queue: str) -> None:
    """Drop messages left in the test broker's queue by earlier runs."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_declare(queue=queue, durable=True, auto_delete=False)
        channel.queue_purge(queue)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    def __init__(self, tmp_path):
        self.port = _free_port()
        self.dir = tmp_path
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def broker(tmp_path, settings):
    """A private redis-server, and this test process publishing to it (not eagerly)."""
    from config.celery import app

    redis = PrivateRedis(tmp_path)
    redis.start()
    keys = ("broker_url", "broker_write_url", "broker_read_url", "broker_transport_options")
    saved = {key: app.conf[key] for key in keys}
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    # The write and read URLs were resolved from the settings' URL: move all three.
    app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = redis.url
    app.conf.broker_transport_options = {"visibility_timeout": 3900}
    _drop_pools(app)
    try:
        yield redis
    finally:
        _drop_pools(app)
        app.conf.update(saved)
        redis.stop()


def _drop_pools(app) -> None:
    """Forget pooled broker connections so the next publish connects to the current URL."""
    from kombu import pools

    pools.reset()  # kombu's global producer pools hold on to the old connections
    app._pool = None
    app.amqp._producer_pool = None
