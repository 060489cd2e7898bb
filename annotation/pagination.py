"""API pagination: limit/offset with bounds, so a bad page request is a 400, never a 500.

DRF's ``LimitOffsetPagination`` silently falls back to the default on a malformed ``limit`` and
passes any ``offset`` to the database: an offset beyond PostgreSQL's bigint made the judgment
list answer 500. Here both are parsed strictly, checked against documented bounds, and a bad
value is a ``ValidationError`` that names the parameter (``{"limit": ["..."]}``, 400). The
same bounds go into the OpenAPI parameters, so a client (and schemathesis) knows them.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

# OFFSET is a bigint in PostgreSQL; a much smaller cap keeps a typo from scanning a table.
MAX_OFFSET = 2**31 - 1
_INTEGER = re.compile(r"-?[0-9]{1,20}")


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """``?limit=&offset=`` with ``1 <= limit <= max_limit`` and ``0 <= offset <= max_offset``.

    A missing ``limit`` means ``default_limit``. A value that is not a plain decimal integer,
    or lies outside its bounds, raises ``ValidationError`` keyed by the parameter's name.
    """

    default_limit = 100
    max_limit = 500
    max_offset = MAX_OFFSET

    def get_limit(self, request: Request) -> int:
        return self._bounded_int(request, self.limit_query_param, default=self.default_limit,
                                 minimum=1, maximum=self.max_limit)

    def get_offset(self, request: Request) -> int:
        return self._bounded_int(request, self.offset_query_param, default=0,
                                 minimum=0, maximum=self.max_offset)

    def _bounded_int(self, request: Request, name: str, *, default: int, minimum: int,
                     maximum: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        # int() alone would also take " 7", "+7", "7_000" and non-ASCII digits ("٣"); the
        # documented type is a plain integer, so only that passes. 20 digits bound the parse.
        if _INTEGER.fullmatch(raw) is None or not minimum <= int(raw) <= maximum:
            raise ValidationError({name: [f"A whole number from {minimum} to {maximum}."]})
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit,
                                     "default": self.default_limit},
            self.offset_query_param: {"minimum": 0, "maximum": self.max_offset, "default": 0},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters
