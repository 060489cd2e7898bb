"""Load shedding (annotation/middleware_overload.py): a full process answers 503 + Retry-After.

Requests go over real HTTP to pytest-django's live server (a threaded WSGI server: one
middleware chain, a thread per request, as gunicorn's gthread worker), with the in-flight bound
set to 1. No assertion depends on timing: a request that holds the one slot waits on an event,
and the wait for a slot is short only so that the test is quick.
"""

from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlsplit

import pytest
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path

from annotation.middleware_overload import is_saturation_error

ENTERED = threading.Event()
RELEASE = threading.Event()
LOCK_KEY = 641_500_001  # a pg_advisory_lock key no other code uses


def _hold(request: HttpRequest) -> JsonResponse:
    ENTERED.set()
    RELEASE.wait(30)  # bounded: a failing test must not hang the server thread
    return JsonResponse({"held": True})


def _ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def _locked(request: HttpRequest) -> JsonResponse:
    # Waits for an advisory lock another session holds: lock_timeout raises a real
    # OperationalError (SQLSTATE 55P03), the database's way of saying "saturated, try later".
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '50ms'")
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
    return JsonResponse({"ok": True})


urlpatterns = [
    path("api/hold/", _hold),
    path("api/ping/", _ping),
    path("api/locked/", _locked),
    path("page/ping/", _ping),
]


def _get(base_url: str, path_: str) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path_)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture
def one_slot(settings):
    settings.GAPLAB_MAX_IN_FLIGHT = 1
    settings.GAPLAB_IN_FLIGHT_WAIT_MS = 50
    settings.GAPLAB_OVERLOAD_RETRY_AFTER = 3
    ENTERED.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


@pytest.mark.urls("tests.test_overload")
def test_a_request_without_a_slot_gets_503_with_retry_after(live_server, one_slot):
    held: list[int] = []
    holder = threading.Thread(target=lambda: held.append(_get(live_server.url, "/api/hold/")[0]))
    holder.start()
    assert ENTERED.wait(10), "the holding request never reached its view"

    status, headers, body = _get(live_server.url, "/api/ping/")
    assert status == 503
    assert headers["retry-after"] == "3"
    assert headers["content-type"] == "application/json"
    assert "busy" in json.loads(body)["detail"]

    status, headers, body = _get(live_server.url, "/page/ping/")
    assert status == 503  # pages too, as plain text
    assert headers["retry-after"] == "3"
    assert headers["content-type"].startswith("text/plain")

    RELEASE.set()
    holder.join(30)
    assert held == [200]  # the request that had the slot finished normally
    status, _, body = _get(live_server.url, "/api/ping/")
    assert (status, json.loads(body)) == (200, {"ok": True})  # the slot was given back


@pytest.mark.urls("tests.test_overload")
def test_concurrent_requests_beyond_the_bound_are_shed_not_queued(live_server, one_slot):
    holder = threading.Thread(target=_get, args=(live_server.url, "/api/hold/"))
    holder.start()
    assert ENTERED.wait(10)
    answers: list[tuple[int, str | None]] = []

    def hit() -> None:
        status, headers, _ = _get(live_server.url, "/api/ping/")
        answers.append((status, headers.get("retry-after")))

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    RELEASE.set()
    holder.join(30)
    assert answers == [(503, "3")] * 8


@pytest.mark.urls("tests.test_overload")
def test_a_saturated_database_answers_503_not_500(live_server, settings):
    if connection.vendor != "postgresql":
        pytest.skip("lock_timeout and advisory locks are PostgreSQL's")
    settings.GAPLAB_MAX_IN_FLIGHT = 4
    settings.GAPLAB_OVERLOAD_RETRY_AFTER = 2
    with connection.cursor() as cursor:  # this session holds the lock the view waits for
        cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    try:
        status, headers, body = _get(live_server.url, "/api/locked/")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    assert (status, headers["retry-after"]) == (503, "2")
    assert "busy" in json.loads(body)["detail"]
    status, _, _ = _get(live_server.url, "/api/locked/")
    assert status == 200  # the lock is free: the same request succeeds


@pytest.mark.django_db
def test_pool_timeouts_count_as_saturation_and_bugs_do_not():
    if connection.vendor != "postgresql":
        pytest.skip("psycopg's pool is PostgreSQL's")
    from psycopg_pool import ConnectionPool, PoolTimeout

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    pool = ConnectionPool(kwargs=params, min_size=1, max_size=1, timeout=0.1, open=True)
    try:
        with pool.connection(), pytest.raises(PoolTimeout) as caught:
            pool.getconn()  # the one connection is taken: a real pool timeout
    finally:
        pool.close()
    assert is_saturation_error(caught.value)
    assert not is_saturation_error(IntegrityError("duplicate key value"))
    assert not is_saturation_error(ValueError("bad input"))
