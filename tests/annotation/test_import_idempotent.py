"""Importing the same file twice adds nothing the second time, and says so (issue 10, point 10).

Rows are compared by ``prompt_fingerprint`` (conversation, context, responses, kind, gold);
``allow_duplicates`` imports them again on purpose. Real PostgreSQL, the real command and API.
"""

from __future__ import annotations

import io
import json

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection

from annotation.models import Comparison, Judgment, Prompt
from annotation.services.imports import comparisons_import_file
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def _row(i: int, **extra) -> dict:
    return {"prompt": f"Question {i}?", "chosen": f"Answer {i} good.",
            "rejected": f"Answer {i} bad.", **extra}


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _import(path, campaign, *flags) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_comparisons", path, "--campaign", campaign.name, *flags,
                 stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _counts(campaign) -> tuple[int, int, int]:
    return (Prompt.objects.filter(campaign=campaign).count(),
            Comparison.objects.filter(campaign=campaign).count(),
            Judgment.objects.filter(campaign=campaign).count())


def test_the_same_file_twice_adds_nothing_and_says_so(tmp_path):
    campaign = CampaignFactory(name="twice")
    path = _write(tmp_path / "hh.jsonl", [_row(i) for i in range(6)])
    _import(path, campaign)
    first = _counts(campaign)
    assert first == (6, 6, 6)  # six comparisons, each with its dataset label

    out, err = _import(path, campaign)
    assert _counts(campaign) == first
    assert "All 6 rows are already in this campaign" in err
    assert "--allow-duplicates" in err
    assert "Imported 0 comparisons" in out and "6 rows it already had were skipped" in out


def test_allow_duplicates_imports_them_again(tmp_path):
    campaign = CampaignFactory(name="again")
    path = _write(tmp_path / "hh.jsonl", [_row(i) for i in range(4)])
    _import(path, campaign)
    _, err = _import(path, campaign, "--allow-duplicates")
    assert _counts(campaign) == (8, 8, 8)
    assert "already" not in err


def test_an_extended_file_adds_only_its_new_rows(tmp_path):
    campaign = CampaignFactory(name="grown")
    _import(_write(tmp_path / "a.jsonl", [_row(i) for i in range(3)]), campaign)
    # The same data re-exported with new ids and a new source, plus two new rows and one row
    # repeated inside the file: ids and sources do not make a row new.
    grown = [_row(i, id=f"new-{i}", source="re-export") for i in range(5)] + [_row(4)]
    out, err = _import(_write(tmp_path / "b.jsonl", grown), campaign)
    assert _counts(campaign) == (5, 5, 5)
    assert "4 of 6 rows were already in this campaign (or repeated in the file)" in err
    assert "Imported 2 comparisons" in out


def test_a_changed_response_or_gold_is_a_new_row(tmp_path):
    campaign = CampaignFactory(name="changed")
    _import(_write(tmp_path / "a.jsonl", [_row(1)]), campaign)
    edited = {**_row(1), "chosen": "Answer 1 good, edited."}
    gold = {"prompt": "Question 1?", "responses": ["Answer 1 good.", "Answer 1 bad."],
            "kind": "calibration", "gold": "A"}
    _import(_write(tmp_path / "b.jsonl", [edited, gold]), campaign)
    assert _counts(campaign)[0] == 3


def test_the_same_rows_in_another_campaign_are_not_duplicates(tmp_path):
    path = _write(tmp_path / "hh.jsonl", [_row(i) for i in range(3)])
    one, two = CampaignFactory(name="one"), CampaignFactory(name="two")
    _import(path, one)
    _import(path, two)
    assert _counts(one) == _counts(two) == (3, 3, 3)


def test_prompts_imported_before_the_fingerprint_are_found_after_the_backfill(tmp_path):
    """Migration 0014's backfill recomputes, from what the database holds, the fingerprint an
    import computes from the file, so a file imported before it is still a duplicate."""
    import importlib

    backfill = importlib.import_module(
        "annotation.migrations.0014_prompt_fingerprint").fingerprints_backfill
    campaign = CampaignFactory(name="old")
    rows = [_row(1), {"prompt": "Sum 2+2?", "responses": ["4", "5"], "kind": "calibration",
                      "gold": "A", "context": ["Passage one."]}]
    path = _write(tmp_path / "old.jsonl", rows)
    _import(path, campaign)
    made = dict(Prompt.objects.filter(campaign=campaign).values_list("pk", "fingerprint"))
    Prompt.objects.filter(campaign=campaign).update(fingerprint="")

    backfill(apps, None)
    assert dict(Prompt.objects.filter(campaign=campaign)
                .values_list("pk", "fingerprint")) == made
    _import(path, campaign)
    assert _counts(campaign)[0] == 2


