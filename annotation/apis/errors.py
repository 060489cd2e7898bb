from __future__ import annotations

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotation.errors import ApplicationError, RateLimitedError
from annotation.importers import ImportFileError


def exception_handler(exc, context):
    """Turn domain errors into 4xx with a readable ``detail``; defer the rest to DRF."""
    if isinstance(exc, ImportFileError):
        return Response({"detail": str(exc), "errors": exc.errors}, status=400)
    if isinstance(exc, ApplicationError):
        response = Response({"detail": exc.message, **exc.extra}, status=exc.status_code)
        if isinstance(exc, RateLimitedError):
            response["Retry-After"] = str(exc.retry_after)
        return response
    return drf_exception_handler(exc, context)
