"""The researcher's data page (/data/) and the admin's exports: made through the services,
listed with size, hash and row count that match the files, downloaded byte for byte."""

from __future__ import annotations

import hashlib
import io
import threading
import time
import zipfile
from pathlib import Path

import pytest
from django.db import connection
from django.template.defaultfilters import filesizeformat

from annotation.models import JobStatus, PreferenceExport, Snapshot
from annotation.services import preference_export_create
from annotation.services.exports import path_digest, preference_export_run
from annotation.services.imports import comparisons_import_file
from annotation.services.snapshots import snapshot_create, snapshot_hash, snapshot_header
from tests.factories import CampaignFactory

PAIRS = ('{"prompt": "2+2?", "chosen": "4", "rejected": "5", "source": "mini"}\n'
         '{"prompt": "3+3?", "chosen": "6", "rejected": "7", "source": "mini"}\n'
         '{"prompt": "4+4?", "chosen": "8", "rejected": "9", "source": "mini"}\n')


@pytest.fixture
def labelled(db, settings, tmp_path):
    """A campaign whose three comparisons are decided by imported dataset labels."""
    settings.DATA_DIR = tmp_path
    settings.GAPLAB_EXPORT_DIR = tmp_path / "exports"
    campaign = CampaignFactory(name="arith-data", overlap=1, calibration_rate=0.0)
    source = tmp_path / "pairs.jsonl"
    source.write_text(PAIRS)
    comparisons_import_file(campaign=campaign, source=source)
    return campaign


def _export(campaign, user, fmt: str = "jsonl") -> PreferenceExport:
    export = preference_export_create(campaign=campaign, fmt=fmt, requested_by=user)
    preference_export_run(export_id=export.pk)  # the test transaction never commits
    export.refresh_from_db()
    return export


def test_page_lists_snapshots_and_exports_with_the_files_size_hash_and_rows(
        labelled, cast, client_for):
    snapshot = snapshot_create(campaign=labelled, method="majority", created_by=cast["admin"])
    export = _export(labelled, cast["researcher"])
    body = Path(snapshot.path).read_bytes()
    header = snapshot_header(campaign_name=labelled.name, method="majority",
                             params=snapshot.params)
    assert snapshot.size_bytes == len(body) and snapshot.row_count == 3
    assert snapshot.content_hash == hashlib.sha256(header + b"\n" + body).hexdigest()
    exported = Path(export.path).read_bytes()
    assert export.status == JobStatus.SUCCEEDED and export.row_count == 3
    assert export.size_bytes == len(exported)
    assert export.content_hash == hashlib.sha256(exported).hexdigest()

    page = client_for("researcher").get("/data/", {"campaign": labelled.pk})
    html = page.content.decode()
    assert page.status_code == 200
    for full in (snapshot.content_hash, export.content_hash):
        assert f'title="{full}">{full[:12]}</code>' in html and f">{full}</code>" in html
    assert f'id="snapshot-{snapshot.pk}"' in html and f'id="export-{export.pk}"' in html
    assert f'title="{len(body)} bytes"' in html and f'title="{len(exported)} bytes"' in html
    assert f"/data/snapshots/{snapshot.pk}/download/" in html
    assert f"/data/exports/{export.pk}/download/" in html
    # A finished row does not poll; the filter narrows the lists to one campaign.
    row = html[html.index(f'id="export-{export.pk}"'):]
    assert "hx-trigger" not in row[:row.index(">")]
    other = client_for("researcher").get("/data/", {"campaign": CampaignFactory().pk})
    assert f'id="export-{export.pk}"' not in other.content.decode()


def test_snapshot_from_the_page_is_made_by_the_service(labelled, cast, client_for):
    answer = client_for("researcher").post("/data/snapshots/", {
        "campaign": labelled.pk, "method": "majority", "sources": "all"})
    snapshot = Snapshot.objects.get()
    assert answer.status_code == 302
    assert answer["Location"] == f"/data/?campaign={labelled.pk}#snapshot-{snapshot.pk}"
    assert snapshot.created_by == cast["researcher"] and snapshot.row_count == 3
    assert snapshot.size_bytes == Path(snapshot.path).stat().st_size


