"""OpenAPI schema generation: the schema says what the API answers, errors included.

``GaplabAutoSchema`` (the ``DEFAULT_SCHEMA_CLASS``) adds to what drf-spectacular infers:

- nested ``Input``/``Output`` serializers are named after their API view;
- every operation documents the errors it can answer, with one shared body (``Error``):
  400 where the operation takes input (a body or query parameters), 401 where it needs a
  login, 403 where a role or CSRF can refuse it, 404 where the path names an object, 429
  where a throttle applies. Errors a view raises from its domain (409, 410, ...) are declared
  on the view with ``error_responses(...)``, because no introspection can find them;
- request strings that reject blanks (DRF ``CharField(allow_blank=False)``) carry
  ``minLength: 1`` (and a non-blank ``pattern`` where DRF trims whitespace first);
- uploaded files are ``format: binary``;
- integer path parameters carry ``minimum: 0``: Django's ``<int:...>`` converter matches
  digits only, so "-1" never reaches the view.

schemathesis (tests/test_schemathesis.py) holds the API to this schema.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

ERROR_DESCRIPTIONS = {
    400: "The input is invalid; nothing changed. `field` (or the keys of a field-error body) "
         "names what to fix.",
    401: "No valid credentials: send `Authorization: Token <key>` or log in.",
    403: "Logged in, but this role (or a missing CSRF token, or the object's state) forbids it.",
    404: "No such object for this caller.",
    409: "The request conflicts with the current state (already answered, key reused, "
         "campaign closed); retrying it unchanged will not help.",
    410: "The object was valid once and is no longer (expired, skipped, reclaimed).",
    429: "Too many requests; `Retry-After` says how many seconds to wait.",
}


class ErrorSerializer(serializers.Serializer):
    """The body of every error the API answers, apart from per-field validation errors."""

    detail = serializers.CharField(help_text="What went wrong, for a person to read.")
    field = serializers.CharField(required=False,
                                  help_text="The input field at fault, when there is one.")
    errors = serializers.ListField(
        child=serializers.JSONField(), required=False,
        help_text="Several problems at once (an import's errors, each naming line and field).",
    )


# DRF's ValidationError body: {"<field>": ["message", ...]} or, for nested and list fields,
# an object/array of the same. A bare string value never occurs, which keeps it apart from
# ``Error`` (whose ``detail`` is a string) so that ``oneOf`` picks exactly one.
_FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "description": "Errors by input field: each key names a field (or `non_field_errors`).",
    "additionalProperties": {"anyOf": [{"type": "array", "items": {}}, {"type": "object"}]},
    "minProperties": 1,
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Declare domain errors a view raises, for ``@extend_schema(responses={...})``.

    ``responses={201: Out, **error_responses(409, 410)}``; the codes the schema class infers
    (400/401/403/404/429) need no declaration.
    """
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS.get(code, ""))
            for code in codes}


class GaplabAutoSchema(AutoSchema):
    def get_serializer_name(self, serializer, direction) -> str:
        # `JudgmentSubmitApi.InputSerializer` -> `JudgmentSubmitInput`: the Styleguide nests
        # serializers in each APIView, so bare class names would collide across views.
        qualname = type(serializer).__qualname__
        if "." in qualname:
            outer, inner = qualname.rsplit(".", 1)
            return outer.removesuffix("Api") + inner.removesuffix("Serializer")
        return super().get_serializer_name(serializer, direction)

    def _get_serializer_field_meta(self, field, direction) -> dict[str, Any]:
        meta = super()._get_serializer_field_meta(field, direction)
        # DRF answers 400 for "" on a CharField unless allow_blank, and it trims first, so "  "
        # is blank too. Only requests are checked: an Output may well hold "". (Input and
        # Output serializers are separate classes here, so a component has one direction.)
        if (direction == "request" and isinstance(field, serializers.CharField)
                and not field.allow_blank and not field.read_only):
            meta.setdefault("minLength", 1)
            if field.trim_whitespace and type(field) is serializers.CharField:
                meta.setdefault("pattern", r"\S")
        return meta

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction == "request" and isinstance(field, serializers.FileField):
            # Uploaded as a multipart file part; spectacular would say "uri" unless it splits
            # every component into request and response twins (COMPONENT_SPLIT_REQUEST).
            schema.pop("nullable", None)
            schema.update(type="string", format="binary")
        return schema

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["schema"].get("type") == "integer":
                parameter["schema"].setdefault("minimum", 0)
        responses = operation["responses"]
        for code in self._inferred_error_codes(operation):
            responses.setdefault(str(code), self._error_response(code))
        if "400" in responses:
            # A 400 declared with error_responses(400) still may carry DRF's field errors.
            responses["400"]["content"] = self._error_response(400)["content"]
        if "429" in responses:
            responses["429"].setdefault("headers", {})["Retry-After"] = {
                "schema": {"type": "integer", "minimum": 0},
                "description": "Seconds until a request of this kind is accepted again.",
            }
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _inferred_error_codes(self, operation: dict[str, Any]) -> list[int]:
        codes = []
        takes_input = "requestBody" in operation or any(
            p["in"] in ("query", "header", "cookie") for p in operation.get("parameters", []))
        if takes_input:
            codes.append(400)
        permissions = self.view.get_permissions()
        open_to_all = all(isinstance(p, AllowAny) for p in permissions)
        if not open_to_all:
            codes.append(401)
        role_checked = any(not isinstance(p, (AllowAny, IsAuthenticated)) for p in permissions)
        csrf_checked = self.method not in _SAFE_METHODS and any(
            isinstance(a, SessionAuthentication) for a in self.view.get_authenticators())
        if role_checked or csrf_checked:
            codes.append(403)
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            codes.append(404)
        if self.view.get_throttles():
            codes.append(429)
        return codes

    def _error_response(self, code: int) -> dict[str, Any]:
        error = self.resolve_serializer(ErrorSerializer(), "response").ref
        if code == 400:
            field_errors = ResolvedComponent(
                name="FieldErrors", type=ResolvedComponent.SCHEMA,
                schema=_FIELD_ERRORS_SCHEMA, object="FieldErrors",
            )
            self.registry.register_on_missing(field_errors)
            schema = {"oneOf": [error, field_errors.ref]}
        else:
            schema = error
        return {"description": ERROR_DESCRIPTIONS[code],
                "content": {"application/json": {"schema": schema}}}
