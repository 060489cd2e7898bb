"""`make demo` end to end: embedded SQLite + filesystem broker, a login, a judgment, Ctrl-C.

Runs the real Makefile target in its own process group with a throwaway GAPLAB_DATA_DIR, so the
developer's var/ is never touched, and checks that SIGINT (what Ctrl-C sends to the foreground
group) stops the web server and the Celery worker, leaving no process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEMO_PASSWORD = "gaplab-demo"
SETUP_TIMEOUT_S = 900  # only when .venv/.installed is stale: `make setup` reinstalls
START_TIMEOUT_S = 420  # migrate, demo_seed, demo_world, demo_training (pi0 by SFT), demo_gap
# (the noise-vs-gap experiment, about 40 s on 2 quiet cores), runserver
WORKER_TIMEOUT_S = 90
TRAINING_TIMEOUT_S = 240  # the tiny reward model on a busy 2-core machine
STOP_TIMEOUT_S = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _demo_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "GAPLAB_CELERY_EAGER",
                 "GAPLAB_STATICFILES_STORAGE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    env["GAPLAB_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _training_statuses(data_dir: Path) -> list[tuple[str, str]]:
    """(method, status) of the demo's training runs, oldest first, read-only."""
    db = sqlite3.connect(f"file:{data_dir / 'gaplab.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT method, status FROM training_trainingrun"
                          " WHERE sweep_id IS NULL ORDER BY id").fetchall()
    finally:
        db.close()


