"""The API answers what its OpenAPI schema says, for every role: no 5xx, no undocumented answer.

schemathesis generates requests from ``/api/schema/`` (valid ones and, in its negative mode,
invalid ones) and sends them in-process to the WSGI app, on the test database, as an annotator,
an admin and a researcher (DRF tokens) and anonymously. Each response must be no 5xx, carry a
documented status code and content type, and match the documented body and headers.

Half the generated ids and tokens are swapped for real ones (a campaign with comparisons, an
issued assignment, an export), so operations reach their 2xx paths, not only their 404s.
Bounded: a few derandomized examples per operation, so the whole file stays near a minute.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import CampaignFactory, ComparisonFactory

ROLES = ["annotator", "admin", "researcher", None]  # None: anonymous
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


# Real ids and the open assignment's token, set per test by ``api_world``: the schema is loaded
# once at collection, the rows are made per test, inside its transaction.
WORLD: dict[str, int | str] = {}


@pytest.fixture
def api_world(cast, settings, tmp_path):
    """A campaign with comparisons, a judgment, an open assignment of the annotator's, and a
    written export."""
    from annotation.services import assignment_issue_next, preference_export_create
    from annotation.services.exports import preference_export_run
    from annotation.services.judgments import judgment_submit_from_screen

    settings.GAPLAB_EXPORT_DIR = tmp_path
    campaign = CampaignFactory(overlap=3, calibration_rate=0.0)
    ComparisonFactory.create_batch(4, campaign=campaign)
    answered = assignment_issue_next(campaign=campaign, annotator=cast["annotator"])
    judgment_submit_from_screen(token=answered.token, annotator=cast["annotator"],
                                choice="left", strength=2, idempotency_key="seed-1",
                                seconds_spent=4.0, rationale="")
    assignment = assignment_issue_next(campaign=campaign, annotator=cast["annotator"])
    export = preference_export_create(campaign=campaign, fmt="jsonl",
                                      requested_by=cast["admin"])
    preference_export_run(export_id=export.pk)  # the test transaction never commits: run it here
    WORLD.update(campaign_id=campaign.pk, export_id=export.pk, token=str(assignment.token))
    yield WORLD
    WORLD.clear()


@pytest.fixture
def auth_headers(role, cast) -> dict[str, str]:
    if role is None:
        return {}
    return {"Authorization": f"Token {Token.objects.create(user=cast[role]).key}"}


@pytest.fixture
def in_process(db):
    """Serve Django's WSGI handler on the test transaction.

    A real request ends with ``close_old_connections``, which inside the test's atomic block
    marks the connection for rollback; Django's own test client unhooks it the same way.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    cache.clear()  # throttle counters from earlier tests
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Unknown query parameters are ignored, as HTTP APIs commonly do; the schema does not forbid
# them, so sending them is no negative test.
schema = schemathesis.openapi.from_wsgi(
    "/api/schema/", WSGIHandler(),
    config=schemathesis.Config.from_dict({"generation": {"allow-extra-parameters": False}}),
)


def _with_real_ids(case: schemathesis.Case) -> None:
    if case.path_parameters:
        real = {k: WORLD[k] for k in case.path_parameters if k in WORLD}
        case.path_parameters = {**case.path_parameters, **real}
    if isinstance(case.body, dict) and "token" in case.body:
        case.body = {**case.body, "token": WORLD["token"]}


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role or "anonymous")
@pytest.mark.usefixtures("in_process", "api_world")
@schema.parametrize()
@schema.given(real_ids=st.booleans())
@hypothesis.settings(max_examples=15, derandomize=True, deadline=None, database=None,
                     phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, real_ids, auth_headers):
    """Every answer, to every role, is a documented status with a documented body; no 5xx."""
    if real_ids:
        # Assigning to the case marks what changed, so schemathesis re-checks it against the
        # schema: a negative id swapped for a real one is no longer taken for a negative test.
        _with_real_ids(case)
    case.call_and_validate(headers=auth_headers, checks=CHECKS)
