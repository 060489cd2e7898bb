"""Load benchmark: simulated annotators over HTTP against the production stack.

Starts, on a fresh database of its own (``--db``, dropped, created and migrated each run):
gunicorn (``config.wsgi``, ``DEBUG=0``, a ``SECRET_KEY``, gthread workers, the API throttles on
a shared Redis cache via ``GAPLAB_CACHE_URL``, a psycopg pool per process, load shedding from
annotation/middleware_overload.py), and a real Celery worker with beat (``celery -A config
worker -Q default --beat``: quality recomputes, the job reaper and the outbox relay) on Redis.

Each simulated annotator is a user with a DRF token doing what a careful client does, on one
keep-alive connection: ``POST /api/campaigns/{id}/next/``, think, then ``POST /api/judgments/``
with a fresh idempotency key. A submit that timed out or got 503 is retried with the SAME key
(so it records one judgment at most); a 503 or 429 is retried after its ``Retry-After`` (plus
up to that much random jitter, so clients do not come back in step). Think time: log-normal,
median ``--think-median`` s (default 8: a fast, practised rater on short pairs; people reading
two long answers take 20-60 s), sigma 0.5, at least 1 s; ``--think-median 0`` means none.
Clients are threads in ``--procs`` processes, so 200 of them fit on 2 cores.

Phases, each on its own campaign (overlap 3, calibration rate 0.1, with far more comparisons
and calibration items than the phase can use, so work never runs out):

  baseline  one annotator, no think time, --baseline-seconds: the unloaded cost of a judgment on
            this machine today (so numbers compare across noisy machines)
  load      --clients annotators with think time for --duration seconds: the main figures
  overload  --overload-clients annotators with no think time for --overload-seconds: past
            capacity, to show that overload answers 503 with Retry-After, never a timeout or 500

After the phases the database is checked: ``lost`` (a submit the client saw succeed whose
judgment is not stored), ``duplicates`` (two judgments for one assignment, an annotator with two
current judgments on one comparison, or a comparison over its overlap). The last line printed
is one JSON object; progress goes to stderr. A quick run:

    .venv/bin/python benchmarks/load_annotators.py --duration 15 --overload-seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SECRET_KEY = "bench-load-" + "x" * 50
OVERLAP = 3
CALIBRATION_RATE = 0.1
# An upper bound on judgments/s on a small machine, to size each phase's pool of comparisons.
ASSUMED_MAX_RATE = 150
SCREEN_CHOICES = ("left", "right", "left", "right", "tie", "both_bad")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def db_url(base_url: str, name: str) -> str:
    return base_url.rsplit("/", 1)[0] + "/" + name


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --------------------------------------------------------------------------------------------
# Setup inside Django (a subprocess on the bench database): users, tokens, campaigns, items
# --------------------------------------------------------------------------------------------

_WORDS = (
    "the model answer should explain why this approach works and where it fails in practice "
    "consider a small example first then generalise carefully to the full problem statement "
    "python function returns list value error test case input output memory time complexity "
    "however therefore because although moreover instead finally overall clearly roughly"
).split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    words: list[str] = []
    target = rng.randint(lo, hi)
    while sum(len(w) + 1 for w in words) < target:
        words.append(rng.choice(_WORDS))
    return " ".join(words).capitalize() + "."


def _write_items(path: Path, *, n_regular: int, n_calibration: int, seed: int) -> None:
    """A JSONL import file: prompts with 4 responses (6 pairs each), then calibration pairs."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(math.ceil(n_regular / 6)):
            responses = [{"text": f"{_text(rng, 400, 2000)} ({i}-{k})", "model": f"model-{k}"}
                         for k in range(4)]
            fh.write(json.dumps({"prompt": _text(rng, 40, 300) + "?", "responses": responses,
                                 "external_id": f"p{i}"}) + "\n")
        for i in range(n_calibration):
            good = _text(rng, 400, 2000)
            fh.write(json.dumps({"prompt": _text(rng, 40, 300) + "?", "gold": "A",
                                 "responses": [{"text": f"{good} (g{i})"},
                                               {"text": f"{good[: len(good) // 3]} (g{i})"}],
                                 "external_id": f"g{i}"}) + "\n")


def django_setup(spec: dict) -> dict:
    """Create the annotators (with tokens) and one campaign per phase, through the services."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from rest_framework.authtoken.models import Token

    from annotation.services import Role, user_create_with_role
    from annotation.services.campaigns import campaign_create
    from annotation.services.imports import comparisons_import_file

    tokens = []
    for i in range(spec["annotators"]):
        user = user_create_with_role(username=f"load{i + 1}", password=None,
                                     role=Role.ANNOTATOR)
        tokens.append(Token.objects.create(user=user).key)
    campaigns = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (phase, n_regular) in enumerate(spec["pools"].items()):
            # accuracy_threshold 0: the simulated annotators answer gold items at random and
            # would otherwise be paused (403) by the per-submit quality update.
            campaign = campaign_create(
                name=f"load-{phase}", title=f"Load benchmark: {phase}",
                instructions="Pick the better answer.", overlap=OVERLAP,
                calibration_rate=CALIBRATION_RATE, accuracy_threshold=0.0,
            )
            path = Path(tmp) / f"{phase}.jsonl"
            _write_items(path, n_regular=n_regular, n_calibration=spec["calibration"],
                         seed=100 + k)
            result = comparisons_import_file(campaign=campaign, source=path, fmt="jsonl")
            campaigns[phase] = {"id": campaign.pk, "comparisons": result.comparisons,
                                "calibration": result.calibration}
    return {"tokens": tokens, "campaigns": campaigns}


# --------------------------------------------------------------------------------------------
# Simulated annotators (threads in client processes)
# --------------------------------------------------------------------------------------------

class Stats:
    """What one client process saw; merged by the parent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []  # every answered request, seconds
        self.ok_latencies: list[float] = []  # 2xx only
        self.status: dict[str, int] = {}
        self.timeouts = 0
        self.connect_errors = 0
        self.retry_after_missing = 0  # a 503/429 without Retry-After
        self.confirmed: list[tuple[int, str, int]] = []  # (annotator index, key, judgment id)
        self.submits_retried = 0
        self.exhausted = 0
        self.samples: list[str] = []

    def answered(self, status: int, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if 200 <= status < 300:
                self.ok_latencies.append(seconds)
            self.status[str(status)] = self.status.get(str(status), 0) + 1

    def bump(self, counter: str) -> None:
        with self.lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def sample(self, text: str) -> None:
        with self.lock:
            if len(self.samples) < 5:
                self.samples.append(text[:300])

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "lock"}