def test_export_from_the_page_is_queued_and_runs(labelled, cast, client_for,
                                                  django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # the outbox publishes: eager task
        answer = client_for("admin").post("/data/exports/", {
            "campaign": labelled.pk, "format": "jsonl", "sources": "dataset"})
    export = PreferenceExport.objects.get()
    assert answer.status_code == 302 and answer["Location"].endswith(f"#export-{export.pk}")
    assert (export.status, export.sources, export.row_count) == (JobStatus.SUCCEEDED,
                                                                  "dataset", 3)
    assert export.requested_by == cast["admin"]
    assert (export.content_hash, export.size_bytes) == path_digest(Path(export.path))


@pytest.mark.parametrize(("url", "data", "field"), [
    ("/data/snapshots/", {"method": "majority", "sources": "all"}, "campaign"),
    ("/data/snapshots/", {"method": "vibes", "sources": "all"}, "method"),
    ("/data/snapshots/", {"method": "majority", "sources": "robots"}, "sources"),
    ("/data/exports/", {"format": "csv", "sources": "all"}, "format"),
    ("/data/exports/", {"format": "jsonl", "sources": "robots"}, "sources"),
])
def test_bad_input_is_400_naming_the_field_and_makes_nothing(labelled, client_for, url, data,
                                                            field):
    if field != "campaign":
        data = {**data, "campaign": labelled.pk}
    answer = client_for("researcher").post(url, data)
    form = answer.context["snapshot_form" if "snapshots" in url else "export_form"]
    assert answer.status_code == 400 and list(form.errors) == [field]
    assert 'class="errorlist"' in answer.content.decode()
    assert not Snapshot.objects.exists() and not PreferenceExport.objects.exists()


def test_refused_snapshot_shows_the_services_message(db, settings, tmp_path, client_for):
    settings.DATA_DIR = tmp_path
    empty = CampaignFactory(name="nothing-judged")
    answer = client_for("admin").post("/data/snapshots/", {
        "campaign": empty.pk, "method": "majority", "sources": "all"})
    assert answer.status_code == 400
    assert "nothing to snapshot" in str(answer.context["snapshot_form"].non_field_errors())
    assert not Snapshot.objects.exists()


def test_export_past_the_rate_limit_is_429_with_the_reason(labelled, cast, client_for,
                                                           settings):
    settings.GAPLAB_EXPORT_MAX_ACTIVE = 1
    preference_export_create(campaign=labelled, fmt="jsonl", requested_by=cast["researcher"])
    answer = client_for("researcher").post("/data/exports/", {
        "campaign": labelled.pk, "format": "jsonl", "sources": "all"})
    assert answer.status_code == 429 and answer["Retry-After"] == "30"
    assert "queued or running" in answer.content.decode()
    assert PreferenceExport.objects.count() == 1


@pytest.mark.parametrize("url", ["/data/", "/data/exports/1/row/", "/data/exports/1/download/",
                                 "/data/snapshots/1/download/"])
def test_annotators_and_outsiders_get_403(cast, client_for, url):
    for role in ("annotator", "outsider"):
        assert client_for(role).get(url).status_code == 403
    assert client_for(None).get(url)["Location"].startswith("/accounts/login/")
    for url_post in ("/data/snapshots/", "/data/exports/"):
        assert client_for("annotator").post(url_post, {}).status_code == 403


def test_downloads_are_the_exact_bytes_with_a_named_attachment(labelled, cast, client_for):
    snapshot = snapshot_create(campaign=labelled, method="majority")
    export = _export(labelled, cast["admin"])
    client = client_for("researcher")

    got = client.get(f"/data/snapshots/{snapshot.pk}/download/")
    # nosniff comes from SecurityMiddleware (SECURE_CONTENT_TYPE_NOSNIFF), as on every answer.
    assert got.status_code == 200 and got["X-Content-Type-Options"] == "nosniff"
    assert b"".join(got.streaming_content) == Path(snapshot.path).read_bytes()
    assert got["Content-Disposition"] == (
        f'attachment; filename="arith-data-snapshot-majority-{snapshot.content_hash[:12]}'
        '.jsonl"')

    got = client.get(f"/data/exports/{export.pk}/download/")
    data = b"".join(got.streaming_content)
    assert got.status_code == 200 and got["Content-Type"] == "application/jsonl"
    assert hashlib.sha256(data).hexdigest() == export.content_hash
    assert data == Path(export.path).read_bytes()
    assert got["Content-Disposition"] == (
        f'attachment; filename="arith-data-export-{export.pk}-{export.content_hash[:12]}.jsonl"')


def test_dataset_export_downloads_as_a_zip_of_its_directory(labelled, cast, client_for):
    export = _export(labelled, cast["admin"], fmt="dataset")
    directory = Path(export.path)
    assert directory.is_dir() and export.row_count == 3
    assert (export.content_hash, export.size_bytes) == path_digest(directory)
    got = client_for("admin").get(f"/data/exports/{export.pk}/download/")
    assert got.status_code == 200 and got["Content-Type"] == "application/zip"
    assert got["Content-Disposition"].endswith(f'-{export.content_hash[:12]}.zip"')
    archive = zipfile.ZipFile(io.BytesIO(b"".join(got.streaming_content)))
    files = {f.relative_to(directory).as_posix(): f.read_bytes()
             for f in directory.rglob("*") if f.is_file()}
    assert {name: archive.read(name) for name in archive.namelist()} == {
        f"{directory.name}/{name}": data for name, data in files.items()}


def test_missing_or_purged_files_are_410_with_a_reason(labelled, cast, client_for):
    snapshot = snapshot_create(campaign=labelled, method="majority")
    export = _export(labelled, cast["admin"])
    purged = _export(labelled, cast["admin"], fmt="dataset")
    Path(snapshot.path).unlink()
    Path(export.path).unlink()
    PreferenceExport.objects.filter(pk=purged.pk).update(purged_at=purged.finished_at)
    client = client_for("researcher")
    gone = client.get(f"/data/snapshots/{snapshot.pk}/download/")
    assert gone.status_code == 410 and "create the same snapshot again" in gone.content.decode()
    gone = client.get(f"/data/exports/{export.pk}/download/")
    assert gone.status_code == 410 and "missing on the server" in gone.content.decode()
    gone = client.get(f"/data/exports/{purged.pk}/download/")
    assert gone.status_code == 410 and "retention policy" in gone.content.decode()
    assert client.get("/data/exports/999999/download/").status_code == 404
    # The same snapshot made again writes its file back, and the download works again.
    assert snapshot_create(campaign=labelled, method="majority").pk == snapshot.pk
    assert client.get(f"/data/snapshots/{snapshot.pk}/download/").status_code == 200


def test_queued_export_row_polls_until_it_ends(labelled, cast, client_for):
    export = preference_export_create(campaign=labelled, fmt="jsonl",
                                      requested_by=cast["researcher"])
    client = client_for("researcher")
    queued = client.get(f"/data/exports/{export.pk}/row/", HTTP_HX_REQUEST="true")
    assert queued.status_code == 200 and 'hx-trigger="every 2s"' in queued.content.decode()
    assert client.get(f"/data/exports/{export.pk}/download/").status_code == 409
    preference_export_run(export_id=export.pk)
    done = client.get(f"/data/exports/{export.pk}/row/", HTTP_HX_REQUEST="true")
    # 286: htmx swaps the finished row in and stops polling.
    assert done.status_code == 286 and "hx-trigger" not in done.content.decode()
    assert f"/data/exports/{export.pk}/download/" in done.content.decode()


# --- The Django admin's exports (issue 10, point 1) --------------------------------------------


def test_admin_add_form_queues_an_export_that_runs(labelled, cast, client_for,
                                                   django_capture_on_commit_callbacks):
    client = client_for("admin")
    form = client.get("/admin/annotation/preferenceexport/add/")
    assert form.status_code == 200 and 'name="sources"' in form.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post("/admin/annotation/preferenceexport/add/", {
            "campaign": labelled.pk, "format": "jsonl", "sources": "all"})
    export = PreferenceExport.objects.get()
    assert answer.status_code == 302
    assert answer["Location"] == f"/admin/annotation/preferenceexport/{export.pk}/change/"
    assert (export.status, export.row_count, export.requested_by) == (
        JobStatus.SUCCEEDED, 3, cast["admin"])
    page = client.get(answer["Location"]).content.decode()
    assert export.content_hash in page and f"/data/exports/{export.pk}/download/" in page
    bad = client.post("/admin/annotation/preferenceexport/add/", {
        "campaign": labelled.pk, "format": "xml", "sources": "all"})
    assert bad.status_code == 400 and "format" in bad.context["form"].errors
    assert PreferenceExport.objects.count() == 1


def test_finished_export_is_read_only_in_the_admin(labelled, cast, client_for):
    export = _export(labelled, cast["admin"])
    cast["admin"].is_superuser = True  # even a superuser: a finished export is a record
    cast["admin"].save()
    client = client_for("admin")
    url = f"/admin/annotation/preferenceexport/{export.pk}/change/"
    page = client.get(url)
    html = page.content.decode()
    assert page.status_code == 200
    assert "<select" not in html and 'name="_save"' not in html and "Cancel export" not in html
    before = PreferenceExport.objects.filter(pk=export.pk).values().get()
    posted = client.post(url, {"campaign": labelled.pk, "format": "dataset", "status": "queued",
                               "row_count": 0, "_save": "Save"})
    assert posted.status_code == 403
    assert PreferenceExport.objects.filter(pk=export.pk).values().get() == before


def test_admin_cancels_a_queued_export(labelled, cast, client_for):
    export = preference_export_create(campaign=labelled, fmt="jsonl", requested_by=cast["admin"])
    client = client_for("admin")
    page = client.get(f"/admin/annotation/preferenceexport/{export.pk}/change/")
    assert "Cancel export" in page.content.decode()
    answer = client.post(f"/admin/annotation/preferenceexport/{export.pk}/cancel/")
    export.refresh_from_db()
    assert answer.status_code == 302 and export.status == JobStatus.CANCELLED
    assert preference_export_run(export_id=export.pk) is None  # the worker leaves it alone
    again = client.post("/admin/annotation/preferenceexport/", {
        "action": "cancel_exports", "_selected_action": [export.pk]}, follow=True)
    assert "already ended" in again.content.decode()


@pytest.mark.django_db(transaction=True)
def test_export_cancelled_while_running_ends_cancelled_without_a_file(
        settings, tmp_path, monkeypatch):
    """A cancel that arrives while the worker writes: the run ends cancelled, file deleted."""
    from annotation.services.exports import preference_export_cancel

    settings.DATA_DIR, settings.GAPLAB_EXPORT_DIR = tmp_path, tmp_path / "exports"
    campaign = CampaignFactory(name="cancel-me", overlap=1, calibration_rate=0.0)
    (tmp_path / "pairs.jsonl").write_text(PAIRS)
    comparisons_import_file(campaign=campaign, source=tmp_path / "pairs.jsonl")
    # A bare queued row: through the outbox, eager mode would run it here and now.
    export = PreferenceExport.objects.create(campaign=campaign, format="jsonl")
    monkeypatch.setenv("GAPLAB_FAULT_EXPORT_DELAY_SECONDS", "1.5")

    def work() -> None:
        try:
            preference_export_run(export_id=export.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 10
    while PreferenceExport.objects.get(pk=export.pk).status != JobStatus.RUNNING:
        assert time.monotonic() < deadline, "the export never started"
        time.sleep(0.05)
    assert preference_export_cancel(export=export).cancel_requested
    worker.join(timeout=20)
    export.refresh_from_db()
    assert export.status == JobStatus.CANCELLED and "file was deleted" in export.error
    assert not list((tmp_path / "exports").glob("*"))


def test_snapshot_admin_shows_size_hash_and_a_download(labelled, cast, client_for):
    snapshot = snapshot_create(campaign=labelled, method="majority")
    client = client_for("researcher")
    listing = client.get("/admin/annotation/snapshot/").content.decode()
    assert f'title="{snapshot.content_hash}"' in listing
    assert f"/data/snapshots/{snapshot.pk}/download/" in listing
    page = client.get(f"/admin/annotation/snapshot/{snapshot.pk}/change/").content.decode()
    assert snapshot.content_hash in page and filesizeformat(snapshot.size_bytes) in page


def test_snapshot_hash_is_recomputable_from_the_download(labelled, client_for):
    """What the page's note promises: sha256(header, newline, downloaded file) = the hash."""
    snapshot = snapshot_create(campaign=labelled, method="majority")
    got = client_for("admin").get(f"/data/snapshots/{snapshot.pk}/download/")
    header = snapshot_header(campaign_name=labelled.name, method="majority",
                             params=snapshot.params)
    assert snapshot_hash(header=header, body=b"".join(got.streaming_content)) == \
        snapshot.content_hash


def test_api_reports_the_exports_hash_and_size_and_410s_a_missing_file(labelled, cast,
                                                                      client_for):
    export = _export(labelled, cast["researcher"])
    client = client_for("researcher")
    detail = client.get(f"/api/exports/{export.pk}/").json()
    assert (detail["content_hash"], detail["size_bytes"]) == (export.content_hash,
                                                               export.size_bytes)
    Path(export.path).unlink()
    gone = client.get(f"/api/exports/{export.pk}/download/")
    assert gone.status_code == 410 and "missing on the server" in gone.json()["detail"]


def test_data_page_queries_do_not_grow_with_rows(labelled, cast, client_for,
                                                 django_assert_num_queries):
    """Session, user, roles, the nav's annotator profile, three campaign lists (the filter and
    two forms), snapshots, exports: nine, however many rows."""
    snapshot_create(campaign=labelled, method="majority", created_by=cast["admin"])
    for _ in range(3):
        _export(labelled, cast["researcher"])
    client = client_for("researcher")
    with django_assert_num_queries(9):
        client.get("/data/")
    snapshot_create(campaign=labelled, method="bradley_terry", created_by=cast["researcher"])
    _export(labelled, cast["admin"], fmt="dataset")
    with django_assert_num_queries(9):
        assert client.get("/data/").status_code == 200


def test_campaign_export_action_past_the_limit_says_why_instead_of_failing(labelled, cast,
                                                                         client_for, settings):
    settings.GAPLAB_EXPORT_MAX_ACTIVE = 1
    preference_export_create(campaign=labelled, fmt="jsonl", requested_by=cast["admin"])
    answer = client_for("admin").post("/admin/annotation/campaign/", {
        "action": "export_preferences", "_selected_action": [labelled.pk]}, follow=True)
    assert answer.status_code == 200 and "queued or running" in answer.content.decode()
    assert PreferenceExport.objects.count() == 1


def test_a_polled_row_whose_export_is_gone_stops_polling(cast, client_for):
    answer = client_for("researcher").get("/data/exports/999999/row/", HTTP_HX_REQUEST="true")
    assert answer.status_code == 286 and answer.content == b""
    assert client_for("researcher").get("/data/exports/999999/row/").status_code == 404


def test_researcher_cancels_a_queued_export_from_its_row(labelled, cast, client_for):
    export = preference_export_create(campaign=labelled, fmt="jsonl", requested_by=cast["admin"])
    client = client_for("researcher")
    page = client.get("/data/").content.decode()
    assert f'hx-post="/data/exports/{export.pk}/cancel/"' in page
    assert client_for("annotator").post(f"/data/exports/{export.pk}/cancel/").status_code == 403
    row = client.post(f"/data/exports/{export.pk}/cancel/", HTTP_HX_REQUEST="true")
    export.refresh_from_db()
    assert row.status_code == 200 and export.status == JobStatus.CANCELLED
    assert "Cancelled before it started." in row.content.decode()
    assert "hx-trigger" not in row.content.decode()
    again = client.post(f"/data/exports/{export.pk}/cancel/")
    assert again.status_code == 409 and "already ended" in again.content.decode()
    refused = client.post(f"/data/exports/{export.pk}/cancel/", HTTP_HX_REQUEST="true")
    assert refused.status_code == 200 and 'role="alert"' in refused.content.decode()
