from __future__ import annotations


class ApplicationError(Exception):
    """A rule of the domain was broken; views and the API turn it into a 400 / form error."""

    def __init__(self, message: str, *, extra: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