class Annotator:
    """One simulated annotator: a token, a keep-alive connection, the submit-and-next loop."""

    def __init__(self, *, index: int, token: str, port: int, campaign_id: int, timeout: float,
                 think_median: float, stats: Stats, seed: int) -> None:
        self.index, self.port, self.timeout, self.stats = index, port, timeout, stats
        self.think_median = think_median
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json",
                        "Accept": "application/json"}
        self.next_path = f"/api/campaigns/{campaign_id}/next/"
        self.rng = random.Random(seed)
        self.conn: http.client.HTTPConnection | None = None

    def _post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        """One request; None on a client-side timeout or a broken connection."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except TimeoutError:
            self.stats.bump("timeouts")
            self._reset()
            return None
        except (OSError, http.client.HTTPException) as exc:
            # A keep-alive connection the server closed between requests: reconnect, retry.
            self.stats.bump("connect_errors")
            self.stats.sample(f"{path}: {exc!r}")
            self._reset()
            return None
        self.stats.answered(resp.status, time.perf_counter() - t0)
        if resp.getheader("Connection", "").lower() == "close":
            self._reset()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def _reset(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def _back_off(self, status: int, headers: dict[str, str]) -> None:
        if status in (503, 429):
            raw = headers.get("retry-after")
            if raw is None:
                self.stats.bump("retry_after_missing")
            wait = float(raw) if raw and raw.isdigit() else 1.0
            time.sleep(wait + self.rng.uniform(0, wait))
        else:
            time.sleep(0.5)

    def next(self, deadline: float) -> str | None:
        """The token of the next comparison; None at the deadline or when work ran out."""
        while time.time() < deadline:
            answer = self._post(self.next_path, b"")
            if answer is None:
                continue
            status, headers, data = answer
            if status == 200:
                return json.loads(data)["token"]
            if status == 204:
                self.stats.bump("exhausted")
                return None
            if status not in (503, 429):
                self.stats.sample(f"next {status}: {data[:200]!r}")
            self._back_off(status, headers)
        return None

    def submit(self, token: str, deadline: float) -> bool:
        """Submit one judgment, retrying with the same key until it is stored or refused."""
        key = uuid.uuid4().hex
        rng = self.rng
        body = json.dumps({
            "token": token, "choice": rng.choice(SCREEN_CHOICES), "strength": rng.randint(1, 3),
            "idempotency_key": key, "seconds_spent": round(rng.uniform(3, 90), 1),
        }).encode()
        first = True
        while time.time() < deadline:
            if not first:
                self.stats.bump("submits_retried")
            first = False
            answer = self._post("/api/judgments/", body)
            if answer is None:
                continue  # timed out: the same key again, so at most one judgment
            status, headers, data = answer
            if status in (200, 201):
                with self.stats.lock:
                    self.stats.confirmed.append((self.index, key, json.loads(data)["id"]))
                return True
            if status in (503, 429):
                self._back_off(status, headers)
                continue
            self.stats.sample(f"submit {status}: {data[:200]!r}")
            return False
        return False

    def think(self, end_at: float, fraction: float = 1.0) -> bool:
        """Sleep one think time (times ``fraction``); False if it would run past ``end_at``."""
        if self.think_median <= 0:
            return True
        seconds = fraction * max(1.0, self.think_median * math.exp(self.rng.gauss(0, 0.5)))
        left = end_at - time.time()
        time.sleep(max(0.0, min(seconds, left)))
        return seconds < left

    def run(self, start_at: float, end_at: float, grace: float) -> None:
        # People do not start in step: first requests spread over 2 s, and the first think is
        # a random part of a whole one, so submits arrive at the steady rate from the start.
        time.sleep(max(0.0, start_at - time.time()) + self.rng.uniform(0, 2.0))
        first = True
        while time.time() < end_at:
            token = self.next(end_at)
            if token is None:
                if time.time() < end_at:
                    time.sleep(1.0)  # no work (should not happen: pools are oversized)
                continue
            if not self.think(end_at, self.rng.random() if first else 1.0):
                break
            first = False
            # A submit begun before the end may finish (and retry) during the grace period.
            self.submit(token, end_at + grace)
        self._reset()


def client_process(port: int, campaign_id: int, tokens: list[tuple[int, str]], start_at: float,
                   end_at: float, grace: float, timeout: float, think_median: float,
                   out: mp.Queue) -> None:
    stats = Stats()
    threads = []
    for index, token in tokens:
        annotator = Annotator(index=index, token=token, port=port, campaign_id=campaign_id,
                              timeout=timeout, think_median=think_median, stats=stats,
                              seed=index * 7919 + int(start_at))
        threads.append(threading.Thread(target=annotator.run, args=(start_at, end_at, grace),
                                        daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({**stats.as_dict(), "cpu_s": time.process_time()})


def run_phase(args, *, name: str, port: int, campaign_id: int, tokens: list[str],
              clients: int, seconds: float, think_median: float) -> dict:
    """Run ``clients`` annotators for ``seconds``; merge what the client processes saw."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs_n = max(1, min(args.procs, clients))
    start_at = time.time() + 1.0 + clients * 0.005
    end_at = start_at + seconds
    chunks = [[(i, tokens[i]) for i in range(clients) if i % procs_n == p]
              for p in range(procs_n)]
    procs = [ctx.Process(target=client_process,
                         args=(port, campaign_id, chunk, start_at, end_at, args.grace,
                               args.timeout, think_median, out))
             for chunk in chunks]
    cpu0 = _machine_cpu()
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + args.grace + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    cpu1 = _machine_cpu()
    merged: dict = {"latencies": [], "ok_latencies": [], "status": {}, "confirmed": [],
                    "samples": []}
    for r in results:
        merged["latencies"] += r["latencies"]
        merged["ok_latencies"] += r["ok_latencies"]
        merged["confirmed"] += r["confirmed"]
        merged["samples"] += r["samples"]
        for k, v in r["status"].items():
            merged["status"][k] = merged["status"].get(k, 0) + v
        for k in ("timeouts", "connect_errors", "retry_after_missing", "submits_retried",
                  "exhausted", "cpu_s"):
            merged[k] = merged.get(k, 0) + r[k]
    busy, idle = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    status = merged["status"]
    summary = {
        "phase": name, "clients": clients, "seconds": seconds, "think_median_s": think_median,
        "confirmed": len(merged["confirmed"]),
        "requests": len(merged["latencies"]),
        "requests_per_s": round(len(merged["latencies"]) / seconds, 1),
        "p50_ms": _ms(_pct(merged["latencies"], 0.5)),
        "p99_ms": _ms(_pct(merged["latencies"], 0.99)),
        "ok_p50_ms": _ms(_pct(merged["ok_latencies"], 0.5)),
        "ok_p99_ms": _ms(_pct(merged["ok_latencies"], 0.99)),
        "max_ms": _ms(max(merged["latencies"], default=None)),
        "status": dict(sorted(status.items())),
        "http_5xx": sum(v for k, v in status.items() if k.startswith("5") and k != "503"),
        "http_503": status.get("503", 0),
        "http_429": status.get("429", 0),
        "http_other_4xx": sum(v for k, v in status.items()
                              if k.startswith("4") and k != "429"),
        "timeouts": merged["timeouts"], "connect_errors": merged["connect_errors"],
        "retry_after_missing": merged["retry_after_missing"],
        "submits_retried": merged["submits_retried"], "exhausted": merged["exhausted"],
        "client_cpu_s": round(merged["cpu_s"], 1),
        "machine_busy_pct": round(100 * busy / max(1e-9, busy + idle), 1),
        "error_samples": merged["samples"][:5],
    }
    return {"summary": summary, "confirmed": merged["confirmed"]}


