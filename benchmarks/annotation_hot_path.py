"""Benchmark of the annotation hot path: submit a judgment, then get the next comparison.

Runs against gunicorn (config.wsgi, DEBUG=0) and PostgreSQL holding 1,000,000 bulk-loaded
judgments; see benchmarks/README.md. Each phase works on its own fresh open campaign:

  (a) capacity: --clients closed-loop client processes (keep-alive HTTP, token auth, no think
      time) doing submit-and-next for --duration seconds -> judgments_per_s
  (b) latency: open-loop Poisson arrivals at --rate judgments/s on a fixed schedule; latency is
      measured from each arrival's scheduled time (no coordinated omission) -> p50_ms, p99_ms
  (c) raw: the SQL Django runs for one submit-and-next is captured and replayed with plain
      psycopg from --clients processes -> raw_judgments_per_s, ratio_to_raw
  (d) profile: the same requests in-process (WSGI, one thread): statements, DB wait, app and DB
      CPU per request, and where the app's CPU goes -> per_request, app_cpu_share_pct

Capacity and raw alternate in --blocks blocks (default 3 x 20 s each), so that drift of a shared
machine hits both alike. Every phase also reports CPU milliseconds per judgment of gunicorn, the
PostgreSQL backends, the load generator and everything else on the machine (other load makes
wall-clock numbers noisy); ratio_to_raw_by_cpu is the ratio computed from those.
The last line printed is one JSON object with the results. A quick run:

    .venv/bin/python benchmarks/annotation_hot_path.py --judgments 20000 --duration 10

The loaded database is kept as a template (``<db>_base``) and cloned for every run, so a later
run with the same --judgments/--annotators skips the load (--reload forces it).
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
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql as pgsql

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOADER_VERSION = 6  # bump when the generated data changes, so cached templates are rebuilt
BASE_EPOCH = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
SECRET_KEY = "bench-" + "x" * 50
OVERLAP = 3
CALIBRATION_RATE = 0.1
N_CALIBRATION = 100
# A generous upper bound on judgments/s, used to size each phase's pool of fresh comparisons.
ASSUMED_MAX_RATE = 3000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def auth_key(user_id: int) -> str:
    """The DRF token key of a bench user (deterministic, 40 hex characters)."""
    return uuid.uuid5(uuid.NAMESPACE_OID, f"gaplab-bench-{user_id}").hex + f"{user_id:08x}"


def db_url(base_url: str, name: str) -> str:
    return base_url.rsplit("/", 1)[0] + "/" + name


# --------------------------------------------------------------------------------------------
# Data generation (COPY text format)
# --------------------------------------------------------------------------------------------

_WORDS = (
    "the model answer should explain why this approach works and where it fails in practice "
    "consider a small example first then generalise carefully to the full problem statement "
    "python function returns list value error test case input output memory time complexity "
    "however therefore because although moreover instead finally overall clearly roughly "
    "user asks assistant replies politely with detail context safety honesty helpful harmless"
).split()


def _copy_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _text_pool(rng: random.Random, n: int, min_chars: int, max_chars: int) -> list[str]:
    """n markdown-ish texts (paragraphs of random words), already escaped for COPY."""
    corpus = " ".join(rng.choices(_WORDS, k=max(50_000, n * max_chars // 40)))
    out = []
    for _ in range(n):
        target = rng.randint(min_chars, max_chars)
        start = rng.randrange(0, len(corpus) - target - 1)
        text = corpus[start:start + target].strip()
        paras = [text[i:i + 400] for i in range(0, len(text), 400)]
        out.append(_copy_escape(".\n\n".join(p.strip().capitalize() for p in paras) + "."))
    return out


def _turns_pool(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        turns = []
        for i in range(rng.choice((1, 1, 1, 3))):
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 60)))
            turns.append({"role": "user" if i % 2 == 0 else "assistant",
                          "content": words.capitalize() + "?"})
        out.append(_copy_escape(json.dumps(turns)))
    return out


_DAY_STR: dict[int, str] = {}


def ts(epoch: int) -> str:
    """Fast timestamptz text for COPY (UTC, second resolution)."""
    day, sec = divmod(epoch, 86400)
    d = _DAY_STR.get(day)
    if d is None:
        d = _DAY_STR[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{d} {h:02d}:{m:02d}:{s:02d}+00"


def copy_rows(cur: psycopg.Cursor, table: str, cols: str, lines, chunk_rows: int = 50_000) -> int:
    """Stream text-format lines to ``COPY table (cols) FROM STDIN`` in large chunks.

    One COPY at a time per connection: a second COPY on the same connection would wait forever.
    """
    n, buf = 0, []
    with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        for line in lines:
            buf.append(line)
            if len(buf) >= chunk_rows:
                copy.write("\n".join(buf) + "\n")
                n, buf = n + len(buf), []
        if buf:
            copy.write("\n".join(buf) + "\n")
            n += len(buf)
    return n


# Pairs of a prompt's responses that make its comparisons (4 responses -> 6 pairs).
_PAIRS = [(0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2)]


@dataclass
class Ids:
    campaign: int = 0
    prompt: int = 0
    response: int = 0
    comparison: int = 0
    assignment: int = 0
    judgment: int = 0

    @classmethod
    def current(cls, cur: psycopg.Cursor) -> Ids:
        ids = cls()
        for field, table in (("campaign", "annotation_campaign"), ("prompt", "annotation_prompt"),
                             ("response", "annotation_response"),
                             ("comparison", "annotation_comparison"),
                             ("assignment", "annotation_assignment"),
                             ("judgment", "annotation_judgment")):
            setattr(ids, field, cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
                    .fetchone()[0])
        return ids


def _secondary_indexes(cur: psycopg.Cursor, table: str) -> list[str]:
    """Drop a table's unique constraints and plain indexes (not the PK); return how to rebuild."""
    rebuild = []
    for name, definition in cur.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'u'", (table,)
    ).fetchall():
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        rebuild.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for name, definition in cur.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
        (table,),
    ).fetchall():
        cur.execute(f'DROP INDEX "{name}"')
        rebuild.append(definition)
    return rebuild


def _reset_sequences(cur: psycopg.Cursor, tables: list[str]) -> None:
    for table in tables:
        cur.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
        )


@contextlib.contextmanager
def column_defaults(conn: psycopg.Connection, defaults: dict, tables: list[str]):
    """While loading, give NOT NULL columns without a DB default the model's default."""
    cur = conn.cursor()
    added = []
    for table in tables:
        for (column,) in cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'", (table,)
        ).fetchall():
            value = defaults.get(table, {}).get(column)
            if value is not None:
                cur.execute(f'ALTER TABLE {table} ALTER COLUMN "{column}" SET DEFAULT '
                            f"{pgsql.quote(value)}")
                added.append((table, column))
    try:
        yield
    finally:
        for table, column in added:
            cur.execute(f'ALTER TABLE {table} ALTER COLUMN "{column}" DROP DEFAULT')


LOADED_TABLES = ["auth_user", "auth_user_groups", "annotation_annotatorprofile",
                 "authtoken_token", "annotation_campaign", "annotation_prompt",
                 "annotation_response", "annotation_comparison", "annotation_assignment",
                 "annotation_judgment"]


