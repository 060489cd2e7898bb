"""The error pages (issue 10, point 9): a 403 in the site's look that says what is missing and
links back, logged as one line without a traceback; the site's 404, also with DEBUG on (the
demo); JSON errors under /api/; a static 500 page; and /favicon.ico."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client, RequestFactory, override_settings
from django.urls import path

from config import handlers
from config.urls import urlpatterns as site_urlpatterns

pytestmark = pytest.mark.django_db


def _explode(request):
    raise RuntimeError("boom for the 500 page")


# The site's URLs plus one that fails, for the 500 tests (the handlers are config.urls').
urlpatterns = [path("test-explode/", _explode), *site_urlpatterns]
handler400 = "config.handlers.bad_request"
handler403 = "config.handlers.permission_denied"
handler404 = "config.handlers.page_not_found"
handler500 = "config.handlers.server_error"


def _request_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django.request"]


def test_an_annotator_on_the_quality_page_gets_the_site_403_and_one_log_line(client_for,
                                                                             caplog):
    caplog.set_level(logging.WARNING, logger="django.request")
    response = client_for("annotator").get("/quality/")
    assert response.status_code == 403
    page = response.content.decode()
    assert 'class="topbar"' in page and 'class="brand" href="/"' in page
    assert 'id="error-403"' in page
    assert "needs the <strong>admin</strong> or <strong>researcher</strong> role" in page
    assert "your account <strong>annotator</strong> has none of them" in page
    assert 'href="/accounts/login/?next=/quality/"' in page
    records = _request_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None and record.exc_text is None
    assert record.getMessage() == ("Forbidden (Permission denied): /quality/ "
                                   "(user annotator, status 403)")
    assert "Traceback" not in caplog.text


def test_a_single_role_page_names_that_role(client_for):
    page = client_for("admin").get("/annotate/").content.decode()
    assert "needs the <strong>annotator</strong> role" in page
    assert "has no annotator role" in page


def test_an_admin_check_403_also_logs_no_traceback(client_for, caplog):
    """PermissionDenied raised by Django's admin, not role_required: the same one line."""
    caplog.set_level(logging.WARNING, logger="django.request")
    response = client_for("admin").get("/admin/auth/group/")
    assert response.status_code == 403
    assert 'id="error-403"' in response.content.decode()
    (record,) = _request_records(caplog)
    assert record.exc_info is None and "(user admin, status 403)" in record.getMessage()


@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_page_is_the_site_404_also_with_debug_on(client_for, settings, debug):
    settings.DEBUG = debug
    response = client_for("researcher").get("/no-such-page/at/all/")
    assert response.status_code == 404
    page = response.content.decode()
    assert 'id="error-404"' in page and 'class="topbar"' in page
    assert "Using the URLconf" not in page and "urlpatterns" not in page.lower()
    assert "<code class=\"wrap\">/no-such-page/at/all/</code>" in page


@pytest.mark.parametrize("debug", [False, True])
def test_a_view_404_names_what_is_missing_also_with_debug_on(client_for, settings, debug):
    settings.DEBUG = debug
    response = client_for("researcher").get("/training/runs/999999/")
    assert response.status_code == 404
    page = response.content.decode()
    assert 'id="error-404"' in page and "No such run." in page
    assert "Django tried these URL patterns" not in page and "Technical" not in page


@pytest.mark.parametrize("debug", [False, True])
def test_api_404_stays_json(client_for, settings, debug):
    settings.DEBUG = debug
    response = client_for("researcher").get("/api/no-such-endpoint/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_append_slash_still_redirects_with_debug_on(client_for, settings):
    settings.DEBUG = True
    response = client_for("researcher").get("/training")
    assert response.status_code == 301 and response["Location"] == "/training/"


def test_favicon_redirects_to_an_svg_icon():
    client = Client()
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    icon = client.get(response["Location"])
    assert icon.status_code == 200
    assert icon["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in b"".join(icon.streaming_content)


@override_settings(ROOT_URLCONF=__name__)
def test_a_500_is_the_static_page_and_keeps_its_traceback_in_the_log(cast, caplog):
    caplog.set_level(logging.ERROR, logger="django.request")
    client = Client(raise_request_exception=False)
    client.force_login(cast["researcher"])
    response = client.get("/test-explode/")
    assert response.status_code == 500
    page = response.content.decode()
    assert 'id="error-500"' in page and "Something went wrong" in page
    assert "boom" not in page and "Traceback" not in page
    (record,) = _request_records(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_an_api_500_is_json_and_a_page_500_the_static_page():
    request = RequestFactory().get("/api/campaigns/")
    response = handlers.server_error(request)
    assert response.status_code == 500
    assert json.loads(response.content) == {"detail": "Server error."}
    request = RequestFactory().get("/annotate/")
    response = handlers.server_error(request)
    assert response.status_code == 500 and b'id="error-500"' in response.content


def test_api_403_from_django_is_json():
    from django.core.exceptions import PermissionDenied

    response = handlers.permission_denied(RequestFactory().get("/api/x/"), PermissionDenied())
    assert response.status_code == 403 and "permission" in json.loads(response.content)["detail"]


def test_a_bad_host_gets_the_site_400_page_and_json_under_api():
    client = Client(HTTP_HOST="not-allowed.example")
    page = client.get("/training/")
    assert page.status_code == 400 and 'id="error-400"' in page.content.decode()
    api = client.get("/api/campaigns/")
    assert api.status_code == 400 and api.json() == {"detail": "Bad request."}
