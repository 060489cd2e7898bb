"""Project-wide error handlers (``handler404`` in ``config.urls``)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer a URL that matches no route: JSON under /api/, the HTML page elsewhere.

    An id that the URL's converter rejects (``/api/exports/-1/``) never reaches DRF, so without
    this an API client would get Django's HTML page where the schema promises a JSON error.
    """
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
