"""The OpenAPI schema builds without warnings and documents every API operation."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command


@pytest.mark.django_db
def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    paths = schema["paths"]
    assert {"/api/campaigns/{campaign_id}/next/", "/api/judgments/",
            "/api/campaigns/{campaign_id}/import/", "/api/campaigns/{campaign_id}/exports/",
            "/api/campaigns/{campaign_id}/judgments/"} <= set(paths)
    assert "tokenAuth" in schema["components"]["securitySchemes"]
