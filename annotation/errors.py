"""Domain errors. Each carries the HTTP status the API and pages answer it with.

``ApplicationError`` is a broken rule of the input (400). Its subclasses name a state conflict,
so a client can tell "fix your request" from "the world changed under you".
"""

from __future__ import annotations


class ApplicationError(Exception):
    """A rule of the domain was broken; views and the API turn it into a 4xx / form error."""

    status_code = 400

    def __init__(self, message: str, *, extra: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class ForbiddenError(ApplicationError):
    """The caller may not do this now (a paused annotator, someone else's item): 403."""

    status_code = 403


class NotFoundError(ApplicationError):
    """The thing named does not exist for this caller: 404."""

    status_code = 404


class ConflictError(ApplicationError):
    """The request conflicts with the current state (already answered, key reused, campaign
    closed): 409. Retrying the same request will not help."""

    status_code = 409


class GoneError(ApplicationError):
    """The item was valid once and is no longer (expired, skipped, reclaimed): 410."""

    status_code = 410


class RateLimitedError(ApplicationError):
    """Too many requests of this kind; ``retry_after`` seconds until one is accepted: 429."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int, extra: dict | None = None) -> None:
        super().__init__(message, extra=extra)
        self.retry_after = retry_after
