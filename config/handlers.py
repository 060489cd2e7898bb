"""Project-wide answers outside any app: the error pages (``handler400/403/404/500`` in
``config.urls``), the log filter that keeps an expected 403 to one line, and ``/favicon.ico``.

Pages get the site's templates (``templates/4xx.html``, ``500.html``); ``/api/`` gets JSON, as
the API's own errors (``{"detail": ...}``), for the errors that reach Django's handlers rather
than DRF's (a URL no route matches, a converter that rejects an id, a failure outside a view).
"""

from __future__ import annotations

import logging

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    JsonResponse,
)
from django.template import loader
from django.templatetags.static import static
from django.views import defaults


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 403 page: what is not allowed (the roles, when the view named them) and links back
    (home; log in as someone else). ``exception.roles``: set by ``role_required``."""
    if _is_api(request):
        return JsonResponse(
            {"detail": "You do not have permission to perform this action."}, status=403)
    roles = getattr(exception, "roles", ())
    return HttpResponse(
        loader.render_to_string(
            "403.html", {"roles": roles, "request_path": request.path}, request),
        status=403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer a URL that matches no route: JSON under /api/, the HTML page elsewhere.

    An id that the URL's converter rejects (``/api/exports/-1/``) never reaches DRF, so without
    this an API client would get Django's HTML page where the schema promises a JSON error.
    """
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """500: JSON under /api/; elsewhere ``500.html``, a static page (no context, no database:
    whatever failed may fail again while rendering)."""
    if _is_api(request):
        return JsonResponse({"detail": "Server error."}, status=500)
    return defaults.server_error(request)


def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``, which browsers ask for on pages without a ``<link rel=icon>`` (the
    admin, the API docs): a permanent redirect to the static SVG icon."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


class ForbiddenWithoutTraceback(logging.Filter):
    """On ``django.request``: a 403 is an expected answer, logged as one WARNING line naming
    the path, the user and the status, without the traceback that Django attaches to every
    PermissionDenied. Covers every source of 403 at once (``role_required``, the admin's own
    checks, the admin actions); 500s keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The mark: logging configured twice (a test server, a worker) attaches the filter
        # twice, and the line must still say its suffix once.
        if getattr(record, "status_code", None) != 403 or getattr(record, "forbidden_logged",
                                                                  False):
            return True
        record.forbidden_logged = True
        request = getattr(record, "request", None)
        user = getattr(request, "user", None)
        who = (user.get_username() if user is not None and user.is_authenticated
               else "anonymous")
        record.msg = f"{record.getMessage()} (user {who}, status 403)"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True
