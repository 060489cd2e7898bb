"""The OpenAPI schema builds without warnings and says what the API answers, errors included."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import CampaignFactory, ComparisonFactory


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("schema") / "schema.yml"
    with django_db_blocker.unblock():
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    return yaml.safe_load(out.read_text())


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_schema_validates_without_warnings(schema):
    paths = schema["paths"]
    assert {"/api/campaigns/{campaign_id}/next/", "/api/judgments/",
            "/api/campaigns/{campaign_id}/import/", "/api/campaigns/{campaign_id}/exports/",
            "/api/campaigns/{campaign_id}/judgments/"} <= set(paths)
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_judgment_list_documents_the_paginated_envelope_and_its_bounds(schema):
    operation = schema["paths"]["/api/campaigns/{campaign_id}/judgments/"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    envelope = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert envelope["type"] == "object"
    assert {"count", "next", "previous", "results"} <= set(envelope["properties"])
    assert envelope["properties"]["results"]["items"] == {
        "$ref": "#/components/schemas/JudgmentListOutput"}
    params = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
    assert params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == 500
    assert params["offset"]["minimum"] == 0 and params["offset"]["maximum"] < 2**63


def test_every_operation_documents_its_errors(schema):
    """401 everywhere (no operation is public), 404 where the path names an object, 400 where
    there is input, each with the shared error body."""
    error = {"$ref": "#/components/schemas/Error"}
    for label, operation in _operations(schema):
        responses = operation["responses"]
        assert "401" in responses, label
        assert responses["401"]["content"]["application/json"]["schema"] == error, label
        if "{" in label:
            assert "404" in responses, label
        has_input = "requestBody" in operation or any(
            p["in"] == "query" for p in operation.get("parameters", []))
        if has_input:
            body = responses["400"]["content"]["application/json"]["schema"]
            assert body == {"oneOf": [error, {"$ref": "#/components/schemas/FieldErrors"}]}, label
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail"]


def test_state_errors_are_documented_where_they_occur(schema):
    submit = schema["paths"]["/api/judgments/"]["post"]["responses"]
    assert {"200", "201", "403", "404", "409", "410"} <= set(submit)
    export = schema["paths"]["/api/campaigns/{campaign_id}/exports/"]["post"]["responses"]
    assert "Retry-After" in export["429"]["headers"]


def test_request_strings_that_reject_blanks_say_so(schema):
    components = schema["components"]["schemas"]
    key = components["JudgmentSubmitInput"]["properties"]["idempotency_key"]
    assert key["minLength"] == 1 and key["pattern"] == r"\S"
    assert components["AssignmentSkipInput"]["properties"]["reason"]["minLength"] == 1
    # allow_blank=True stays open, and responses carry no request-only constraint.
    assert "minLength" not in components["JudgmentSubmitInput"]["properties"]["rationale"]
    assert "minLength" not in components["JudgmentListOutput"]["properties"]["rationale"]
    assert components["ComparisonImportInput"]["properties"]["file"]["format"] == "binary"


@pytest.fixture
def judgments_url(cast) -> str:
    from annotation.services import assignment_issue_next
    from annotation.services.judgments import judgment_submit_from_screen

    campaign = CampaignFactory(overlap=3)
    ComparisonFactory.create_batch(3, campaign=campaign)
    for i in range(3):
        assignment = assignment_issue_next(campaign=campaign, annotator=cast["annotator"])
        judgment_submit_from_screen(token=assignment.token, annotator=cast["annotator"],
                                    choice="left", strength=1, idempotency_key=f"k{i}",
                                    seconds_spent=2.0)
    return f"/api/campaigns/{campaign.pk}/judgments/"


@pytest.fixture
def researcher_api(cast) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=cast['researcher'])}")
    return client


def test_judgment_list_pages_with_limit_and_offset(researcher_api, judgments_url):
    page = researcher_api.get(judgments_url, {"limit": 2}).json()
    assert page["count"] == 3 and len(page["results"]) == 2
    assert "offset=2" in page["next"] and page["previous"] is None
    rest = researcher_api.get(judgments_url, {"limit": 2, "offset": 2}).json()
    assert len(rest["results"]) == 1 and rest["next"] is None


@pytest.mark.parametrize("name,value", [
    ("limit", str(2**64)),  # beyond PostgreSQL's bigint: was a 500
    ("limit", "0"), ("limit", "501"), ("limit", "-1"), ("limit", "1e3"), ("limit", "٣"),
    ("limit", " 5"), ("limit", "9" * 40), ("offset", "-1"), ("offset", str(2**63)),
    ("offset", "x"),
])
def test_bad_page_parameters_are_a_400_naming_the_parameter(researcher_api, judgments_url,
                                                            name, value):
    response = researcher_api.get(judgments_url, {name: value})
    assert response.status_code == 400
    assert list(response.json()) == [name]


def test_an_api_url_that_matches_no_route_answers_json(researcher_api):
    """`<int:...>` rejects "-1" before any view runs; the API still answers its error body."""
    response = researcher_api.get("/api/campaigns/-1/judgments/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_training_endpoints_are_documented(schema):
    paths = schema["paths"]
    assert {"/api/v1/training/runs/", "/api/v1/training/runs/{run_id}/",
            "/api/v1/training/runs/{run_id}/metrics/", "/api/v1/training/runs/{run_id}/cancel/",
            "/api/v1/training/sweeps/", "/api/v1/training/sweeps/{sweep_id}/"} <= set(paths)
    create = paths["/api/v1/training/runs/"]["post"]["responses"]
    assert {"201", "400", "401", "403"} <= set(create)
    assert "409" in paths["/api/v1/training/runs/{run_id}/cancel/"]["post"]["responses"]
    metrics = paths["/api/v1/training/runs/{run_id}/metrics/"]["get"]
    assert {"name", "after_step", "limit", "offset"} <= {p["name"] for p in metrics["parameters"]}


def test_experiment_endpoints_are_documented(schema):
    paths = schema["paths"]
    assert {"/api/v1/experiments/", "/api/v1/experiments/{experiment_id}/",
            "/api/v1/experiments/{experiment_id}/cancel/"} <= set(paths)
    create = paths["/api/v1/experiments/"]["post"]["responses"]
    assert {"202", "400", "401", "403"} <= set(create)
    assert "409" in paths["/api/v1/experiments/{experiment_id}/cancel/"]["post"]["responses"]
    detail = schema["components"]["schemas"]["_ExperimentDetail"]["properties"]
    assert {"status", "progress", "stage", "headline", "result"} <= set(detail)