# --------------------------------------------------------------------------------------------
# Processes: gunicorn and the Celery worker
# --------------------------------------------------------------------------------------------

def _machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / tick, (v[3] + v[4]) / tick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(args, url: str) -> dict[str, str]:
    """The environment of the web and worker processes: production-like, on the bench DB."""
    return {
        **os.environ, "DATABASE_URL": url, "DEBUG": "0", "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1", "DJANGO_SETTINGS_MODULE": "config.settings",
        "CELERY_BROKER_URL": args.broker_url, "GAPLAB_CACHE_URL": args.cache_url,
        "GAPLAB_CACHE_KEY_PREFIX": f"bench-load-{uuid.uuid4().hex[:8]}",
        "GAPLAB_CELERY_EAGER": "0", "GAPLAB_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        "GAPLAB_MAX_IN_FLIGHT": str(args.max_in_flight),
        "GAPLAB_IN_FLIGHT_WAIT_MS": str(args.in_flight_wait_ms),
        "GAPLAB_OVERLOAD_RETRY_AFTER": str(args.retry_after),
        "GAPLAB_DB_POOL_SIZE": str(args.db_pool_size),
        "GAPLAB_DB_POOL_TIMEOUT": str(args.db_pool_timeout),
    }


def start_gunicorn(args, env: dict[str, str], port: int, log_path: Path,
                   token: str) -> subprocess.Popen:
    cmd = [str(Path(PYTHON).parent / "gunicorn"), "config.wsgi:application",
           "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers),
           "--worker-class", "gthread", "--threads", str(args.threads),
           "--backlog", "2048", "--keep-alive", "75", "--timeout", "60",
           "--log-level", "warning"]
    fh = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/campaigns/", headers={"Authorization": f"Token {token}"})
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                # Each worker imports lazily and opens its pool on first use: warm them up.
                for _ in range(args.workers * 4):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", "/api/campaigns/",
                                 headers={"Authorization": f"Token {token}"})
                    conn.getresponse().read()
                    conn.close()
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("gunicorn did not come up")


def start_worker(env: dict[str, str], data_dir: Path, log_path: Path) -> subprocess.Popen:
    """``celery -A config worker -Q default --beat``: recomputes, reaper, outbox relay."""
    cmd = [PYTHON, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--beat",
           "--schedule", str(data_dir / "celerybeat-schedule"), "--pool", "solo",
           "--concurrency", "1", "-l", "WARNING", "-n", f"bench-load-{os.getpid()}@%h",
           "--without-gossip", "--without-mingle"]
    fh = log_path.open("w")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_process_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------------------------
# Database: a fresh one per run, and the checks afterwards
# --------------------------------------------------------------------------------------------

def fresh_database(args) -> str:
    import psycopg

    with psycopg.connect(db_url(args.database_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.db}"')
    url = db_url(args.database_url, args.db)
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "0", "SECRET_KEY": SECRET_KEY,
           "GAPLAB_DB_POOL_SIZE": "0"}
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env,
                   check=True)
    return url


def run_setup(url: str, spec: dict) -> dict:
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "0", "SECRET_KEY": SECRET_KEY,
           "GAPLAB_DB_POOL_SIZE": "0"}
    out = subprocess.run([PYTHON, __file__, "_setup", json.dumps(spec)], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# Two judgments that are both current (not superseded) for one assignment, or for one
# annotator and one comparison; a comparison counted toward the overlap holding more current
# judgments than its overlap.
_DUPLICATES_SQL = """
WITH current AS (
    SELECT j.* FROM annotation_judgment j
    WHERE NOT EXISTS (SELECT 1 FROM annotation_judgment s WHERE s.supersedes_id = j.id)
)
SELECT
  (SELECT count(*) FROM (SELECT assignment_id FROM current GROUP BY 1
                         HAVING count(*) > 1) a),
  (SELECT count(*) FROM (SELECT annotator_id, comparison_id FROM current GROUP BY 1, 2
                         HAVING count(*) > 1) b),
  (SELECT count(*) FROM (
      SELECT c.id FROM annotation_comparison c
      JOIN annotation_campaign k ON k.id = c.campaign_id
      JOIN current j ON j.comparison_id = c.id
      WHERE c.kind IN ('regular', 'eval')
      GROUP BY c.id, c.target_overlap, k.overlap
      HAVING count(*) > coalesce(c.target_overlap, k.overlap)) o),
  (SELECT count(*) FROM annotation_assignment a
   JOIN annotation_comparison c ON c.id = a.comparison_id
   JOIN annotation_campaign k ON k.id = c.campaign_id
   WHERE c.kind IN ('regular', 'eval') AND c.claimed_count > coalesce(c.target_overlap, k.overlap)
   AND a.status = 'pending')
"""


def check_database(url: str, confirmed: list[tuple[int, str, int]],
                   usernames: dict[int, str], campaign_ids: dict[str, int]) -> dict:
    import psycopg

    with psycopg.connect(url) as conn:
        stored = {
            (username, key): jid for jid, username, key in conn.execute(
                "SELECT j.id, u.username, j.idempotency_key FROM annotation_judgment j "
                "JOIN auth_user u ON u.id = j.annotator_id")
        }
        lost = [c for c in confirmed if stored.get((usernames[c[0]], c[1])) != c[2]]
        per_assignment, per_annotator, over_overlap, over_claimed = conn.execute(
            _DUPLICATES_SQL).fetchone()
        per_campaign = dict(conn.execute(
            "SELECT k.name, count(j.id) FROM annotation_campaign k "
            "LEFT JOIN annotation_judgment j ON j.campaign_id = k.id GROUP BY k.name"))
        jobs = dict(conn.execute(
            "SELECT status, count(*) FROM annotation_qualityrecompute GROUP BY 1"))
        outbox_unsent = conn.execute(
            "SELECT count(*) FROM annotation_outboxmessage WHERE sent_at IS NULL").fetchone()[0]
    return {
        "stored": sum(per_campaign.values()),
        "per_campaign": {k: per_campaign.get(f"load-{k}", 0) for k in campaign_ids},
        "lost": len(lost), "lost_samples": lost[:3],
        "duplicates": per_assignment + per_annotator + over_overlap + over_claimed,
        "duplicates_detail": {"two_per_assignment": per_assignment,
                              "two_current_per_annotator_comparison": per_annotator,
                              "comparison_over_overlap": over_overlap,
                              "claims_over_overlap": over_claimed},
        "quality_recompute_jobs": jobs, "outbox_unsent": outbox_unsent,
    }


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200, help="annotators in the load phase")
    p.add_argument("--duration", type=float, default=60.0, help="load phase, seconds")
    p.add_argument("--think-median", type=float, default=8.0,
                   help="median think time per judgment, s (log-normal, sigma 0.5, >= 1 s); "
                        "0: none")
    p.add_argument("--baseline-seconds", type=float, default=10.0,
                   help="one annotator, no think time (0 skips)")
    p.add_argument("--overload-clients", type=int, default=200)
    p.add_argument("--overload-seconds", type=float, default=30.0,
                   help="no think time, past capacity (0 skips)")
    p.add_argument("--procs", type=int, default=4, help="client processes (threads inside)")
    p.add_argument("--timeout", type=float, default=30.0, help="client-side timeout, s")
    p.add_argument("--grace", type=float, default=20.0,
                   help="seconds a submit begun before the end may keep retrying")
    p.add_argument("--workers", type=int, default=4, help="gunicorn gthread workers")
    p.add_argument("--threads", type=int, default=64,
                   help="threads per worker: more than --max-in-flight, so that waiting "
                        "requests reach the bound instead of queueing inside gunicorn")
    p.add_argument("--max-in-flight", type=int, default=4, help="GAPLAB_MAX_IN_FLIGHT")
    p.add_argument("--in-flight-wait-ms", type=int, default=1000,
                   help="GAPLAB_IN_FLIGHT_WAIT_MS")
    p.add_argument("--retry-after", type=int, default=2, help="GAPLAB_OVERLOAD_RETRY_AFTER")
    p.add_argument("--db-pool-size", type=int, default=4, help="GAPLAB_DB_POOL_SIZE")
    p.add_argument("--db-pool-timeout", type=int, default=5, help="GAPLAB_DB_POOL_TIMEOUT")
    p.add_argument("--db", default="gaplab_bench_load", help="the run database (recreated)")
    p.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="any URL on the server; only host, port and credentials are used")
    p.add_argument("--broker-url", default=os.environ.get(
        "CELERY_BROKER_URL", "redis://127.0.0.1:6379/6"))
    p.add_argument("--cache-url", default=None,
                   help="GAPLAB_CACHE_URL (default: the broker's Redis)")
    p.add_argument("--keep-db", action="store_true", help="keep the run database afterwards")
    args = p.parse_args(argv)
    if not args.broker_url.startswith("redis://"):
        p.error("--broker-url must be a redis:// URL (the production broker)")
    args.cache_url = args.cache_url or args.broker_url
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_setup":
        print(json.dumps(django_setup(json.loads(argv[1]))))
        return 0
    args = parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="gaplab-load-"))
    os.environ["GAPLAB_DATA_DIR"] = str(data_dir)
    result: dict = {"loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
    t_start = time.perf_counter()

    phases = {"baseline": (1, args.baseline_seconds, 0.0),
              "load": (args.clients, args.duration, args.think_median),
              "overload": (args.overload_clients, args.overload_seconds, 0.0)}
    phases = {k: v for k, v in phases.items() if v[1] > 0}
    n_annotators = max(c for c, _, _ in phases.values())
    # Work never runs out: every phase's pool covers ASSUMED_MAX_RATE judgments/s with overlap
    # 3, plus a margin per client; calibration items cover 0.1 of what one client can do.
    spec = {"annotators": n_annotators, "calibration": 300,
            "pools": {k: int((s + args.grace) * ASSUMED_MAX_RATE / OVERLAP) + 20 * c
                      for k, (c, s, _) in phases.items()}}
    log(f"fresh database {args.db}: migrate, {n_annotators} annotators, campaigns {spec['pools']}")
    url = fresh_database(args)
    setup = run_setup(url, spec)
    tokens = setup["tokens"]
    usernames = {i: f"load{i + 1}" for i in range(n_annotators)}
    result["setup_s"] = round(time.perf_counter() - t_start, 1)
    log(f"setup {result['setup_s']} s: {setup['campaigns']}")

    env = app_env(args, url)
    worker = start_worker(env, data_dir, data_dir / "worker.log")
    port = free_port()
    server = None
    summaries: dict[str, dict] = {}
    confirmed: list[tuple[int, str, int]] = []
    try:
        server = start_gunicorn(args, env, port, data_dir / "gunicorn.log", tokens[0])
        log(f"gunicorn up on :{port} ({args.workers} gthread workers x {args.threads} threads; "
            f"in flight <= {args.max_in_flight}/process, wait {args.in_flight_wait_ms} ms, "
            f"pool {args.db_pool_size}); worker with beat pid {worker.pid}")
        for name, (clients, seconds, think) in phases.items():
            log(f"{name}: {clients} annotators, {seconds:g} s, think median {think:g} s")
            out = run_phase(args, name=name, port=port,
                            campaign_id=setup["campaigns"][name]["id"], tokens=tokens,
                            clients=clients, seconds=seconds, think_median=think)
            summaries[name] = out["summary"]
            confirmed += out["confirmed"]
            log(f"    {json.dumps(out['summary'])}")
        # Let the worker catch up (recomputes, outbox) before the checks, as in production.
        time.sleep(5)
    finally:
        if server is not None:
            stop_process_group(server)
        stop_process_group(worker)
    server_errors = [line for line in (data_dir / "gunicorn.log").read_text().splitlines()
                     if "Traceback" in line or "ERROR" in line or "CRITICAL" in line]
    worker_errors = [line for line in (data_dir / "worker.log").read_text().splitlines()
                     if "Traceback" in line or "ERROR" in line or "CRITICAL" in line]

    checks = check_database(url, confirmed, usernames,
                            {k: setup["campaigns"][k]["id"] for k in phases})
    log(f"checks: {json.dumps(checks)}")
    if not args.keep_db:
        import psycopg

        with psycopg.connect(db_url(args.database_url, "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')

    load = summaries.get("load", {})
    base = summaries.get("baseline", {})
    over = summaries.get("overload", {})
    all_phases = list(summaries.values())
    judgments = checks["per_campaign"].get("load", 0)
    result.update({
        "annotators": args.clients, "duration_s": args.duration,
        "think_median_s": args.think_median,
        "judgments": judgments,
        "judgments_per_s": round(judgments / args.duration, 1) if args.duration else None,
        "p50_ms": load.get("p50_ms"), "p99_ms": load.get("p99_ms"),
        # Over every phase: the targets hold under overload too.
        "http_5xx": sum(s["http_5xx"] for s in all_phases),
        "http_503": sum(s["http_503"] for s in all_phases),
        "http_429": sum(s["http_429"] for s in all_phases),
        "timeouts": sum(s["timeouts"] for s in all_phases),
        "lost": checks["lost"], "duplicates": checks["duplicates"],
        "load_phase": {k: load.get(k) for k in (
            "http_503", "http_429", "http_other_4xx", "timeouts", "requests_per_s", "ok_p99_ms",
            "max_ms", "submits_retried", "machine_busy_pct", "status")},
        "baseline": {"judgments_per_s": round(base["confirmed"] / base["seconds"], 1),
                     "p50_ms": base["p50_ms"], "p99_ms": base["p99_ms"]} if base else None,
        "overload": {k: over.get(k) for k in (
            "clients", "seconds", "confirmed", "http_503", "http_5xx", "http_429", "timeouts",
            "retry_after_missing", "p50_ms", "p99_ms", "ok_p99_ms", "max_ms", "submits_retried",
            "machine_busy_pct", "status")} if over else None,
        "stack": {"gunicorn": f"{args.workers} gthread x {args.threads} threads",
                  "max_in_flight": args.max_in_flight,
                  "in_flight_wait_ms": args.in_flight_wait_ms, "retry_after_s": args.retry_after,
                  "db_pool_size": args.db_pool_size, "client_timeout_s": args.timeout,
                  "client_procs": args.procs},
        "checks": {k: checks[k] for k in ("stored", "per_campaign", "duplicates_detail",
                                          "quality_recompute_jobs", "outbox_unsent")},
        "connect_errors": sum(s["connect_errors"] for s in all_phases),
        "server_log_errors": len(server_errors), "worker_log_errors": len(worker_errors),
        "error_samples": [x for s in all_phases for x in s["error_samples"]][:5]
        + server_errors[:3] + worker_errors[:3],
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "total_s": round(time.perf_counter() - t_start, 1),
    })
    if base and over and base["confirmed"]:
        # Machine-independent-ish: how the stack degrades relative to its own unloaded self.
        result["ratios"] = {
            "load_p50_to_baseline_p50": round(load["p50_ms"] / base["p50_ms"], 2)
            if load.get("p50_ms") and base.get("p50_ms") else None,
            "overload_throughput_to_baseline": round(
                (over["confirmed"] / over["seconds"]) / (base["confirmed"] / base["seconds"]), 2),
        }
    with contextlib.suppress(OSError):
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(result))
    ok = (result["http_5xx"] == 0 and result["lost"] == 0 and result["duplicates"] == 0
          and result["timeouts"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
