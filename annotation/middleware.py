"""Request guards: refuse URLs that no view can use (``BadUrlGuardMiddleware``), and answer the
site's 404 page even with DEBUG on (``SiteNotFoundMiddleware``).

Refuse URLs that no view can use: NUL, lone surrogates, query bytes that are not UTF-8.

Such a value reaches the database as a lookup (a username in a quality URL, a filter in a query
string), where PostgreSQL refuses NUL in text and the driver cannot encode a lone surrogate:
a 500. Answering 400 here, naming the parameter, keeps every view from checking on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.handlers.exception import get_exception_response
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.urls import Resolver404, get_resolver, resolve

_UNUSABLE = re.compile("[\x00\ud800-\udfff]")


def _printable(text: str, limit: int = 60) -> str:
    """The name as a client can read it back: escaped, short, never raw input."""
    shown = text if text.isprintable() else ascii(text)[1:-1]
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _raw_bytes(text: str) -> bytes:
    # WSGI hands the query string over as latin-1 text of the raw bytes (PEP 3333).
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # a server that already decoded them
        return text.encode("utf-8", errors="surrogatepass")


def _query_problem(query_string: str) -> str | None:
    """Name the first query parameter whose name or value is not usable text."""
    for part in re.split(rb"[&;]", _raw_bytes(query_string)):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name_bytes = unquote_to_bytes(raw_name.replace(b"+", b" "))
        name = _decode(name_bytes)
        shown = _printable(name if name is not None else name_bytes.decode("latin-1"))
        if name is None or _UNUSABLE.search(name):
            return f"the name of query parameter '{shown}' is not valid text"
        value = _decode(unquote_to_bytes(raw_value.replace(b"+", b" ")))
        if value is None:
            return f"query parameter '{shown}' is not valid UTF-8"
        if _UNUSABLE.search(value):
            return f"query parameter '{shown}' holds a NUL character or a lone surrogate"
    return None


def _path_problem(request: HttpRequest) -> str | None:
    """Name the URL parameter (or the path) that holds a NUL or a lone surrogate.

    Bytes in the path that are not UTF-8 need no check here: Django re-percent-encodes them
    (``%FF`` stays the three characters ``%FF``), so a view only ever sees ASCII for them.
    """
    path = request.path_info
    if not _UNUSABLE.search(path):
        return None
    what = "holds a NUL character or a lone surrogate"
    try:
        match = resolve(path)
    except Resolver404:
        return f"the URL path {what}"
    for name, value in match.kwargs.items():
        if isinstance(value, str) and _UNUSABLE.search(value):
            return f"URL parameter '{name}' {what}"
    return f"the URL path {what}"


class BadUrlGuardMiddleware:
    """Answer 400, naming the parameter, for a URL path or query string that is not clean text.

    JSON for ``/api/`` paths (``{"detail": ...}``, as the API's other errors), plain text
    elsewhere. Request bodies are left to forms and serializers, which already refuse NUL.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        problem = _path_problem(request) or _query_problem(request.META.get("QUERY_STRING", ""))
        if problem is None:
            return self.get_response(request)
        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": problem}, status=400)
        return HttpResponseBadRequest(problem, content_type="text/plain; charset=utf-8")


class SiteNotFoundMiddleware:
    """With DEBUG on, answer a 404 with the site's page (``handler404``), not Django's.

    Django renders its technical 404 page, which lists every URL pattern and the settings,
    whenever DEBUG is on, and ``make demo`` runs with DEBUG on (the default: static files come
    straight from ``static/`` and no SECRET_KEY is needed). Turning DEBUG off for the demo
    would need both set up there, and would still leave ``runserver`` users with the debug
    page; this keeps one 404 page everywhere, JSON under ``/api/`` included. With DEBUG off
    Django already calls ``handler404``: then this does nothing.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # No resolver match: the URL matched no route (a view's own 404 goes through
        # process_exception, or is a response the view chose).
        if (settings.DEBUG and response.status_code == 404
                and getattr(request, "resolver_match", None) is None):
            return self._site_page(request, Resolver404({"path": request.path_info}))
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if settings.DEBUG and isinstance(exception, Http404):
            return self._site_page(request, exception)
        return None

    @staticmethod
    def _site_page(request: HttpRequest, exception: Exception) -> HttpResponse:
        # Django's own call of handler404 (with DEBUG off), which also turns a failing 404 page
        # into a 500 answer.
        return get_exception_response(
            request, get_resolver(getattr(request, "urlconf", None)), 404, exception)