def load_history(conn: psycopg.Connection, *, n_judgments: int, n_annotators: int,
                 seed: int = 1) -> dict:
    """Bulk-load users, tokens, closed campaigns and n_judgments with completed assignments."""
    rng = random.Random(seed)
    cur = conn.cursor()
    cur.execute("SET session_replication_role = replica")  # FK triggers off: ids are consistent
    cur.execute("SET maintenance_work_mem = '512MB'")
    big = ["annotation_prompt", "annotation_response", "annotation_comparison",
           "annotation_assignment", "annotation_judgment"]
    rebuild = [sql for table in big for sql in _secondary_indexes(cur, table)]

    now = int(time.time())
    group_id = cur.execute(
        "INSERT INTO auth_group (name) VALUES ('annotator') "
        "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id"
    ).fetchone()[0]
    # Users 1..n are annotators; each has a profile, the group and a DRF token.
    t0 = time.perf_counter()
    uids = range(1, n_annotators + 1)

    def joined(uid: int) -> str:
        return ts(BASE_EPOCH - 200 * 86400 + uid * 60)

    copy_rows(cur, "auth_user", "id, password, last_login, is_superuser, username, first_name, "
              "last_name, email, is_staff, is_active, date_joined",
              (f"{u}\t!bench\t\\N\tf\trater{u}\t\t\trater{u}@example.org\tf\tt\t{joined(u)}"
               for u in uids))
    copy_rows(cur, "auth_user_groups", "id, user_id, group_id",
              (f"{u}\t{u}\t{group_id}" for u in uids))
    copy_rows(cur, "annotation_annotatorprofile", "id, status, paused_reason, created_at, user_id",
              (f"{u}\tactive\t\t{joined(u)}\t{u}" for u in uids))
    copy_rows(cur, "authtoken_token", "key, created, user_id",
              (f"{auth_key(u)}\t{joined(u)}\t{u}" for u in uids))

    # ~2.86 judgments per comparison (most reach the overlap of 3), 6 comparisons per prompt.
    n_comparisons = max(1, round(n_judgments * 0.35))
    n_campaigns = max(1, min(8, n_comparisons // 20_000))
    n_prompts = math.ceil(n_comparisons / len(_PAIRS))
    copy_rows(cur, "annotation_campaign", "id, name, title, instructions, criteria, overlap, "
              "calibration_rate, accuracy_threshold, assignment_ttl_seconds, is_active, "
              "created_at",
              (f"{c}\thistory-{c}\tHistorical campaign {c}\tPick the better answer.\t[]\t"
               f"{OVERLAP}\t{CALIBRATION_RATE}\t0.7\t1800\tf\t"
               f"{ts(BASE_EPOCH - 190 * 86400 + c * 3600)}" for c in range(1, n_campaigns + 1)))

    def campaign_of_prompt(p: int) -> int:
        return 1 + (p - 1) * n_campaigns // n_prompts

    def prompt_created(p: int) -> str:
        return ts(BASE_EPOCH - 180 * 86400 + p * 20)

    turns = _turns_pool(rng, 2000)
    texts = _text_pool(rng, 4000, 200, 1500)
    categories = ["coding", "writing", "math", "advice", "trivia", "safety"]
    copy_rows(cur, "annotation_prompt",
              "id, turns, category, external_id, source, created_at, campaign_id",
              (f"{p}\t{turns[p % len(turns)]}\t{categories[p % 6]}\tp-{p}\tbench\t"
               f"{prompt_created(p)}\t{campaign_of_prompt(p)}" for p in range(1, n_prompts + 1)))
    models = ["llama-3-8b", "qwen-2.5-7b", "mistral-7b", "gemma-2-9b"]
    copy_rows(cur, "annotation_response",
              "id, text, source_model, source_version, source_run, created_at, prompt_id",
              (f"{(p - 1) * 4 + k + 1}\t{texts[(p * 7 + k * 13) % len(texts)]}\t{models[k]}\tv1\t"
               f"run-{p % 50}\t{prompt_created(p)}\t{p}"
               for p in range(1, n_prompts + 1) for k in range(4)))
    log(f"{n_annotators} users, {n_campaigns} campaigns, {n_prompts} prompts, "
        f"{4 * n_prompts} responses: {time.perf_counter() - t0:.1f}s")

    # Judgment j (0-based) goes to comparison j % n_comparisons, in round j // n_comparisons;
    # the annotator is chosen so that the rounds of one comparison have distinct annotators.
    t0 = time.perf_counter()
    full_rounds, extra = divmod(n_judgments, n_comparisons)

    def comparison_rows():
        for c in range(n_comparisons):
            p = c // len(_PAIRS) + 1
            a, b = _PAIRS[c % len(_PAIRS)]
            n = full_rounds + (1 if c < extra else 0)
            yield (f"{c + 1}\tregular\t\\N\t0\t{n}\t{'t' if n >= OVERLAP else 'f'}\t"
                   f"{prompt_created(p)}\t{campaign_of_prompt(p)}\t{p}\t"
                   f"{(p - 1) * 4 + a + 1}\t{(p - 1) * 4 + b + 1}")

    copy_rows(cur, "annotation_comparison", "id, kind, gold_choice, priority, claimed_count, "
              "is_full, created_at, campaign_id, prompt_id, response_a_id, response_b_id",
              comparison_rows())
    log(f"{n_comparisons} comparisons: {time.perf_counter() - t0:.1f}s")

    step = max(1, n_annotators // 3 + 1)
    span = 170 * 86400
    choices = ["A", "A", "A", "B", "B", "B", "tie", "both_bad"]

    def common(j: int):
        c, r = j % n_comparisons, j // n_comparisons
        annotator = (c * 37 + r * step) % n_annotators + 1
        issued = BASE_EPOCH - span + (j * span) // n_judgments + (c % 97)
        spent = 5 + (j * 7919) % 120
        left = "t" if (j * 31) % 2 else "f"
        return c, annotator, issued, spent, left, campaign_of_prompt(c // len(_PAIRS) + 1)

    t0 = time.perf_counter()
    tokens_hex = os.urandom(16 * n_judgments).hex()

    def assignment_rows():
        for j in range(n_judgments):
            c, annotator, issued, spent, left, campaign = common(j)
            yield (f"{j + 1}\t{tokens_hex[32 * j:32 * j + 32]}\t{left}\tcompleted\t{ts(issued)}\t"
                   f"{ts(issued + 1800)}\t{ts(issued + spent)}\t\t{annotator}\t{campaign}\t"
                   f"{c + 1}")

    copy_rows(cur, "annotation_assignment", "id, token, a_on_left, status, issued_at, "
              "expires_at, finished_at, skip_reason, annotator_id, campaign_id, comparison_id",
              assignment_rows())
    log(f"{n_judgments} completed assignments: {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    keys_hex = os.urandom(16 * n_judgments).hex()

    def judgment_rows():
        for j in range(n_judgments):
            c, annotator, issued, spent, left, campaign = common(j)
            choice = choices[(j * 13) % 8]
            strength = (j % 3) + 1 if choice in ("A", "B") else "\\N"
            yield (f"{j + 1}\t{choice}\t{strength}\t{{}}\t\t{spent}.0\t{left}\t"
                   f"{keys_hex[32 * j:32 * j + 32]}\t{ts(issued + spent)}\t{annotator}\t{j + 1}\t"
                   f"{campaign}\t{c + 1}\t\\N")

    copy_rows(cur, "annotation_judgment", "id, choice, strength, criteria_choices, rationale, "
              "seconds_spent, a_on_left, idempotency_key, created_at, annotator_id, "
              "assignment_id, campaign_id, comparison_id, supersedes_id", judgment_rows())
    log(f"{n_judgments} judgments: {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    for sql in rebuild:
        cur.execute(sql)
    _reset_sequences(cur, ["auth_user", "auth_user_groups", "auth_group",
                           "annotation_annotatorprofile", "annotation_campaign", *big])
    cur.execute("RESET session_replication_role")
    log(f"rebuilt {len(rebuild)} indexes/constraints: {time.perf_counter() - t0:.1f}s")
    return {"n_judgments": n_judgments, "n_annotators": n_annotators,
            "n_comparisons": n_comparisons, "n_prompts": n_prompts,
            "n_campaigns": n_campaigns, "loaded_at": now}


def create_open_campaign(conn: psycopg.Connection, *, name: str, n_comparisons: int,
                         seed: int) -> int:
    """An active campaign with n fresh regular comparisons and some calibration items."""
    rng = random.Random(seed)
    cur = conn.cursor()
    cur.execute("SET session_replication_role = replica")  # FK triggers off: ids are consistent
    ids = Ids.current(cur)
    cid = ids.campaign + 1
    # accuracy_threshold 0: the simulated annotators answer at random, gold items included, and
    # would otherwise be paused by the per-submit quality update after a few gold answers.
    cur.execute(
        "INSERT INTO annotation_campaign (id, name, title, instructions, criteria, overlap, "
        "calibration_rate, accuracy_threshold, assignment_ttl_seconds, is_active, created_at) "
        "VALUES (%s, %s, %s, %s, '[]', %s, %s, 0.0, 1800, true, now())",
        (cid, name, f"Benchmark {name}", "Pick the better answer. Ties are fine.", OVERLAP,
         CALIBRATION_RATE),
    )
    # Realistic sizes for what is served: prompts of 1-3 turns, answers of 0.4-2.5 kB.
    n_prompts = max(10, min(5000, n_comparisons // len(_PAIRS)))
    turns = _turns_pool(rng, 500)
    texts = _text_pool(rng, 2000, 400, 2500)
    created = ts(int(time.time()))
    copy_rows(cur, "annotation_prompt",
              "id, turns, category, external_id, source, created_at, campaign_id",
              (f"{ids.prompt + i + 1}\t{turns[i % len(turns)]}\tgeneral\t{name}-{i}\tbench\t"
               f"{created}\t{cid}" for i in range(n_prompts)))
    copy_rows(cur, "annotation_response",
              "id, text, source_model, source_version, source_run, created_at, prompt_id",
              (f"{ids.response + i * 4 + k + 1}\t{texts[(i * 4 + k) % len(texts)]}\tmodel-{k}\t"
               f"v2\trun-1\t{created}\t{ids.prompt + i + 1}"
               for i in range(n_prompts) for k in range(4)))

    def comparison_rows():
        for i in range(n_comparisons + N_CALIBRATION):
            slot = i % (n_prompts * len(_PAIRS))
            prompt_idx, pair = slot % n_prompts, slot // n_prompts
            a, b = _PAIRS[pair]
            kind, gold = ("regular", "\\N") if i < n_comparisons else ("calibration", "A")
            yield (f"{ids.comparison + i + 1}\t{kind}\t{gold}\t0\t0\tf\t{created}\t{cid}\t"
                   f"{ids.prompt + prompt_idx + 1}\t{ids.response + prompt_idx * 4 + a + 1}\t"
                   f"{ids.response + prompt_idx * 4 + b + 1}")

    copy_rows(cur, "annotation_comparison", "id, kind, gold_choice, priority, claimed_count, "
              "is_full, created_at, campaign_id, prompt_id, response_a_id, response_b_id",
              comparison_rows())
    _reset_sequences(cur, ["annotation_campaign", "annotation_prompt", "annotation_response",
                           "annotation_comparison"])
    cur.execute("RESET session_replication_role")
    return cid


# --------------------------------------------------------------------------------------------
# Database setup: a loaded template, cloned per run
# --------------------------------------------------------------------------------------------

def _admin(base_url: str) -> psycopg.Connection:
    return psycopg.connect(db_url(base_url, "postgres"), autocommit=True)


def _db_exists(admin: psycopg.Connection, name: str) -> bool:
    return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() \
        is not None


def _drop_db(admin: psycopg.Connection, name: str) -> None:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "0", "SECRET_KEY": SECRET_KEY}
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env,
                   check=True)


PHASE_CAMPAIGNS = ("capacity", "latency", "raw")
TEMPLATE_POOL_SECONDS = 60  # the template's open campaigns hold work for phases this long


def pool_size(duration: float, clients: int) -> int:
    """Fresh comparisons per phase campaign: never runs out at ASSUMED_MAX_RATE judgments/s."""
    return int(duration * ASSUMED_MAX_RATE / OVERLAP * 1.2) + 50 * clients


def create_phase_campaigns(url: str, defaults: dict, *, pool: int, profile_pool: int,
                           n_annotators: int, tag: str = "") -> dict:
    """One open campaign per phase. Every phase campaign has the same size, so that the HTTP
    and raw phases claim from equally large pools."""
    tables = [*LOADED_TABLES, "annotation_annotatorquality"]
    with psycopg.connect(url) as conn, column_defaults(conn, defaults, tables):
        campaigns = {name: create_open_campaign(conn, name=f"bench-{name}{tag}",
                                                n_comparisons=pool, seed=11 + i)
                     for i, name in enumerate(PHASE_CAMPAIGNS)}
        campaigns["profile"] = create_open_campaign(conn, name=f"bench-profile{tag}",
                                                    n_comparisons=profile_pool, seed=19)
        _quality_rows(conn, campaigns.values(), n_annotators)
        conn.commit()
    return campaigns


def _quality_rows(conn: psycopg.Connection, campaign_ids, n_annotators: int) -> None:
    """Every annotator already has a quality row in each open campaign (they are mid-campaign):
    the per-submit gold tally then updates it, as it does for all but an annotator's first gold
    answer. Ids far above any other id, so the raw replay can tell them apart by value."""
    if conn.execute("SELECT to_regclass('annotation_annotatorquality')").fetchone()[0] is None:
        return
    for cid in campaign_ids:
        conn.execute(
            "INSERT INTO annotation_annotatorquality (id, campaign_id, annotator_id, updated_at) "
            "SELECT %s + u, %s, u, now() FROM generate_series(1, %s) u",
            (10**12 + cid * 10**6, cid, n_annotators))
    _reset_sequences(conn.cursor(), ["annotation_annotatorquality"])


def prepare_database(args) -> dict:
    """Make sure the loaded template exists (load it if not), then clone it as the run DB.

    The template holds the history (users, tokens, closed campaigns, judgments) and one fresh
    open campaign per phase; a run works on a clone, so every run starts from the same state.
    """
    base_name = f"{args.db}_base"
    base_url = db_url(args.database_url, base_name)
    pool = pool_size(TEMPLATE_POOL_SECONDS, args.clients)
    wanted = {"n_judgments": args.judgments, "n_annotators": args.annotators,
              "version": LOADER_VERSION, "pool": pool}
    admin = _admin(args.database_url)
    meta = None
    if _db_exists(admin, base_name) and not args.reload:
        with contextlib.suppress(psycopg.Error), psycopg.connect(base_url) as conn:
            row = conn.execute("SELECT value FROM bench_meta WHERE key = 'load'").fetchone()
            if row and all(row[0].get(k) == v for k, v in wanted.items()):
                meta = row[0]
    if meta is None:
        log(f"loading {args.judgments} judgments into {base_name} ...")
        t0 = time.perf_counter()
        _drop_db(admin, base_name)
        admin.execute(f'CREATE DATABASE "{base_name}"')
        _migrate(base_url)
        defaults = run_django(args, base_url, "defaults", 0, 0)
        with psycopg.connect(base_url) as conn, column_defaults(conn, defaults, LOADED_TABLES):
            meta = load_history(conn, n_judgments=args.judgments, n_annotators=args.annotators)
            conn.execute("CREATE TABLE bench_meta (key text PRIMARY KEY, value jsonb)")
            conn.commit()
        t1 = time.perf_counter()
        meta["campaigns"] = create_phase_campaigns(base_url, defaults, pool=pool,
                                                   profile_pool=2000,
                                                   n_annotators=args.annotators)
        log(f"open campaigns {meta['campaigns']} ({pool} comparisons each): "
            f"{time.perf_counter() - t1:.1f}s")
        with psycopg.connect(base_url, autocommit=True) as conn:
            t1 = time.perf_counter()
            conn.execute("VACUUM (FREEZE, ANALYZE)")
            log(f"vacuum + analyze: {time.perf_counter() - t1:.1f}s")
            meta.update(wanted, load_s=round(time.perf_counter() - t0, 1))
            conn.execute("INSERT INTO bench_meta VALUES ('load', %s)", (json.dumps(meta),))
        meta["cached"] = False
        log(f"loaded in {meta['load_s']}s")
    else:
        meta["cached"] = True
        log(f"using cached {base_name} ({meta['n_judgments']} judgments, loaded in "
            f"{meta['load_s']}s)")
        _migrate(base_url)  # applies any new migration once, to the template
    t0 = time.perf_counter()
    _drop_db(admin, args.db)
    admin.execute("CHECKPOINT")
    admin.execute(f'CREATE DATABASE "{args.db}" TEMPLATE "{base_name}" STRATEGY FILE_COPY')
    admin.close()
    meta["clone_s"] = round(time.perf_counter() - t0, 1)
    log(f"cloned {base_name} -> {args.db} in {meta['clone_s']}s")
    url = db_url(args.database_url, args.db)
    if args.duration > TEMPLATE_POOL_SECONDS or args.profile_cycles > 1500:
        t0 = time.perf_counter()
        meta["campaigns"] = create_phase_campaigns(
            url, run_django(args, url, "defaults", 0, 0),
            pool=pool_size(args.duration, args.clients),
            profile_pool=args.profile_cycles + 500, n_annotators=args.annotators, tag="-long")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE annotation_campaign, annotation_prompt, annotation_response, "
                         "annotation_comparison")
        log(f"longer phases: open campaigns {meta['campaigns']} created and analyzed in "
            f"{time.perf_counter() - t0:.1f}s")
    return meta


# --------------------------------------------------------------------------------------------
# CPU accounting: where the 2 cores go (robust to other load on the machine, unlike wall time)
# --------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st and st[0] == ppid:
                out.append(int(entry))
    return out


class CpuSampler(threading.Thread):
    """Samples the CPU time of gunicorn (master and workers) and of the PostgreSQL backends
    serving the bench database, every 0.5 s during a phase."""

    def __init__(self, url: str, db: str, gunicorn_pid: int | None = None):
        super().__init__(daemon=True)
        self.db, self.gunicorn_pid = db, gunicorn_pid
        self.conn = psycopg.connect(url, autocommit=True)
        self.me = self.conn.info.backend_pid
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.stop_event = threading.Event()
        self._sample(initial=True)

    def _pids(self) -> list[tuple[str, int]]:
        pids = [("db", pid) for (pid,) in self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            (self.db, self.me)).fetchall()]
        if self.gunicorn_pid:
            pids += [("app", p) for p in [self.gunicorn_pid, *_children(self.gunicorn_pid)]]
        return pids

    def _sample(self, initial: bool = False) -> None:
        for key in self._pids():
            st = _proc_stat(key[1])
            if st is None:
                continue
            # A process first seen later was started during the phase: all its CPU counts.
            self.first.setdefault(key, st[1] if initial else 0.0)
            self.last[key] = st[1]

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            self._sample()

    def finish(self) -> dict[str, float]:
        self.stop_event.set()
        self.join()
        self._sample()
        self.conn.close()
        totals = {"app": 0.0, "db": 0.0}
        for key, cpu in self.last.items():
            totals[key[0]] += cpu - self.first[key]
        return totals


def _machine_cpu() -> tuple[float, float, float]:
    """(busy, idle, steal) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq) / _TICK, (idle + iowait) / _TICK, steal / _TICK


def measure_window(url: str, db: str, start_at: float, end_at: float,
                   gunicorn_pid: int | None = None) -> dict:
    """CPU seconds used between start_at and end_at by the app, its DB backends, the machine."""
    _wait_until(start_at)
    sampler = CpuSampler(url, db, gunicorn_pid)
    m0 = _machine_cpu()
    sampler.start()
    _wait_until(end_at)
    cpu = sampler.finish()
    m1 = _machine_cpu()
    cpu.update(machine_busy=m1[0] - m0[0], machine_idle=m1[1] - m0[1],
               machine_steal=m1[2] - m0[2])
    return cpu


def cpu_report(cpu: dict, client_cpu_s: float, judgments: int, seconds: float) -> dict:
    """CPU milliseconds per judgment by component; 'other' is the rest of the machine's busy
    time (other processes on the machine, PostgreSQL background work, the kernel)."""
    n = max(1, judgments)
    ours = cpu["app"] + cpu["db"] + client_cpu_s
    return {
        "app_ms": round(1000 * cpu["app"] / n, 2),
        "db_ms": round(1000 * cpu["db"] / n, 2),
        "client_ms": round(1000 * client_cpu_s / n, 2),
        "other_ms": round(1000 * max(0.0, cpu["machine_busy"] - ours) / n, 2),
        "machine_busy_pct": round(100 * cpu["machine_busy"]
                                  / max(1e-9, cpu["machine_busy"] + cpu["machine_idle"]), 1),
        "steal_s": round(cpu["machine_steal"], 1),
        "cores_used_by_others": round(max(0.0, cpu["machine_busy"] - ours) / seconds, 2),
    }


# --------------------------------------------------------------------------------------------
# HTTP clients
# --------------------------------------------------------------------------------------------

class Api:
    """One annotator's keep-alive connection to the API."""

    def __init__(self, port: int, user_id: int, campaign_id: int, seed: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Token {auth_key(user_id)}",
                        "Content-Type": "application/json", "Accept": "application/json"}
        self.next_path = f"/api/campaigns/{campaign_id}/next/"
        self.rng = random.Random(seed)
        self.token: str | None = None
        self.errors = 0
        self.error_samples: list[str] = []
        self.exhausted = 0

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            self.conn.request("POST", path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            return 0, repr(exc).encode()

    def _error(self, what: str, status: int, data: bytes) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(f"{what} {status}: {data[:200]!r}")

    def next(self) -> bool:
        status, data = self._post(self.next_path, b"")
        if status == 200:
            self.token = json.loads(data)["token"]
            return True
        self.token = None
        if status == 204:
            self.exhausted += 1
        else:
            self._error("next", status, data)
        return False

    def submit(self) -> bool:
        rng = self.rng
        body = json.dumps({
            "token": self.token, "choice": rng.choice(("left", "right", "left", "right", "tie",
                                                       "both_bad")),
            "strength": rng.randint(1, 3), "idempotency_key": uuid.uuid4().hex,
            "seconds_spent": round(rng.uniform(3, 90), 1),
        }).encode()
        status, data = self._post("/api/judgments/", body)
        if status == 201:
            return True
        self._error("submit", status, data)
        return False

    def judgment(self) -> bool:
        """Submit the current assignment, then get the next one (one 'judgment')."""
        if self.token is None and not self.next():
            return False
        ok = self.submit()
        return self.next() and ok

    def summary(self) -> dict:
        return {"errors": self.errors, "error_samples": self.error_samples,
                "exhausted": self.exhausted}


def _wait_until(t: float) -> None:
    while (delay := t - time.time()) > 0:
        time.sleep(min(delay, 0.5))


def capacity_client(port, user_id, campaign_id, start_at, end_at, seed, out):
    api = Api(port, user_id, campaign_id, seed)
    api.next()  # warm-up: first assignment, connection open (not timed)
    _wait_until(start_at)
    done = 0
    lat = []
    while True:
        t0 = time.time()
        if t0 >= end_at:
            break
        ok = api.judgment()
        t1 = time.time()
        if ok and t1 <= end_at:
            done += 1
            lat.append(t1 - t0)
        elif api.exhausted and api.token is None:
            break
    out.put({"done": done, "lat": lat, "cpu_s": time.process_time(), **api.summary()})


def latency_client(port, user_id, campaign_id, start_at, cutoff, arrivals, counter, seed, out):
    api = Api(port, user_id, campaign_id, seed)
    api.next()
    lat, service, dropped = [], [], []
    while True:
        with counter.get_lock():
            k = counter.value
            counter.value += 1
        if k >= len(arrivals):
            break
        scheduled = start_at + arrivals[k]
        if time.time() > cutoff:
            # The server fell too far behind: what is left is not sent; each such arrival counts
            # with the lower bound of its latency (it had waited at least until the cutoff).
            dropped.append(cutoff - scheduled)
            continue
        _wait_until(scheduled)
        t0 = time.time()
        api.judgment()
        t1 = time.time()
        lat.append(t1 - scheduled)
        service.append(t1 - t0)
    out.put({"done": len(lat), "lat": lat, "service": service, "dropped": dropped,
             "cpu_s": time.process_time(), **api.summary()})


def _collect(procs, out) -> list[dict]:
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return results


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def run_capacity_block(args, port: int, campaign_id: int, first_user: int, url: str,
                       gunicorn_pid: int, seconds: float) -> dict:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 2.0 + args.clients * 0.03
    end_at = start_at + seconds
    procs = [ctx.Process(target=capacity_client,
                         args=(port, first_user + i, campaign_id, start_at, end_at, i, out))
             for i in range(args.clients)]
    for p in procs:
        p.start()
    cpu = measure_window(url, args.db, start_at, end_at, gunicorn_pid)
    results = _collect(procs, out)
    return {"seconds": seconds, "cpu": cpu, "done": sum(r["done"] for r in results),
            "client_cpu": sum(r["cpu_s"] for r in results),
            "lat": [x for r in results for x in r["lat"]],
            "errors": sum(r["errors"] for r in results),
            "exhausted": sum(r["exhausted"] for r in results),
            "error_samples": [s for r in results for s in r["error_samples"]]}


def _sum_blocks(blocks: list[dict]) -> dict:
    """Totals over the blocks of one phase: seconds, judgments, CPU, errors."""
    cpu: dict[str, float] = {}
    for b in blocks:
        for k, v in b["cpu"].items():
            cpu[k] = cpu.get(k, 0.0) + v
    seconds = sum(b["seconds"] for b in blocks)
    done = sum(b["done"] for b in blocks)
    return {"seconds": seconds, "judgments": done, "judgments_per_s": done / seconds,
            "cpu_per_judgment": cpu_report(cpu, sum(b["client_cpu"] for b in blocks), done,
                                           seconds),
            "per_block": [round(b["done"] / b["seconds"], 1) for b in blocks],
            "errors": sum(b["errors"] for b in blocks),
            "exhausted": sum(b["exhausted"] for b in blocks),
            "error_samples": [s for b in blocks for s in b["error_samples"]][:5]}


def summarize_capacity(blocks: list[dict]) -> dict:
    lat = [x for b in blocks for x in b["lat"]]
    return {**_sum_blocks(blocks), "closed_loop_p50_ms": _pct(lat, 0.5) * 1000,
            "closed_loop_p99_ms": _pct(lat, 0.99) * 1000}


def run_latency(args, port: int, campaign_id: int, first_user: int, url: str,
                gunicorn_pid: int) -> dict:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    rng = random.Random(12345)
    arrivals, t = [], 0.0
    while True:  # Poisson arrivals on a fixed clock
        t += rng.expovariate(args.rate)
        if t >= args.duration:
            break
        arrivals.append(t)
    counter = ctx.Value("l", 0)
    start_at = time.time() + 2.0 + args.clients * 0.03
    cutoff = start_at + args.duration + max(5.0, args.duration / 4)
    procs = [ctx.Process(target=latency_client,
                         args=(port, first_user + i, campaign_id, start_at, cutoff, arrivals,
                               counter, i, out))
             for i in range(args.clients)]
    for p in procs:
        p.start()
    cpu = measure_window(url, args.db, start_at, start_at + args.duration, gunicorn_pid)
    results = _collect(procs, out)
    lat = [x for r in results for x in r["lat"]]
    service = [x for r in results for x in r["service"]]
    dropped = [x for r in results for x in r["dropped"]]
    done = len(lat)
    lat += dropped
    return {"scheduled": len(arrivals), "judgments": done, "dropped": len(dropped),
            "achieved_rate": done / args.duration,
            "cpu_per_judgment": cpu_report(cpu, sum(r["cpu_s"] for r in results), done,
                                           args.duration),
            "p50_ms": _pct(lat, 0.5) * 1000, "p90_ms": _pct(lat, 0.9) * 1000,
            "p99_ms": _pct(lat, 0.99) * 1000, "max_ms": max(lat, default=0) * 1000,
            "service_p50_ms": _pct(service, 0.5) * 1000,
            "service_p99_ms": _pct(service, 0.99) * 1000,
            "errors": sum(r["errors"] for r in results),
            "exhausted": sum(r["exhausted"] for r in results),
            "error_samples": [s for r in results for s in r["error_samples"]][:5]}


# --------------------------------------------------------------------------------------------
# Inside Django (a subprocess): capture the hot path's SQL, and profile it in-process
# --------------------------------------------------------------------------------------------

class _Recorder:
    """Records every statement (with timing) and transaction boundary on Django's connection."""

    def __init__(self, connection):
        self.events: list[dict] = []
        self.db_s = 0.0
        self.on = False
        self.connection = connection
        orig_commit, orig_rollback = connection._commit, connection._rollback
        orig_set_autocommit = connection._set_autocommit

        def _commit():
            t0 = time.perf_counter()
            try:
                return orig_commit()
            finally:
                self._note({"sql": "COMMIT"}, time.perf_counter() - t0)

        def _rollback():
            t0 = time.perf_counter()
            try:
                return orig_rollback()
            finally:
                self._note({"sql": "ROLLBACK"}, time.perf_counter() - t0)

        def _set_autocommit(autocommit):
            if not autocommit:
                self._note({"sql": "BEGIN"}, 0.0)
            return orig_set_autocommit(autocommit)

        orig_is_usable = connection.is_usable

        def is_usable():  # the per-request health check (conn_health_checks): one SELECT 1
            t0 = time.perf_counter()
            try:
                return orig_is_usable()
            finally:
                self._note({"sql": "SELECT 1", "params": []}, time.perf_counter() - t0)

        connection._commit, connection._rollback = _commit, _rollback
        connection._set_autocommit = _set_autocommit
        connection.is_usable = is_usable
        connection.execute_wrappers.append(self)

    def _note(self, event: dict, seconds: float) -> None:
        if self.on:
            self.db_s += seconds
            event["ms"] = round(seconds * 1000, 3)
            self.events.append(event)

    def __call__(self, execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self._note({"sql": sql, "params": [_jsonable(p) for p in (params or ())]},
                       time.perf_counter() - t0)


def _jsonable(value):
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


class _ScriptedRandom(random.Random):
    """random() answers from a script first (to force the calibration branch or not)."""

    def __init__(self, script: list[float]):
        super().__init__(7)
        self.script = list(script)

    def random(self) -> float:
        return self.script.pop(0) if self.script else super().random()


def _model_defaults() -> dict:
    """{table: {column: text}}: Django-side defaults of NOT NULL columns (Django sets no DB
    defaults), so that COPY works when the models gain a field this loader does not know."""
    from django.apps import apps

    out: dict = {}
    for model in apps.get_models():
        for f in model._meta.concrete_fields:
            if f.null:
                continue
            if not f.has_default():
                # A NOT NULL text column without a model default (e.g. AnnotatorProfile.source):
                # the COPY must still name it.
                if f.get_internal_type() in ("CharField", "TextField"):
                    out.setdefault(model._meta.db_table, {})[f.column] = ""
                continue
            value = f.get_default()
            if f.get_internal_type() == "JSONField":
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif value is None:
                continue
            out.setdefault(model._meta.db_table, {})[f.column] = str(value)
    return out


def django_main(mode: str, campaign_id: int, user_id: int, n: int, profile_top: int) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection

    if mode == "defaults":
        print(json.dumps(_model_defaults()))
        return

    from annotation.services import assignment as assignment_service

    # Requests go straight to the WSGI application, as gunicorn would send them (middleware,
    # request_started/finished signals and the connection health check included).
    from config.wsgi import application

    next_path = f"/api/campaigns/{campaign_id}/next/"
    rec = _Recorder(connection)
    rng = random.Random(5)
    state = {"token": None}

    def post(path: str, body: bytes) -> tuple[int, bytes]:
        import io

        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Token {auth_key(user_id)}", "HTTP_ACCEPT": "application/json",
            "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status = []
        chunks = application(environ, lambda s, h, exc_info=None: status.append(s))
        try:
            data = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()  # fires request_finished, as a WSGI server does
        return int(status[0].split()[0]), data

    def do_next():
        code, data = post(next_path, b"")
        assert code == 200, (code, data[:300])
        state["token"] = json.loads(data)["token"]

    def do_submit():
        state.update(choice=rng.choice(("left", "right", "tie")), strength=rng.randint(1, 3),
                     idem=uuid.uuid4().hex, seconds=12.5)
        code, data = post("/api/judgments/", json.dumps({
            "token": state["token"], "choice": state["choice"], "strength": state["strength"],
            "idempotency_key": state["idem"], "seconds_spent": state["seconds"]}).encode())
        assert code == 201, (code, data[:300])

    if mode == "capture":  # start from a regular item (no calibration draw)
        assignment_service._system_random = _ScriptedRandom([0.99, 0.3])
    do_next()
    if mode == "capture":
        from annotation.models import Assignment
        from annotation.services.judgments import choice_from_screen

        def assignment_ctx(token: str, prefix: str) -> dict:
            a = Assignment.objects.select_related("comparison").get(token=token)
            return {f"{prefix}_id": a.pk, f"{prefix}_token": str(a.token),
                    f"{prefix}_kind": a.comparison.kind,
                    f"{prefix}_comparison": a.comparison_id, f"{prefix}_a_on_left": a.a_on_left,
                    f"{prefix}_claimed": a.comparison.claimed_count,
                    f"{prefix}_is_full": a.comparison.is_full}

        # Two recorded cycles give the four halves the replay chains: a regular item's submit
        # and a next that draws a calibration item; that calibration item's submit (the quality
        # update tallies gold) and a next that claims a regular item. random() is scripted: the
        # claim calls it for the calibration draw and the screen side; the quality update for
        # the re-show draw (never, here: re-shows are 5% of regular submits and not replayed).
        with contextlib.suppress(ImportError):
            from annotation.services import quality as quality_service

            quality_service._system_random = _ScriptedRandom([0.99] * 10)
        halves = {}
        for submitted, claim, script in (("regular", "calibration", [0.0, 0.3]),
                                         ("calibration", "overlap", [0.99, 0.3])):
            assignment_service._system_random = _ScriptedRandom(script)
            ctx = {"key": auth_key(user_id), "user": user_id, "campaign": campaign_id,
                   **assignment_ctx(state["token"], "sub")}
            if ctx["sub_kind"] != submitted:
                raise RuntimeError(f"capture: expected a {submitted} item, got {ctx['sub_kind']}")
            rec.events = []
            rec.on = True
            do_submit()
            submit_events, rec.events = rec.events, []
            do_next()
            rec.on = False
            ctx.update(assignment_ctx(state["token"], "new"), idem=state["idem"],
                       seconds=state["seconds"],
                       choice=str(choice_from_screen(state["choice"],
                                                     a_on_left=ctx["sub_a_on_left"])),
                       strength=state["strength"] if state["choice"] in ("left", "right")
                       else None)
            with connection.cursor() as cur:
                cur.execute("SELECT to_regclass('annotation_annotatorquality')")
                if cur.fetchone()[0] is not None:
                    cur.execute("SELECT id FROM annotation_annotatorquality WHERE campaign_id = %s"
                                " AND annotator_id = %s", [campaign_id, user_id])
                    row = cur.fetchone()
                    if row:
                        ctx["aq_id"] = row[0]
            halves[f"submit_{submitted}"] = {"events": submit_events, "ctx": ctx}
            halves[f"next_{claim}"] = {"events": rec.events, "ctx": ctx}
        server_side_binding = bool(connection.settings_dict["OPTIONS"].get("server_side_binding"))
        print(json.dumps({"halves": halves, "server_side_binding": server_side_binding}))
        return

    # mode == "profile": n submit-and-next cycles in-process (no HTTP server, no concurrency).
    import cProfile
    import pstats

    for _ in range(20):  # warm caches
        do_submit()
        do_next()
    per: dict[str, list] = {"submit": [], "next": []}
    by_statement: dict[str, list[float]] = {}
    t_all = time.perf_counter()
    for _ in range(n):
        for name, fn in (("submit", do_submit), ("next", do_next)):
            connection.ensure_connection()
            backend = _proc_stat(connection.connection.info.backend_pid)
            rec.events, rec.db_s, rec.on = [], 0.0, True
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rec.on = False
            backend_after = _proc_stat(connection.connection.info.backend_pid) \
                if connection.connection else None
            db_cpu = backend_after[1] - backend[1] if backend and backend_after else 0.0
            statements = [e for e in rec.events if "ms" in e]
            per[name].append({"wall_ms": wall * 1000, "db_wait_ms": rec.db_s * 1000,
                              "app_cpu_ms": cpu * 1000, "db_cpu_ms": db_cpu * 1000,
                              "statements": len(statements)})
            for e in statements:
                by_statement.setdefault(f"{name}: {_statement_label(e['sql'])}", []).append(
                    e["ms"])
    total = time.perf_counter() - t_all
    result = {"cycles": n, "judgments_per_s_single_thread": n / total}
    for name, rows in per.items():
        result[name] = {k: round(statistics.mean(r[k] for r in rows), 2) for k in rows[0]}
    result["statements"] = {
        label: {"per_judgment": round(len(ms) / n, 2), "wait_ms": round(statistics.mean(ms), 3)}
        for label, ms in by_statement.items()
    }
    # Where the app's CPU goes: a profiled pass (CPU time, not wall time), self time grouped by
    # package. The profiler slows small functions most, so read these as proportions.
    prof = cProfile.Profile(time.process_time)
    cycles = max(20, min(n, 100))
    prof.enable()
    for _ in range(cycles):
        do_submit()
        do_next()
    prof.disable()
    stats = pstats.Stats(prof)
    groups: dict[str, float] = {}
    for (path, _line, _func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        groups[_package_of(path)] = groups.get(_package_of(path), 0.0) + tottime
    total_cpu = sum(groups.values())
    result["app_cpu_share_pct"] = {k: round(100 * v / total_cpu, 1) for k, v in
                                   sorted(groups.items(), key=lambda kv: -kv[1]) if v > 0}
    if profile_top:
        stats.stream = sys.stderr
        stats.sort_stats("cumulative").print_stats(profile_top)
        stats.sort_stats("tottime").print_stats(profile_top)
    print(json.dumps(result))


_PACKAGES = [
    ("django/db/models/", "django ORM (query building, SQL compiling, model instances)"),
    ("django/db/backends/", "django DB backend (cursor wrappers)"),
    ("psycopg", "psycopg (driver)"),
    ("rest_framework", "DRF (views, auth, serializers, rendering)"),
    ("django/", "django (request, middleware, urls, signals, utils)"),
    ("/annotation/", "gaplab app code"),
]


def _package_of(path: str) -> str:
    for prefix, label in _PACKAGES:
        if prefix in path:
            return label
    if path.startswith("~") or ("/lib/python3" in path and "site-packages" not in path):
        return "python stdlib and builtins"
    return "other"


def _statement_label(sql: str) -> str:
    """A short name for a statement: its verb, table and (for SELECT) a hint of its filter."""
    if sql in ("BEGIN", "COMMIT", "ROLLBACK", "SELECT 1"):
        return sql
    verb = sql.split()[0].upper()
    table = re.search(r'(?:FROM|INTO|UPDATE) "(\w+)"', sql)
    label = f"{verb} {table.group(1).removeprefix('annotation_') if table else '?'}"
    where = re.search(r'WHERE \(?"\w+"\."(\w+)"', sql)
    if verb == "SELECT" and where:
        label += f" by {where.group(1)}"
    if "FOR UPDATE" in sql:
        label += " FOR UPDATE" + (" SKIP LOCKED" if "SKIP LOCKED" in sql else "")
    return label


def run_django(args, url: str, mode: str, campaign_id: int, user_id: int, n: int = 0) -> dict:
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "0", "SECRET_KEY": SECRET_KEY,
           "ALLOWED_HOSTS": "127.0.0.1", "DJANGO_SETTINGS_MODULE": "config.settings"}
    cmd = [PYTHON, str(Path(__file__).resolve()), "_django", mode, str(campaign_id),
           str(user_id), str(n), str(args.profile_top if mode == "profile" else 0)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"django {mode} failed:\n{proc.stderr[-3000:]}")
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# (c) raw psycopg replay of the captured SQL
# --------------------------------------------------------------------------------------------
#
# The capture (above) records every statement and transaction boundary Django runs for one
# submit-and-next, once for each branch of the claim (regular item; calibration item). The replay
# executes exactly those statement texts, in that order, through psycopg's ClientCursor (what
# Django uses), with the per-iteration values (annotator, token, assignment, comparison, key,
# timestamps) put in place of the captured ones. RULES name the statements whose results later
# statements need (the claimed comparison, the submitted assignment) and build the parameters
# that cannot be told apart by value (inserts, the claim counter). Every other parameter is
# matched by value against the capture's known values, or replayed as captured (constants such
# as 'pending'). A statement no rule knows (e.g. a new query in the hot path) is replayed the same
# generic way and counted in raw_generic_statements.

K = object()  # in a positional builder: "the captured value at this position"


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: str
    params: object = None  # callable(ctx) -> list (K = captured constant); None: by value
    read: object = None  # callable(ctx, cursor) -> None: store results later statements need


def _col(cur, row, name):
    return row[[d.name for d in cur.description].index(name)]


def _read_submitted(ctx, cur):
    row = cur.fetchone()
    ctx["sub_id"], ctx["sub_comparison"] = _col(cur, row, "id"), _col(cur, row, "comparison_id")
    ctx["sub_a_on_left"] = _col(cur, row, "a_on_left")


def _read_claim(ctx, cur):
    row = cur.fetchone()
    if row is None:
        ctx["exhausted"] = True
        return
    ctx["new_comparison"] = _col(cur, row, "id")
    ctx["new_claimed"] = _col(cur, row, "claimed_count") + 1
    ctx["new_is_full"] = ctx["new_claimed"] >= ctx["overlap"]


def _read_calibration_mine(ctx, cur):
    # Items made for this annotator (re-shows, transitivity closers); the bench creates none,
    # so Django goes on to the shared candidates, as the captured program does.
    if cur.fetchone() is not None:
        ctx["errors"] += 1


def _read_calibration(ctx, cur):
    ids = [r[0] for r in cur.fetchall()]
    if ids:
        ctx["new_comparison"] = ctx["rng"].choice(ids)
    else:
        ctx["fallback"] = True  # no gold item left for this annotator: claim a regular one


def _read_quality_row(ctx, cur):
    row = cur.fetchone()
    if row is None:
        ctx["errors"] += 1  # every bench annotator has one (_quality_rows)
    else:
        ctx["aq_id"] = _col(cur, row, "id")


def _read_new_assignment(ctx, cur):
    ctx["new_id"] = cur.fetchone()[0]


def _read_existing(ctx, cur):
    if cur.fetchone() is not None:
        ctx["errors"] += 1  # a fresh key must not exist


RULES = [
    Rule("assignment_by_token", r'^SELECT .* FROM "annotation_assignment" .*"token" = %s',
         read=_read_submitted),
    Rule("judgment_by_key", r'^SELECT .* FROM "annotation_judgment" WHERE .*"idempotency_key"',
         read=_read_existing),
    Rule("judgment_insert", r'^INSERT INTO "annotation_judgment"',
         lambda c: [c["sub_id"], c["campaign"], c["sub_comparison"], c["user"], c["choice"],
                    c["strength"], K, K, c["seconds"], c["sub_a_on_left"], c["idem"], K,
                    c["now"]]),
    Rule("claim", r'^SELECT .*"claimed_count".* FROM "annotation_comparison" .*FOR UPDATE',
         read=_read_claim),
    Rule("comparison_claimed", r'^UPDATE "annotation_comparison" SET "claimed_count"',
         lambda c: [c["new_claimed"], c["new_is_full"], c["new_comparison"]]),
    Rule("assignment_insert", r'^INSERT INTO "annotation_assignment"',
         lambda c: [c["new_token"], c["campaign"], c["new_comparison"], c["user"],
                    c["new_a_on_left"], K, c["now"], c["expires"], K, K],
         _read_new_assignment),
    Rule("quality_row", r'^SELECT .* FROM "annotation_annotatorquality" .*FOR UPDATE',
         read=_read_quality_row),
    Rule("calibration_mine",
         r'^SELECT .* FROM "annotation_comparison" .*"for_annotator_id" = %s',
         read=_read_calibration_mine),
    Rule("calibration_candidates", r'^SELECT .* FROM "annotation_comparison" .*LIMIT 500',
         read=_read_calibration),
]
_TX = ("BEGIN", "COMMIT", "ROLLBACK")
# Values told apart by value: each is distinct in the capture (ids, keys, tokens).
_BY_VALUE = ("key", "user", "campaign", "sub_id", "sub_token", "sub_comparison", "idem",
             "new_id", "new_token", "new_comparison", "aq_id")


def _rule_for(sql: str) -> Rule:
    hits = [r for r in RULES if re.search(r.pattern, sql, re.S)]
    if len(hits) > 1:
        raise RuntimeError(f"raw replay: rules {[r.name for r in hits]} all match: {sql[:300]}")
    if hits:
        return hits[0]
    verb = sql.split()[0].upper()
    table = re.search(r'(?:FROM|INTO|UPDATE) "(\w+)"', sql)
    return Rule(f"generic:{verb} {table.group(1) if table else '?'}", "")


def _norm(value) -> str:
    return "" if value is None else str(value)


class _Like:
    """Stands for a fresh value in the check of the rules: matches any value of its shape."""

    def __init__(self, pattern: str):
        self.pattern = re.compile(pattern)

    def matches(self, value) -> bool:
        return isinstance(value, str) and bool(self.pattern.fullmatch(value))


_DATETIME = _Like(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00:00")
_UUID = _Like(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _by_value(ctx: dict, value, sql: str):
    """The role of a captured parameter: ('role', name) or ('const', value)."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if _DATETIME.matches(value):
        return ("role", "now")
    hits = [r for r in _BY_VALUE if r in ctx and type(ctx[r]) is type(value)
            and _norm(ctx[r]) == _norm(value)]
    if len(hits) > 1:
        raise RuntimeError(f"raw replay: parameter {value!r} is ambiguous {hits}: {sql[:200]}")
    return ("role", hits[0]) if hits else ("const", value)


def compile_replay(captured: dict) -> dict:
    """Turn the capture into {half: steps}; check the positional RULES against it.

    Halves: submit_regular, submit_calibration, next_overlap, next_calibration. A step is
    (sql, rule, params), params a list of ('role', name) / ('const', value) / ('pos', index);
    rule is None for BEGIN/COMMIT/ROLLBACK.
    """
    programs = {}
    for half, data in captured["halves"].items():
        ctx = {**data["ctx"], "now": _DATETIME, "expires": _DATETIME, "new_token": _UUID}
        steps = []
        for e in data["events"]:
            sql = e["sql"]
            if sql in _TX:
                steps.append((sql, None, None))
                continue
            rule = _rule_for(sql)
            captured_params = e["params"]
            if rule.params is None:
                params = [_by_value(data["ctx"], v, sql) for v in captured_params]
            else:
                built = rule.params(ctx)
                if len(built) != len(captured_params):
                    raise RuntimeError(f"raw replay: rule {rule.name} builds {len(built)} params,"
                                       f" Django sent {len(captured_params)}: {sql[:200]}")
                params = []
                for i, (mine, theirs) in enumerate(zip(built, captured_params, strict=True)):
                    if mine is K:
                        params.append(("const", theirs))
                        continue
                    ok = (mine.matches(theirs) if isinstance(mine, _Like)
                          else _norm(mine) == _norm(theirs))
                    if not ok:
                        raise RuntimeError(f"raw replay: rule {rule.name} param {i} is {mine!r},"
                                           f" Django sent {theirs!r} (update RULES)")
                    params.append(("pos", i))
            steps.append((sql, rule, params))
        programs[half] = steps
    return programs


def _constant(value):
    from psycopg.types.json import Jsonb

    if isinstance(value, str) and value.startswith("Jsonb("):
        return Jsonb(json.loads(value[6:-1].replace("'", '"')))
    return value


def raw_client(url, user_id, campaign_id, programs, start_at, end_at, seed, out,
               server_side_binding=False):
    rng = random.Random(seed)
    # Django's cursor: client-side binding (psycopg.ClientCursor) unless OPTIONS sets
    # server_side_binding, then server-side binding with statements prepared after 5 uses.
    factory = psycopg.Cursor if server_side_binding else psycopg.ClientCursor
    conn = psycopg.connect(url, autocommit=True, cursor_factory=factory)
    steps = {
        half: [(sql, rule, None if rule is None else
                [(kind, _constant(v) if kind == "const" else v) for kind, v in params])
               for sql, rule, params in program]
        for half, program in programs.items()
    }
    # The claim statements of the regular branch, for a calibration draw that finds no gold item.
    fallback = [step for step in steps["next_overlap"]
                if step[1] is not None and step[1].name in ("claim", "comparison_claimed")]
    ctx = {"key": auth_key(user_id), "user": user_id, "campaign": campaign_id,
           "overlap": OVERLAP, "rng": rng, "errors": 0}
    counts = {"statements": 0}

    def execute(sql, rule, params):
        counts["statements"] += 1
        cur = conn.cursor()
        if rule is None:
            cur.execute(sql)
            return
        built = rule.params(ctx) if rule.params is not None else None
        values = [v if kind == "const" else built[v] if kind == "pos" else ctx[v]
                  for kind, v in params]
        cur.execute(sql, values)
        if rule.read is not None:
            rule.read(ctx, cur)

    def run(program) -> bool:
        now = datetime.now(UTC)
        choice = rng.choice(("A", "B", "A", "B", "tie", "both_bad"))
        ctx.update(now=now, expires=now + timedelta(seconds=1800), idem=uuid.uuid4().hex,
                   choice=choice, strength=rng.randint(1, 3) if choice in ("A", "B") else None,
                   seconds=round(rng.uniform(3, 90), 1), new_token=uuid.uuid4(),
                   new_a_on_left=rng.random() < 0.5, exhausted=False, fallback=False)
        for sql, rule, params in program:
            if ctx["exhausted"]:  # Django returns 204 after closing the claim's transaction
                if sql == "COMMIT":
                    execute(sql, rule, params)
                    return False
                continue
            if rule is not None and rule.name == "assignment_insert" and ctx["fallback"]:
                for step in fallback:
                    execute(*step)
            execute(sql, rule, params)
        if "new_token" in ctx:
            ctx["sub_token"] = ctx["new_token"]
        return True

    result = {"done": 0, "statements": 0, "errors": 0, "exhausted": 0}
    try:
        run(steps["next_overlap"])  # warm-up: the first assignment
        item = "regular"
        _wait_until(start_at)
        at_start = counts["statements"]
        while time.time() < end_at:
            branch = "calibration" if rng.random() < CALIBRATION_RATE else "overlap"
            ok = run(steps[f"submit_{item}"]) and run(steps[f"next_{branch}"])
            item = "calibration" if branch == "calibration" and not ctx["fallback"] else "regular"
            if not ok:
                result["exhausted"] += 1
                break
            if time.time() <= end_at:
                result["done"] += 1
        result.update(statements=counts["statements"] - at_start, errors=ctx["errors"],
                      cpu_s=time.process_time())
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        result.update(errors=result["errors"] + 1, error=repr(exc)[:300])
    finally:
        conn.close()
    out.put(result)


def run_raw_block(args, url: str, campaign_id: int, first_user: int, programs: dict,
                  server_side_binding: bool, seconds: float) -> dict:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 2.0 + args.clients * 0.03
    end_at = start_at + seconds
    procs = [ctx.Process(target=raw_client,
                         args=(url, first_user + i, campaign_id, programs, start_at, end_at,
                               1000 + i, out, server_side_binding))
             for i in range(args.clients)]
    for p in procs:
        p.start()
    cpu = measure_window(url, args.db, start_at, end_at)
    results = _collect(procs, out)
    return {"seconds": seconds, "cpu": cpu, "done": sum(r["done"] for r in results),
            "client_cpu": sum(r.get("cpu_s", 0.0) for r in results),
            "statements": sum(r["statements"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "exhausted": sum(r["exhausted"] for r in results),
            "error_samples": [r["error"] for r in results if "error" in r]}


def summarize_raw(blocks: list[dict], programs: dict) -> dict:
    totals = _sum_blocks(blocks)
    return {**totals,
            "statements_per_judgment": round(sum(b["statements"] for b in blocks)
                                             / max(1, totals["judgments"]), 2),
            "statements_per_half": {half: len(p) for half, p in programs.items()},
            "generic_statements": sorted({rule.name for p in programs.values() for _, rule, _ in p
                                          if rule is not None and rule.name.startswith("generic")})}


# --------------------------------------------------------------------------------------------
# gunicorn
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(args, url: str, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "0", "SECRET_KEY": SECRET_KEY,
           "ALLOWED_HOSTS": "127.0.0.1", "DJANGO_SETTINGS_MODULE": "config.settings",
           "GAPLAB_LOG_LEVEL": "WARNING",
           # Closed-loop clients on one user measure capacity, not the per-user API throttle.
           "GAPLAB_THROTTLE_USER": "off"}
    cmd = [str(Path(PYTHON).parent / "gunicorn"), "config.wsgi:application",
           "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers),
           "--worker-class", args.worker_class, "--threads", str(args.threads),
           "--backlog", "2048", "--keep-alive", "75", "--log-level", "warning"]
    fh = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/campaigns/",
                         headers={"Authorization": f"Token {auth_key(1)}"})
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                # Every worker opens its DB connection and imports lazily on first use: warm up.
                for _ in range(args.workers * args.threads * 4):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/api/campaigns/",
                                 headers={"Authorization": f"Token {auth_key(1)}"})
                    conn.getresponse().read()
                    conn.close()
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not come up")


def stop_process_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--judgments", type=int, default=1_000_000, help="judgments bulk-loaded")
    p.add_argument("--annotators", type=int, default=1000)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    p.add_argument("--clients", type=int, default=32, help="client processes per phase")
    p.add_argument("--rate", type=float, default=150.0, help="open-loop judgments/s (phase b)")
    # 6 gthread workers x 2 threads: see benchmarks/README.md for the comparison.
    p.add_argument("--workers", type=int, default=6, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker")
    p.add_argument("--worker-class", default="gthread")
    p.add_argument("--blocks", type=int, default=3,
                   help="capacity and raw alternate in this many blocks of duration/blocks")
    p.add_argument("--phases", default="capacity,latency,raw,profile",
                   help="comma-separated subset of capacity,latency,raw,profile")
    p.add_argument("--profile-cycles", type=int, default=300,
                   help="in-process submit-and-next cycles for the per-request breakdown")
    p.add_argument("--profile-top", type=int, default=0,
                   help="also print the top N functions of a cProfile of the in-process run")
    p.add_argument("--db", default="gaplab_bench", help="run database (template: <db>_base)")
    p.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="any URL on the server; only host, port and credentials are used")
    p.add_argument("--reload", action="store_true", help="reload the data even if cached")
    p.add_argument("--show-sql", action="store_true", help="print the captured SQL to stderr")
    p.add_argument("--keep-db", action="store_true", help="keep the run database afterwards")
    return p.parse_args(argv)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_django":
        mode, campaign_id, user_id, n, top = argv[1:6]
        django_main(mode, int(campaign_id), int(user_id), int(n), int(top))
        return 0
    args = parse_args(argv)
    if args.annotators < 3 * args.clients + 2:
        raise SystemExit("--annotators must be at least 3 * --clients + 2")
    # The app's files (the embedded Celery broker's queue: the quality update enqueues a
    # recompute every 50 judgments) go to a scratch folder, not the checkout's var/.
    data_dir = Path(tempfile.mkdtemp(prefix="gaplab-bench-"))
    os.environ["GAPLAB_DATA_DIR"] = str(data_dir)
    try:
        return _main(args)
    finally:
        if not args.keep_db:
            shutil.rmtree(data_dir, ignore_errors=True)


def _main(args) -> int:
    phases = {s.strip() for s in args.phases.split(",") if s.strip()}
    t_start = time.perf_counter()
    meta = prepare_database(args)
    url = db_url(args.database_url, args.db)

    campaigns = {k: int(v) for k, v in meta["campaigns"].items()}
    # Distinct annotators per phase: 1..N capacity, N+1..2N latency, 2N+1..3N raw.
    users = {"capacity": 1, "latency": args.clients + 1, "raw": 2 * args.clients + 1,
             "profile": args.annotators, "capture": args.annotators - 1}

    result: dict = {
        "n_judgments_loaded": meta["n_judgments"], "n_annotators": meta["n_annotators"],
        "n_comparisons_loaded": meta["n_comparisons"], "load_s": meta["load_s"],
        "load_cached": meta["cached"], "clone_s": meta["clone_s"],
        "gunicorn": {"workers": args.workers, "threads": args.threads,
                     "worker_class": args.worker_class},
        "clients": args.clients, "duration_s": args.duration, "rate": args.rate,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    errors = 0
    programs = None
    if "raw" in phases:
        captured = run_django(args, url, "capture", campaigns["raw"], users["capture"])
        if args.show_sql:
            for half, data in captured["halves"].items():
                log(f"--- captured SQL, {half}")
                for e in data["events"]:
                    log(f"    {e.get('ms', '')} {e['sql']}  {e.get('params', '')}")
        programs = compile_replay(captured)
    # Capacity and raw alternate in --blocks blocks, so that drift of a shared machine (other
    # jobs, the hypervisor's steal time) hits both alike and their ratio stays fair.
    blocks = args.blocks if {"capacity", "raw"} <= phases else 1
    seconds = args.duration / blocks
    cap_blocks: list[dict] = []
    raw_blocks: list[dict] = []
    server = None
    if phases & {"capacity", "latency"}:
        port = free_port()
        log_path = Path(os.environ["GAPLAB_DATA_DIR"]) / "gunicorn.log"
        server = start_gunicorn(args, url, port, log_path)
        log(f"gunicorn up on :{port} ({args.workers} x {args.worker_class} "
            f"{args.threads} threads)")
    try:
        for block in range(blocks):
            if "capacity" in phases:
                log(f"(a) capacity, block {block + 1}/{blocks}: {args.clients} closed-loop "
                    f"clients for {seconds:g}s")
                cap_blocks.append(run_capacity_block(
                    args, port, campaigns["capacity"], users["capacity"], url, server.pid,
                    seconds))
                log(f"    {cap_blocks[-1]['done'] / seconds:.1f} judgments/s")
            if "raw" in phases:
                log(f"(c) raw psycopg replay, block {block + 1}/{blocks}: {args.clients} "
                    f"processes for {seconds:g}s")
                raw_blocks.append(run_raw_block(
                    args, url, campaigns["raw"], users["raw"], programs,
                    captured["server_side_binding"], seconds))
                log(f"    {raw_blocks[-1]['done'] / seconds:.1f} judgments/s")
        if "latency" in phases:
            log(f"(b) latency: open loop, {args.rate}/s for {args.duration}s")
            lat = run_latency(args, port, campaigns["latency"], users["latency"], url,
                              server.pid)
            log(f"    {json.dumps(lat)}")
            result.update(p50_ms=round(lat["p50_ms"], 1), p90_ms=round(lat["p90_ms"], 1),
                          p99_ms=round(lat["p99_ms"], 1), max_ms=round(lat["max_ms"], 1),
                          latency_achieved_rate=round(lat["achieved_rate"], 1),
                          latency_dropped=lat["dropped"], latency_errors=lat["errors"],
                          latency_cpu_per_judgment=lat["cpu_per_judgment"])
            errors += lat["errors"] + lat["exhausted"]
    finally:
        if server is not None:
            stop_process_group(server)
    if cap_blocks:
        cap = summarize_capacity(cap_blocks)
        log(f"(a) capacity: {json.dumps(cap)}")
        result.update(judgments_per_s=round(cap["judgments_per_s"], 1),
                      capacity_per_block=cap["per_block"],
                      capacity_closed_loop_p50_ms=round(cap["closed_loop_p50_ms"], 1),
                      capacity_closed_loop_p99_ms=round(cap["closed_loop_p99_ms"], 1),
                      capacity_errors=cap["errors"],
                      capacity_cpu_per_judgment=cap["cpu_per_judgment"])
        errors += cap["errors"] + cap["exhausted"]
    if raw_blocks:
        raw = summarize_raw(raw_blocks, programs)
        log(f"(c) raw: {json.dumps(raw)}")
        result.update(raw_judgments_per_s=round(raw["judgments_per_s"], 1),
                      raw_per_block=raw["per_block"],
                      raw_statements_per_judgment=raw["statements_per_judgment"],
                      raw_cpu_per_judgment=raw["cpu_per_judgment"],
                      raw_errors=raw["errors"])
        errors += raw["errors"] + raw["exhausted"]
        if cap_blocks:
            result["ratio_to_raw"] = round(cap["judgments_per_s"] / raw["judgments_per_s"], 3)
            # The same ratio from CPU per judgment (what limits both on a saturated machine):
            # insensitive to how much CPU other work took during either phase.
            c, r = cap["cpu_per_judgment"], raw["cpu_per_judgment"]
            result["ratio_to_raw_by_cpu"] = round(
                (r["db_ms"] + r["client_ms"])
                / max(1e-9, c["app_ms"] + c["db_ms"] + c["client_ms"]), 3)
    if "profile" in phases:
        prof = run_django(args, url, "profile", campaigns["profile"], users["profile"],
                          args.profile_cycles)
        log(f"in-process profile: {json.dumps(prof)}")
        result["per_request"] = {k: prof[k] for k in ("submit", "next")}
        result["statements_per_judgment"] = prof["statements"]
        result["app_cpu_share_pct"] = prof["app_cpu_share_pct"]
        result["single_thread_in_process_judgments_per_s"] = round(
            prof["judgments_per_s_single_thread"], 1)
    result["errors"] = errors
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    if not args.keep_db:
        with _admin(args.database_url) as admin:
            _drop_db(admin, args.db)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
