"""OpenAPI schema generation: name nested Input/Output serializers after their API view."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema


class GaplabAutoSchema(AutoSchema):
    def get_serializer_name(self, serializer, direction) -> str:
        # `JudgmentSubmitApi.InputSerializer` -> `JudgmentSubmitInput`: the Styleguide nests
        # serializers in each APIView, so bare class names would collide across views.
        qualname = type(serializer).__qualname__
        if "." in qualname:
            outer, inner = qualname.rsplit(".", 1)
            return outer.removesuffix("Api") + inner.removesuffix("Serializer")
        return super().get_serializer_name(serializer, direction)
