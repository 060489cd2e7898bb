"""Load shedding: bound the requests in flight per process; answer 503 + Retry-After when full.

Without a bound, a server past its capacity queues requests (in gunicorn's thread pool, for a
database connection, for a row lock) until clients time out: every client then waits the full
timeout, retries into the same queue, and the work done for the requests they gave up on is
wasted. With a bound, at most ``GAPLAB_MAX_IN_FLIGHT`` requests run in each process; a request
that cannot get a slot within ``GAPLAB_IN_FLIGHT_WAIT_MS`` is answered at once with 503 and
``Retry-After: GAPLAB_OVERLOAD_RETRY_AFTER``, having touched nothing (this middleware runs first,
before sessions, authentication and any query). A careful client waits that long and retries;
a submit retried with the same idempotency key still records one judgment.

The database saturating is the same condition seen from further in: a connection-pool timeout
(``GAPLAB_DB_POOL_SIZE``), too many connections, a lock or statement timeout. Those errors are
answered with the same 503 instead of a 500, whether a view raised them (``process_exception``)
or a middleware further in (through ``got_request_exception``, which Django sends while it
turns the exception into a 500).

Only a bound that is lower than the threads that can carry requests sheds load: run gunicorn
with more threads per worker than ``GAPLAB_MAX_IN_FLIGHT`` (benchmarks/README.md, the load
benchmark, has the numbers), or requests queue inside gunicorn, where no bound can see them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from django.conf import settings
from django.core.signals import got_request_exception
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

# SQLSTATEs that mean "the database is saturated, try again later", not "the request is bad":
# class 53 (insufficient resources: too many connections, out of memory or disk), 57P03 (cannot
# connect now: starting up or shutting down), 55P03 (lock_timeout), 57014 (statement_timeout).
_SATURATION_SQLSTATE_PREFIXES = ("53",)
_SATURATION_SQLSTATES = {"57P03", "55P03", "57014"}
_MARK = "_gaplab_overloaded"

_slots_lock = threading.Lock()
_slots_by_limit: dict[int, threading.BoundedSemaphore] = {}


def _slots(limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore for a bound (one per value, so a changed setting applies)."""
    slots = _slots_by_limit.get(limit)
    if slots is None:
        with _slots_lock:
            slots = _slots_by_limit.setdefault(limit, threading.BoundedSemaphore(limit))
    return slots


def is_saturation_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) says the database is saturated or unreachable now.

    A pool timeout, a connection that could not be made, or one of the SQLSTATEs above. Other
    database errors (a constraint, bad SQL) stay 500s: they are bugs, and hiding them as "busy"
    would make clients retry them forever.
    """
    seen = 0
    while exc is not None and seen < 5:
        seen += 1
        if type(exc).__name__ == "PoolTimeout":  # psycopg_pool, optional at import time
            return True
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate and (sqlstate.startswith(_SATURATION_SQLSTATE_PREFIXES)
                         or sqlstate in _SATURATION_SQLSTATES):
            return True
        if isinstance(exc, OperationalError) and exc.__cause__ is None and sqlstate is None:
            # Django's own OperationalError with no driver error under it: e.g. a connection
            # that failed before PostgreSQL could answer with a SQLSTATE.
            return "connection" in str(exc).lower()
        if type(exc).__module__.startswith("psycopg") and sqlstate is None \
                and "connection" in str(exc).lower():
            return True  # the driver's "connection failed / is lost" has no SQLSTATE
        exc = exc.__cause__ or exc.__context__
    return False


def overload_response(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After: JSON ``{"detail": ...}`` under /api/, plain text elsewhere."""
    retry_after = max(1, int(settings.GAPLAB_OVERLOAD_RETRY_AFTER))
    message = f"The server is busy; retry in {retry_after} s."
    if request.path_info.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": message}, status=503)
    else:
        response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


def _mark_saturation(sender: object, request: HttpRequest | None = None, **kwargs: object) -> None:
    # Sent from inside Django's `except` block, so the exception is the one being handled.
    if request is not None and is_saturation_error(sys.exc_info()[1]):
        setattr(request, _MARK, True)


got_request_exception.connect(_mark_saturation, dispatch_uid="gaplab-overload-mark")


class OverloadGuardMiddleware:
    """Run at most ``GAPLAB_MAX_IN_FLIGHT`` requests at once per process (0: no bound); answer
    the rest, and database saturation errors, with 503 and Retry-After.

    Settings are read per request, so tests (and a reload) can change them. Place it first in
    MIDDLEWARE: a shed request then costs no session, authentication or query.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = int(settings.GAPLAB_MAX_IN_FLIGHT)
        if limit <= 0:
            return self._respond(request)
        slots = _slots(limit)
        if not slots.acquire(timeout=max(0, settings.GAPLAB_IN_FLIGHT_WAIT_MS) / 1000):
            return overload_response(request)
        try:
            return self._respond(request)
        finally:
            slots.release()

    def _respond(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 500 and getattr(request, _MARK, False):
            return overload_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_saturation_error(exception):
            return overload_response(request)
        return None
