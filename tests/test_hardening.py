"""Web hardening: login lockout, API throttles, the GAPLAB_HTTPS switch, CSP and
Permissions-Policy headers, and templates that need no inline script or style.

Settings read at start-up (the HTTPS switch, throttle rates, the cache) are checked in a fresh
``python`` process with its own environment, the way gunicorn would start.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.factories import CampaignFactory

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "pw-12345678"  # the cast's password


def _base_env() -> dict[str, str]:
    # The browser tests' conftest allows sync ORM calls under Playwright's event loop; a
    # deployment never does (check --deploy says so), so the subprocesses drop it.
    return {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with Django set up, under ``env`` on top of ours."""
    full_env = {**_base_env(), "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120,
    )


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**_base_env(), **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


# --- Login throttling -----------------------------------------------------------------------

def _login(client: Client, path: str, username: str, password: str, ip: str = "10.1.1.1"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_failed_logins_lock_out_that_username_from_that_address(cast, path):
    """The AXES_FAILURE_LIMIT-th wrong password locks out; then even the right one is refused
    with a 429 page and Retry-After. The same user from another address, and another user from
    the same address, still log in."""
    admin = cast["admin"]  # staff, so the admin login accepts it too
    limit = settings.AXES_FAILURE_LIMIT
    client = Client()
    for _ in range(limit - 1):
        resp = _login(client, path, admin.username, "wrong-password")
        assert resp.status_code == 200  # the form again, with its error
    assert _login(client, path, admin.username, "wrong-password").status_code == 429
    resp = _login(client, path, admin.username, PASSWORD)
    assert resp.status_code == 429
    html = resp.content.decode()
    assert "Too many failed logins" in html and 'id="locked-out"' in html
    assert int(resp["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())
    assert "_auth_user_id" not in client.session

    other_address = Client()
    resp = _login(other_address, path, admin.username, PASSWORD, ip="10.2.2.2")
    assert resp.status_code == 302 and "_auth_user_id" in other_address.session
    other_user = Client()
    resp = _login(other_user, path, cast["researcher"].username, PASSWORD)
    assert resp.status_code == 302 and "_auth_user_id" in other_user.session


@pytest.mark.django_db
def test_lockout_ends_after_the_cool_off(cast):
    user = cast["annotator"]
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "/accounts/login/", user.username, "wrong-password")
    assert _login(client, "/accounts/login/", user.username, PASSWORD).status_code == 429
    # Age the recorded attempts past the cool-off, as the clock would.
    attempt = AccessAttempt.objects.get(username=user.username)
    attempt.attempt_time -= settings.AXES_COOLOFF_TIME + timedelta(seconds=1)
    attempt.save(update_fields=["attempt_time"])
    resp = _login(client, "/accounts/login/", user.username, PASSWORD)
    assert resp.status_code == 302 and "_auth_user_id" in client.session


@pytest.mark.django_db
def test_a_success_before_the_limit_resets_the_count(cast):
    user = cast["annotator"]
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "/accounts/login/", user.username, "wrong-password")
    assert _login(client, "/accounts/login/", user.username, PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "/accounts/login/", user.username, "wrong-password")
    assert _login(client, "/accounts/login/", user.username, PASSWORD).status_code == 302


# --- API throttles --------------------------------------------------------------------------

def _rate_count(rate: str) -> int:
    return int(rate.split("/")[0])


@pytest.mark.django_db
def test_import_uploads_are_throttled_per_user_with_retry_after(client_for):
    """The import scope is stricter than the per-user rate; the request past it gets 429 with
    Retry-After and the API's JSON error body, and other users are not affected."""
    campaign = CampaignFactory()
    allowed = _rate_count(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["import"])
    assert allowed < _rate_count(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"])
    client = client_for("admin")
    path = f"/api/campaigns/{campaign.pk}/import/"
    for _ in range(allowed):
        assert client.post(path).status_code == 400  # no file: refused, but counted
    resp = client.post(path)
    assert resp.status_code == 429
    assert int(resp["Retry-After"]) > 0
    assert "throttled" in resp.json()["detail"].lower()
    assert client_for("researcher").post(path).status_code == 400


# One "worker": two API requests as the user whose token is in TEST_TOKEN.
WORKER_SCRIPT = """
import json, os
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client(HTTP_AUTHORIZATION="Token " + os.environ["TEST_TOKEN"])
out = []
for _ in range(2):
    resp = client.get("/api/campaigns/")
    out.append([resp.status_code, resp.get("Retry-After")])
print(json.dumps(out))
"""


@pytest.mark.django_db(transaction=True)
def test_user_rate_is_shared_by_worker_processes_through_redis(cast):
    """Two processes (two gunicorn workers) count one user's requests in the one Redis cache:
    with GAPLAB_THROTTLE_USER=3/minute, the fourth request overall is refused."""
    token = Token.objects.create(user=cast["annotator"])
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs the PostgreSQL test database shared with a subprocess")
    database_url = (f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
                    f"/{connection.settings_dict['NAME']}")
    env = {
        "DATABASE_URL": database_url,
        "GAPLAB_CACHE_URL": os.environ.get("GAPLAB_TEST_CACHE_URL", "redis://127.0.0.1:6379/3"),
        "GAPLAB_CACHE_KEY_PREFIX": f"test-{secrets.token_hex(6)}",
        "GAPLAB_THROTTLE_USER": "3/minute",
        "TEST_TOKEN": token.key,
    }
    statuses = []
    for _ in range(2):
        done = _run_python(WORKER_SCRIPT, **env)
        assert done.returncode == 0, done.stderr[-3000:]
        statuses += json.loads(done.stdout.strip().splitlines()[-1])
    assert [s for s, _ in statuses] == [200, 200, 200, 429]
    assert int(statuses[-1][1]) > 0


def test_throttle_rates_and_cache_come_from_the_environment():
    code = ("from django.conf import settings; import json; print(json.dumps(["
            "settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'], settings.CACHES['default']]))")
    done = _run_python(code, GAPLAB_THROTTLE_USER="50/minute", GAPLAB_THROTTLE_ANON="off",
                       GAPLAB_THROTTLE_IMPORT="2/hour", GAPLAB_CACHE_URL="redis://cache:6379/1")
    assert done.returncode == 0, done.stderr[-3000:]
    rates, cache = json.loads(done.stdout.strip().splitlines()[-1])
    assert rates["user"] == "50/minute" and rates["anon"] is None and rates["import"] == "2/hour"
    assert cache["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert cache["LOCATION"] == "redis://cache:6379/1"
    done = _run_python(code.replace("CACHES['default']", "CACHES['default']['BACKEND']"),
                       GAPLAB_CACHE_URL="")
    assert json.loads(done.stdout.strip().splitlines()[-1])[1].endswith("LocMemCache")


# --- The HTTPS switch -----------------------------------------------------------------------

DEPLOY_ENV = {"DEBUG": "0", "ALLOWED_HOSTS": "gaplab.example.org"}


def test_check_deploy_is_clean_with_gaplab_https():
    """DEBUG=0 GAPLAB_HTTPS=1 and a real secret key: `check --deploy` prints no warning at all."""
    done = _manage("check", "--deploy", "--fail-level", "WARNING", **DEPLOY_ENV,
                   GAPLAB_HTTPS="1", SECRET_KEY=secrets.token_urlsafe(60))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
    assert "WARNING" not in done.stdout + done.stderr


def test_without_the_switch_check_deploy_names_what_it_would_set():
    done = _manage("check", "--deploy", "--fail-level", "WARNING", **DEPLOY_ENV,
                   GAPLAB_HTTPS="0", SECRET_KEY=secrets.token_urlsafe(60))
    assert done.returncode != 0
    for code in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert code in done.stdout + done.stderr, code


def test_https_switch_sets_hsts_cookies_redirect_and_opt_in_proxy_header():
    code = ("from django.conf import settings as s; import json; print(json.dumps(["
            "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
            "s.SECURE_HSTS_PRELOAD, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SECURE_PROXY_SSL_HEADER]))")
    base = {**DEPLOY_ENV, "SECRET_KEY": secrets.token_urlsafe(60), "GAPLAB_HTTPS": "1"}
    done = _run_python(code, **base, GAPLAB_HSTS_SECONDS="600")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [True, 600, True, True, True, True, None]
    done = _run_python(code, **base, GAPLAB_PROXY_SSL_HEADER="1")
    values = json.loads(done.stdout.splitlines()[-1])
    assert values[1] == 365 * 24 * 3600
    assert values[-1] == ["HTTP_X_FORWARDED_PROTO", "https"]


@pytest.mark.django_db
def test_https_switch_redirects_plain_http_and_sends_hsts(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 600
    resp = Client().get("/accounts/login/")
    assert resp.status_code == 301 and resp["Location"].startswith("https://")
    resp = Client().get("/accounts/login/", secure=True)
    assert resp.status_code == 200 and resp["Strict-Transport-Security"].startswith("max-age=600")


# --- CSP and Permissions-Policy -------------------------------------------------------------

def _directives(header: str) -> dict[str, list[str]]:
    parts = (p.strip().split() for p in header.split(";") if p.strip())
    return {p[0]: p[1:] for p in parts}


@pytest.mark.django_db
@pytest.mark.parametrize("role,path", [
    (None, "/accounts/login/"), ("annotator", "/annotate/"), ("admin", "/quality/"),
    ("admin", "/admin/"), (None, "/api/schema/"), (None, "/api/docs/"),
    ("annotator", "/api/campaigns/"), (None, "/no-such-page/"),
])
def test_every_response_carries_csp_and_permissions_policy(client_for, role, path):
    resp = client_for(role).get(path)
    assert resp.status_code < 500
    csp = _directives(resp["Content-Security-Policy"])
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["default-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'self'"]
    assert not [v for vs in csp.values() for v in vs if "unsafe" in v or v.startswith("http")]
    policy = resp["Permissions-Policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"):
        assert feature in policy, (feature, policy)


def test_swagger_init_script_is_served_from_a_url():
    """/api/docs/ references its init script by URL; ?script serves it as JavaScript."""
    client = Client()
    html = client.get("/api/docs/").content.decode()
    assert re.search(r'<script src="[^"]*/api/docs/\?script=?"', html), html[:2000]
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not inline, inline
    script = client.get("/api/docs/?script")
    assert script.status_code == 200 and "javascript" in script["Content-Type"]
    assert "SwaggerUIBundle" in script.content.decode()


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=|\son[a-z]+=", re.I)


def test_templates_use_no_inline_script_style_or_handlers():
    """Under script-src/style-src 'self' these would be refused: every script and style is a
    file under static/ (data for charts is JSON in json_script, which CSP does not run)."""
    found = []
    for template in (ROOT / "templates").rglob("*.html"):
        if template.relative_to(ROOT) == Path("templates/evaluation/report.html"):
            continue  # gap_report's file, never served: self-contained, so its CSS is inline
        text = template.read_text()
        for pattern in (INLINE_SCRIPT, INLINE_STYLE):
            found += [f"{template.relative_to(ROOT)}: {m.group(0)}"
                      for m in pattern.finditer(text)]
    assert not found, found
