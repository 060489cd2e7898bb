from __future__ import annotations

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotation.errors import ApplicationError
from annotation.importers import ImportFileError


def exception_handler(exc, context):
    """Turn domain errors into 400s with a readable ``detail``; defer the rest to DRF."""
    if isinstance(exc, ImportFileError):
        return Response({"detail": str(exc), "errors": exc.errors},
                        status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ApplicationError):
        return Response({"detail": exc.message, **exc.extra}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