def _group_members(pgid: int) -> dict[int, str]:
    """Live (non-zombie) processes in a process group: pid -> command line."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members[int(entry.name)] = cmdline
    return members


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _csrf(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def _form_token(html: str) -> str:
    form = html[html.index('id="judgment-form"'):]
    match = re.search(r'name="token" value="([0-9a-f-]{36})"', form)
    assert match, "no assignment token in the judgment form"
    return match.group(1)


def test_make_demo_serves_records_a_judgment_and_stops_on_ctrl_c(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("`make` is not installed")
    data_dir = tmp_path / "data"
    env = _demo_env(data_dir)
    log_path = tmp_path / "demo.log"

    # `make demo` depends on setup; do a stale setup first, on its own clock.
    if subprocess.run([make, "-q", "setup"], cwd=REPO, env=env).returncode != 0:
        setup = subprocess.run([make, "setup"], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=SETUP_TIMEOUT_S)
        assert setup.returncode == 0, f"make setup failed:\n{setup.stdout}\n{setup.stderr}"

    port = _free_port()
    timings: dict[str, float] = {}
    with log_path.open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen([make, "demo", f"PORT={port}"], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    pgid = proc.pid  # start_new_session: make leads its own session and process group

    def output() -> str:
        return log_path.read_text(errors="replace")

    try:
        # 1. The URL is printed and answers.
        url = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"make demo exited early ({proc.returncode}):\n{output()}"
            match = re.search(r"Gaplab demo: (http://\S+/)", output())
            if match and _port_open(port):
                url = match.group(1)
                try:
                    if requests.get(f"{url}accounts/login/", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass
            time.sleep(0.3)
        else:
            pytest.fail(f"the demo did not answer within {START_TIMEOUT_S} s:\n{output()}")
        timings["up"] = time.monotonic() - started
        assert url == f"http://127.0.0.1:{port}/"
        log_text = output()
        for login in ("admin", "researcher", "annotator1", "annotator2", DEMO_PASSWORD):
            assert login in log_text, f"demo_seed did not print {login!r}:\n{log_text}"

        # 2. Log in as annotator1 through the login form.
        http = requests.Session()
        page = http.get(f"{url}accounts/login/", timeout=10)
        page = http.post(
            f"{url}accounts/login/", timeout=10,
            data={"username": "annotator1", "password": DEMO_PASSWORD, "next": "",
                  "csrfmiddlewaretoken": _csrf(page.text)},
        )
        assert page.status_code == 200 and page.url == f"{url}annotate/", page.url

        # 3. Open the hh-demo campaign and submit one judgment the way a plain form would.
        match = re.search(r'<a href="/annotate/(\d+)/">HH demo', page.text)
        assert match, f"hh-demo campaign not listed:\n{page.text}"
        campaign_id = int(match.group(1))
        page = http.get(f"{url}annotate/{campaign_id}/", timeout=10)
        assert page.status_code == 200
        # GET claims nothing: the Start form's POST claims the item, then redirects to the page.
        page = http.post(f"{url}annotate/{campaign_id}/start/", timeout=10,
                         data={"csrfmiddlewaretoken": _csrf(page.text)})
        assert page.status_code == 200
        token = _form_token(page.text)
        answer = http.post(
            f"{url}annotate/{campaign_id}/submit/", timeout=10, allow_redirects=False,
            data={"token": token, "idempotency_key": token, "choice": "left", "strength": "2",
                  "csrfmiddlewaretoken": _csrf(page.text)},
        )
        assert answer.status_code == 302, answer.text
        assert answer.headers["Location"] == f"/annotate/{campaign_id}/"
        page = http.get(f"{url}annotate/{campaign_id}/", timeout=10)
        assert page.status_code == 200
        assert "1 done" in page.text
        assert _form_token(page.text) != token

        db = sqlite3.connect(f"file:{data_dir / 'gaplab.sqlite3'}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT j.choice, j.strength, a.token, a.a_on_left, u.username"
                " FROM annotation_judgment j"
                " JOIN annotation_assignment a ON a.id = j.assignment_id"
                " JOIN auth_user u ON u.id = j.annotator_id"
                " WHERE u.username NOT LIKE 'sim-%'"
            ).fetchall()
            # The arithmetic demo: a simulated crowd rated it and the drifting rater was caught.
            simulated = db.execute(
                "SELECT COUNT(*) FROM annotation_judgment j JOIN auth_user u"
                " ON u.id = j.annotator_id WHERE u.username LIKE 'sim-%'"
            ).fetchone()[0]
            alerts = db.execute(
                "SELECT COUNT(*) FROM annotation_driftalert d JOIN auth_user u"
                " ON u.id = d.annotator_id WHERE u.username LIKE 'sim-drifting-%'"
            ).fetchone()[0]
            qualities = db.execute("SELECT COUNT(*) FROM annotation_annotatorquality").fetchone()[0]
        finally:
            db.close()
        assert simulated >= 1000 and alerts >= 1 and qualities >= 5
        assert len(rows) == 1, rows
        choice, strength, stored_token, a_on_left, username = rows[0]
        assert uuid.UUID(stored_token) == uuid.UUID(token)
        assert username == "annotator1"
        assert choice == ("A" if a_on_left else "B")  # "left" in canonical order
        assert strength == 2

        # 4. Both workers started (default with beat, gpu for training), and all processes
        # live in make's process group.
        def both_ready() -> bool:
            return all(re.search(rf"{node}@\S+ ready", output()) for node in ("default", "gpu"))

        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while not both_ready() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert both_ready(), f"a worker never got ready:\n{output()}"
        members = _group_members(pgid)
        web = [pid for pid, cmd in members.items() if "runserver" in cmd]
        workers = [pid for pid, cmd in members.items() if "celery" in cmd and "worker" in cmd]
        assert web and len(workers) >= 2, f"web or a worker missing from the group: {members}"

        # 5. Demo training: pi0 was trained by SFT during seeding, and the gpu worker finishes
        # the queued reward model (the DPO sweep after it may still be running).
        deadline = time.monotonic() + TRAINING_TIMEOUT_S
        while time.monotonic() < deadline:
            statuses = dict(_training_statuses(data_dir))
            if statuses.get("reward_model") in ("succeeded", "failed"):
                break
            time.sleep(1)
        assert statuses.get("sft") == "succeeded", statuses
        assert statuses.get("reward_model") == "succeeded", f"{statuses}\n{output()}"

        # 6. The noise-vs-gap experiment finished during seeding: four noise arms, each with a
        # gap slope per pressure method (what the researchers' dashboard plots first).
        db = sqlite3.connect(f"file:{data_dir / 'gaplab.sqlite3'}?mode=ro", uri=True)
        try:
            status, headline = db.execute(
                "SELECT status, headline FROM evaluation_experiment").fetchone()
        finally:
            db.close()
        arms = json.loads(headline)["arms"]
        assert status == "succeeded" and len(arms) == 4, (status, headline)
        assert all(a[m]["gap_slope"]["value"] is not None
                   for a in arms for m in ("tilting", "best_of_n")), arms

        # 7. Ctrl-C: SIGINT to the whole group stops everything.
        stop_sent = time.monotonic()
        os.killpg(pgid, signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make demo still running {STOP_TIMEOUT_S} s after SIGINT: "
                        f"{_group_members(pgid)}\n{output()}")
        left = _group_members(pgid)
        while left and time.monotonic() - stop_sent < STOP_TIMEOUT_S:
            time.sleep(0.2)
            left = _group_members(pgid)
        timings["stop"] = time.monotonic() - stop_sent
        assert not left, f"processes left after SIGINT: {left}\n{output()}"
        assert not _port_open(port), "the web server still listens after SIGINT"
        assert "Stopped." in output()
        print(f"make demo: up in {timings['up']:.1f} s, stopped in {timings['stop']:.1f} s")
    finally:
        if proc.poll() is None or _group_members(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