def test_the_api_answers_200_with_the_duplicates_and_imports_them_on_request(client_for):
    campaign = CampaignFactory(name="api")
    body = "".join(json.dumps(_row(i)) + "\n" for i in range(3)).encode()
    client = client_for("researcher")
    url = f"/api/campaigns/{campaign.pk}/import/"
    first = client.post(url, {"file": SimpleUploadedFile("a.jsonl", body)})
    assert first.status_code == 201 and first.json()["duplicates"] == 0

    again = client.post(url, {"file": SimpleUploadedFile("a.jsonl", body)})
    assert again.status_code == 200
    assert again.json()["comparisons"] == 0 and again.json()["duplicates"] == 3
    assert "All 3 rows are already in this campaign" in again.json()["warnings"][0]

    forced = client.post(url, {"file": SimpleUploadedFile("a.jsonl", body),
                               "allow_duplicates": "true"})
    assert forced.status_code == 201 and forced.json()["comparisons"] == 3
    bad = client.post(url, {"file": SimpleUploadedFile("a.jsonl", body),
                            "allow_duplicates": "perhaps"})
    assert bad.status_code == 400 and "allow_duplicates" in bad.content.decode()
    assert _counts(campaign)[0] == 6


def test_a_bad_file_still_imports_nothing_and_the_error_names_the_line(tmp_path):
    campaign = CampaignFactory(name="bad")
    path = _write(tmp_path / "bad.jsonl", [_row(1), {"prompt": "x"}])
    with pytest.raises(CommandError, match="line 2"):
        _import(path, campaign)
    assert _counts(campaign) == (0, 0, 0)
    assert comparisons_import_file(campaign=campaign, source=_write(
        tmp_path / "ok.jsonl", [_row(1)])).comparisons == 1


def test_the_admin_upload_skips_duplicates_and_says_so_unless_ticked(client_for):
    campaign = CampaignFactory(name="upload")
    body = "".join(json.dumps(_row(i)) + "\n" for i in range(2)).encode()
    admin = client_for("admin")
    url = "/admin/annotation/campaign/import/"

    def upload(**extra):
        return admin.post(url, {"campaign": campaign.pk,
                                "file": SimpleUploadedFile("a.jsonl", body), **extra},
                          follow=True)

    upload()
    page = upload().content.decode()
    assert "All 2 rows are already in this campaign" in page
    assert _counts(campaign)[0] == 2
    upload(allow_duplicates="on")
    assert _counts(campaign)[0] == 4


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_an_import_in_progress_blocks_another_import_but_not_the_annotators():
    """The import's lock on the campaign (FOR NO KEY UPDATE) serialises imports; the
    campaign's annotators, whose inserts check their foreign key to it, go on meanwhile."""
    import threading

    from django.db import transaction

    from annotation.services import assignment_issue_next, judgment_submit
    from annotation.services.imports import campaign_import_lock
    from tests.factories import ComparisonFactory, make_users

    campaign = CampaignFactory(name="busy", overlap=2)
    ComparisonFactory.create_batch(2, campaign=campaign)
    (user,) = make_users(1)
    holding, release = threading.Event(), threading.Event()
    done: dict[str, bool] = {}

    def importer():
        with transaction.atomic():
            campaign_import_lock(campaign)
            holding.set()
            release.wait(20)
        connection.close()

    def second_import():
        with transaction.atomic():
            campaign_import_lock(campaign)
        done["import"] = True
        connection.close()

    def annotator():
        assignment = assignment_issue_next(campaign=campaign, annotator=user)
        judgment_submit(assignment=assignment, annotator=user, idempotency_key="k",
                        choice="A", strength=2, seconds_spent=3.0)
        done["judgment"] = True
        connection.close()

    first = threading.Thread(target=importer)
    first.start()
    assert holding.wait(10)
    rater, other = threading.Thread(target=annotator), threading.Thread(target=second_import)
    rater.start()
    other.start()
    rater.join(10)
    other.join(1.0)
    try:
        assert done.get("judgment") and Judgment.objects.filter(campaign=campaign).count() == 1
        assert "import" not in done  # still waiting for the first import
    finally:
        release.set()
        first.join(10)
        other.join(10)
    assert done.get("import")
