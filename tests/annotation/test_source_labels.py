"""Imported preferences are kept as a dataset annotator's labels, outside the people's tallies;
unknown fields are kept on the prompt; ``--skip-invalid`` imports the valid rows and writes the
refused ones with their reasons."""

from __future__ import annotations

import io
import json
import math

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation import importers
from annotation.errors import ApplicationError, ForbiddenError
from annotation.models import (
    AnnotatorProfile,
    AnnotatorQuality,
    Assignment,
    Campaign,
    CampaignQuality,
    Comparison,
    Judgment,
    Prompt,
)
from annotation.selectors import comparison_for_annotator
from annotation.selectors.frame import judgment_frame
from annotation.selectors.quality import campaign_label_mix
from annotation.selectors.sources import dataset_annotator_ids, source_agreement_list
from annotation.services import assignment_issue_next, judgment_submit
from annotation.services.imports import comparisons_import_file
from annotation.services.quality import campaign_quality_recompute
from annotation.services.snapshots import snapshot_create, snapshot_rows, snapshot_rows_build
from tests.factories import CampaignFactory, make_users
from tests.shared_data import SHARED_DATA

HH_SAMPLE = SHARED_DATA / "hh_rlhf_sample.jsonl"


def _jsonl(records: list) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


def _pair(i: int, **extra) -> dict:
    return {"prompt": f"Question {i}?", "chosen": f"Good answer {i}.",
            "rejected": f"Bad answer {i}.", **extra}


def _judge_all(campaign, users, choice: str) -> None:
    for user in users:
        while (a := assignment_issue_next(campaign=campaign, annotator=user)) is not None:
            judgment_submit(assignment=a, annotator=user, choice=choice, strength=2,
                            idempotency_key=str(a.token), seconds_spent=1.0)


# --- the accepted label forms ----------------------------------------------------------------

def test_chosen_rejected_is_a_label_for_a_and_label_names_the_preferred_response():
    row = importers.parse_record(_pair(1), 1)
    assert [r.text for r in row.responses] == ["Good answer 1.", "Bad answer 1."]
    assert row.labels == {0: "A"}
    assert importers.parse_record(
        {"prompt": "q", "responses": ["x", "y"], "label": "B"}, 1).labels == {0: "B"}
    assert importers.parse_record(
        {"prompt": "q", "responses": ["x", "y"], "label": "tie"}, 1).labels == {0: "tie"}
    # An index among three responses: the indexed one wins its two pairs, (0, 1) has no label.
    row = importers.parse_record({"prompt": "q", "responses": ["x", "y", "z"], "label": 2}, 1)
    assert row.pairs == [(0, 1), (0, 2), (1, 2)]
    assert row.labels == {1: "B", 2: "B"}
    # CSV gives digits as text.
    assert importers.parse_record(
        {"prompt": "q", "responses": ["x", "y"], "label": "0"}, 1).labels == {0: "A"}
    # No label: nothing is kept; calibration and eval rows carry none.
    assert importers.parse_record({"prompt": "q", "responses": ["x", "y"]}, 1).labels == {}
    assert importers.parse_record(_pair(1, gold="A"), 1).labels == {}
    assert importers.parse_record(_pair(1, kind="eval"), 1).labels == {}


@pytest.mark.parametrize(("record", "message"), [
    ({"prompt": "q", "responses": ["x", "y"], "label": "C"}, "use one of"),
    ({"prompt": "q", "responses": ["x", "y", "z"], "label": "A"}, "exactly two"),
    ({"prompt": "q", "responses": ["x", "y"], "label": 2}, "below 2"),
    ({"prompt": "q", "responses": ["x", "y"], "label": True}, "must be a choice"),
    ({"prompt": "q", "responses": ["x", "y"], "label": "A", "gold": "A"}, "only regular"),
    ({**_pair(1), "label": "A"}, "already say"),
])
def test_a_bad_label_is_refused_with_its_field(record, message):
    with pytest.raises(importers._RowError, match=message) as excinfo:
        importers.parse_record(record, 1)
    assert excinfo.value.field_name == "label"


def test_unknown_fields_are_kept_json_safe_and_context_must_be_passages():
    row = importers.parse_record(_pair(1, context=["p1", "p2"], meta={"a": math.nan},
                                       score=math.inf, empty=None), 1)
    assert row.extra == {"context": ["p1", "p2"], "meta": {"a": None}, "score": None}
    with pytest.raises(importers._RowError, match="list of strings") as excinfo:
        importers.parse_record(_pair(1, context={"passage": "x"}), 1)
    assert excinfo.value.field_name == "context"


# --- through the command: labels kept, export right after import -----------------------------

def test_export_right_after_importing_the_hh_sample_gives_the_files_own_preferences(db, tmp_path):
    """1,303 real HH-RLHF rows: the export holds exactly the file's chosen/rejected pairs."""
    call_command("import_comparisons", str(HH_SAMPLE), campaign="hh", create=True,
                 source="Anthropic/hh-rlhf")
    campaign = Campaign.objects.get(name="hh")
    expected = {
        (json.dumps(row.turns), row.responses[0].text, row.responses[1].text)
        for row in importers.parse_path(HH_SAMPLE, fmt=None, max_bytes=10**8, max_rows=10**5)
    }
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", campaign="hh", out=str(out))
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == len(expected) == 1303
    assert {(json.dumps(r["prompt"]), r["chosen"][0]["content"], r["rejected"][0]["content"])
            for r in exported} == expected
    (profile,) = AnnotatorProfile.objects.filter(kind=AnnotatorProfile.Kind.DATASET)
    assert profile.source == "Anthropic/hh-rlhf" and not profile.user.has_usable_password()
    assert Judgment.objects.filter(campaign=campaign, annotator=profile.user).count() == 1303
    # Labels are not claims: every comparison is still fully open to the people.
    assert not Comparison.objects.filter(campaign=campaign, claimed_count__gt=0).exists()
    # The people-only export is empty: nobody has judged yet.
    call_command("export_preferences", campaign="hh", out=str(out), sources="people")
    assert out.read_text() == ""


def test_each_source_gets_its_own_dataset_annotator_and_a_second_import_reuses_it(db, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(_jsonl([_pair(1, source="hh"), _pair(2, source="shp"), _pair(3)]))
    call_command("import_comparisons", str(path), campaign="mix", create=True)
    # A deliberate second import of the same rows (duplicates are skipped unless allowed).
    call_command("import_comparisons", str(path), campaign="mix", allow_duplicates=True)
    sources = sorted(AnnotatorProfile.objects.filter(kind="dataset")
                     .values_list("source", flat=True))
    assert sources == ["hh", "mixed.jsonl", "shp"]  # a row without source: the file's name
    user = AnnotatorProfile.objects.get(source="hh").user
    assert Judgment.objects.filter(annotator=user).count() == 2
    # A declared source wins over the rows' own: one annotator holds the whole file's labels.
    result = comparisons_import_file(campaign=Campaign.objects.get(name="mix"), source=path,
                                     label_source="declared", allow_duplicates=True)
    assert result.label_sources == {"declared": 3}


def test_a_source_per_row_is_named_in_a_warning(db, tmp_path):
    """Per-row provenance in ``source`` (as in the HH sample) would make one annotator a row."""
    path = tmp_path / "provenance.jsonl"
    path.write_text(_jsonl([_pair(i, source=f"file.jsonl#L{i}") for i in range(25)]))
    result = comparisons_import_file(campaign=CampaignFactory(), source=path)
    assert len(result.label_sources) == 25
    assert any("named 25 label sources" in w for w in result.warnings)


# --- snapshots choose their sources ----------------------------------------------------------

def test_snapshots_from_the_dataset_alone_the_people_alone_or_both(db, tmp_path):
    campaign = CampaignFactory(name="src", overlap=2)
    path = tmp_path / "pairs.jsonl"
    path.write_text(_jsonl([_pair(i) for i in range(3)]))
    comparisons_import_file(campaign=campaign, source=path, label_source="my-dataset")
    with pytest.raises(ApplicationError, match="nothing to snapshot"):
        snapshot_create(campaign=campaign, method="majority", sources="people")
    with pytest.raises(ApplicationError, match="Unknown sources"):
        snapshot_rows_build(campaign=campaign, method="majority", sources="robots")
    # Both people prefer the rejected reply: 2 votes against the dataset's 1.
    _judge_all(campaign, make_users(2), "B")

    def chosen(sources: str) -> set[str]:
        snapshot = snapshot_create(campaign=campaign, method="majority", sources=sources)
        return {r["chosen"][0]["content"] for r in snapshot_rows(snapshot)}

    assert chosen("dataset") == {f"Good answer {i}." for i in range(3)}
    assert chosen("people") == {f"Bad answer {i}." for i in range(3)}
    assert chosen("all") == {f"Bad answer {i}." for i in range(3)}
    hashes = {snapshot_create(campaign=campaign, method="majority", sources=s).content_hash
              for s in ("all", "people", "dataset")}
    assert len(hashes) == 3  # the sources are part of what a snapshot names
    # "all" keeps the header of a snapshot made before sources existed: no "sources" param.
    assert "sources" not in snapshot_create(campaign=campaign, method="majority").params
    # The command takes the same choice and prints the same snapshot's hash.
    out = io.StringIO()
    call_command("snapshot_create", campaign="src", method="majority", sources="dataset",
                 stdout=out, stderr=io.StringIO())
    dataset = snapshot_create(campaign=campaign, method="majority", sources="dataset")
    assert out.getvalue().strip() == dataset.content_hash
    assert dataset.params["sources"] == "dataset" and len(snapshot_rows(dataset)) == 3


# --- kept out of the people's work, tallies and quality tables -------------------------------

def test_dataset_annotators_get_no_work_and_stay_out_of_tallies_and_quality(db, tmp_path):
    campaign = CampaignFactory(name="q", overlap=1, calibration_rate=0.5)
    path = tmp_path / "pairs.jsonl"
    records = [_pair(i) for i in range(8)]
    records += [{"prompt": f"Gold {i}?", "responses": ["right", "wrong"], "gold": "A"}
                for i in range(4)]
    path.write_text(_jsonl(records))
    comparisons_import_file(campaign=campaign, source=path, label_source="ds")
    dataset_user = AnnotatorProfile.objects.get(kind="dataset").user
    with pytest.raises(ForbiddenError, match="no work"):
        assignment_issue_next(campaign=campaign, annotator=dataset_user)
    assert Judgment.objects.filter(annotator=dataset_user).count() == 8
    assert campaign_label_mix(campaign=campaign) == []  # the people's chart: nobody yet
    # Overlap 1: the labels used none of it, so one person still gets all eight regular items.
    (alice,) = make_users(1, prefix="alice")
    _judge_all(campaign, [alice], "A")
    done = Assignment.objects.filter(annotator=alice, comparison__kind="regular",
                                     status="completed").count()
    assert done == 8
    campaign_quality_recompute(campaign=campaign)
    assert list(AnnotatorQuality.objects.filter(campaign=campaign)
                .values_list("annotator__username", flat=True)) == [alice.username]
    people = Judgment.objects.filter(campaign=campaign, annotator=alice).count()
    assert CampaignQuality.objects.get(campaign=campaign).n_judgments == people
    assert sum(b.size for b in campaign_label_mix(campaign=campaign)) == people
    frame = judgment_frame(campaign=campaign)
    assert dataset_user.pk not in frame.annotator_ids and frame.annotator_ids == [alice.pk]
    assert dataset_annotator_ids() == {dataset_user.pk}


def test_agreement_of_each_person_with_the_dataset_labels(db, tmp_path):
    campaign = CampaignFactory(name="agree", overlap=2)
    path = tmp_path / "pairs.jsonl"
    path.write_text(_jsonl([_pair(i) for i in range(4)]))
    comparisons_import_file(campaign=campaign, source=path, label_source="hh")
    bob, carol = make_users(2, prefix="p")
    # bob agrees with the dataset (A) on 3 of 4, carol on none.
    for user in (bob, carol):
        n = 0
        while (a := assignment_issue_next(campaign=campaign, annotator=user)) is not None:
            choice = "A" if user is bob and n < 3 else "B"
            judgment_submit(assignment=a, annotator=user, choice=choice, strength=2,
                            idempotency_key=str(a.token), seconds_spent=1.0)
            n += 1
    rows = {r.username: r for r in source_agreement_list(campaign=campaign)}
    assert set(rows) == {bob.username, carol.username}
    assert (rows[bob.username].n, rows[bob.username].n_agree) == (4, 3)
    assert rows[bob.username].agreement == 0.75 and rows[bob.username].source == "hh"
    low, high = rows[bob.username].ci
    assert low < 0.75 < high
    assert rows[carol.username].agreement == 0.0
    # The quality report carries it per annotator; the dataset itself is no annotator there.
    out = io.StringIO()
    call_command("quality_report", "--campaign", "agree", "--recompute", stdout=out)
    text = out.getvalue()
    assert "agreement with hh labels 0.75 (n=4)" in text
    report = json.loads(text.strip().splitlines()[-1])
    by_name = {a["username"]: a for a in report["annotators"]}
    assert set(by_name) == {bob.username, carol.username}
    assert by_name[bob.username]["source_agreement"]["hh"]["agreement"] == 0.75
    assert by_name[carol.username]["source_agreement"]["hh"]["n"] == 4


# --- context shown to annotators; calibration items alike ------------------------------------

def test_context_reaches_the_annotator_on_regular_and_calibration_items_alike(db, tmp_path):
    campaign = CampaignFactory(name="ctx", overlap=1, calibration_rate=0.5)
    path = tmp_path / "ctx.jsonl"
    path.write_text(_jsonl([
        {"prompt": "Summarise.", "responses": ["short", "long"], "context": "Passage *one*."},
        {"prompt": "Gold?", "responses": ["right", "wrong"], "gold": "A",
         "context": ["P1", "P2"]},
        {"prompt": "Plain?", "responses": ["x", "y"]},
    ]))
    result = comparisons_import_file(campaign=campaign, source=path)
    assert result.extra_fields == {"context": 2} and result.warnings == []
    views = {}
    for comparison in Comparison.objects.filter(campaign=campaign):
        assignment = Assignment(comparison=comparison, a_on_left=True,
                                expires_at=comparison.created_at)
        views[comparison.prompt.turns[0]["content"]] = comparison_for_annotator(
            assignment=assignment)
    assert views["Summarise."].context == ["Passage *one*."]
    assert views["Gold?"].context == ["P1", "P2"]
    assert views["Plain?"].context == []


def test_the_next_api_returns_the_context(client_for, cast):
    campaign = CampaignFactory(name="ctx-api", overlap=1)
    prompt = Prompt.objects.create(campaign=campaign, turns=[{"role": "user", "content": "Q"}],
                                   extra={"context": "Retrieved: the sky is blue."})
    a = prompt.responses.create(text="one")
    b = prompt.responses.create(text="two")
    Comparison.objects.create(campaign=campaign, prompt=prompt, response_a=a, response_b=b)
    resp = client_for("annotator").post(f"/api/campaigns/{campaign.pk}/next/")
    assert resp.status_code == 200
    assert resp.json()["context"] == ["Retrieved: the sky is blue."]


# --- skip-invalid: command, API, admin -------------------------------------------------------

BAD_FILE = [_pair(1), "{not json", _pair(3, context=7), _pair(4, notes="kept")]


def test_skip_invalid_command_imports_the_valid_rows_and_writes_the_refused_ones(db, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(_jsonl(BAD_FILE))
    with pytest.raises(CommandError, match="line 2, field '\\(json\\)'"):
        call_command("import_comparisons", str(path), campaign="skip", create=True)
    assert not Campaign.objects.filter(name="skip").exists()  # default: all or nothing

    call_command("import_comparisons", str(path), campaign="skip", create=True,
                 skip_invalid=True)
    campaign = Campaign.objects.get(name="skip")
    assert campaign.comparisons.count() == 2
    assert Prompt.objects.get(campaign=campaign, extra__notes="kept")
    refused = [json.loads(line) for line in
               (tmp_path / "bad.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in refused] == [(2, "(json)"), (3, "context")]
    assert refused[0]["row"] == "{not json"  # the raw text of a line that is not JSON
    assert refused[1]["row"]["context"] == 7 and "list of strings" in refused[1]["message"]


def test_skip_invalid_refuses_a_file_with_no_valid_row(db, tmp_path):
    path = tmp_path / "allbad.jsonl"
    path.write_text(_jsonl(["{x", {"prompt": "only"}]))
    with pytest.raises(CommandError, match="no valid rows \\(2 refused\\)"):
        call_command("import_comparisons", str(path), campaign="none", create=True,
                     skip_invalid=True, rejects=str(tmp_path / "r.jsonl"))
    assert Prompt.objects.count() == 0


def test_skip_invalid_api_upload_names_rejects_labels_and_unknown_fields(client_for, cast):
    campaign = CampaignFactory(name="skip-api")
    url = f"/api/campaigns/{campaign.pk}/import/"
    upload = SimpleUploadedFile("bad.jsonl", _jsonl(BAD_FILE).encode())
    resp = client_for("researcher").post(url, {"file": upload})
    assert resp.status_code == 400 and campaign.comparisons.count() == 0
    upload = SimpleUploadedFile("bad.jsonl", _jsonl(BAD_FILE).encode())
    resp = client_for("researcher").post(url, {"file": upload, "skip_invalid": "true",
                                               "source": "org/data"})
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert (body["comparisons"], body["labels"], body["rejected"]) == (2, 2, 2)
    assert body["label_sources"] == {"org/data": 2}
    assert body["extra_fields"] == {"notes": 1}
    assert [(r["line"], r["field"]) for r in body["rejects"]] == [(2, "(json)"), (3, "context")]
    assert any("notes (1 rows)" in w for w in body["warnings"])
    assert any("2 invalid rows were skipped" in w for w in body["warnings"])


def test_skip_invalid_admin_upload_imports_the_valid_rows(client_for, cast):
    campaign = CampaignFactory(name="skip-admin")
    admin = client_for("admin")
    upload = SimpleUploadedFile("bad.jsonl", _jsonl(BAD_FILE).encode())
    resp = admin.post("/admin/annotation/campaign/import/",
                      {"campaign": campaign.pk, "file": upload})
    assert resp.status_code == 400 and campaign.comparisons.count() == 0
    upload = SimpleUploadedFile("bad.jsonl", _jsonl(BAD_FILE).encode())
    resp = admin.post("/admin/annotation/campaign/import/",
                      {"campaign": campaign.pk, "file": upload, "skip_invalid": "on"},
                      follow=True)
    assert resp.status_code == 200 and campaign.comparisons.count() == 2
    text = resp.content.decode()
    assert "2 source labels kept" in text and "Skipped line 3, field &#x27;context&#x27;" in text


def test_csv_columns_label_and_extra_fields(db):
    """CSV: ``label`` as digits or a choice; every other filled column is kept as text."""
    text = ("prompt,response_a,response_b,label,notes,context\n"
            "Q1?,one,two,1,first note,Some passage.\n"
            "Q2?,three,four,A,,\n")
    rows = importers.parse_text(text, fmt="csv", max_rows=10)
    assert [r.labels for r in rows] == [{0: "B"}, {0: "A"}]
    assert rows[0].extra == {"notes": "first note", "context": "Some passage."}
    assert rows[1].extra == {}  # empty cells are absent, not empty strings


def test_a_dataset_with_context_passages_and_missing_values_imports(db, tmp_path):
    """A parquet file: a list column of passages shows as context; NaN and absent values are
    stored as null or left out, never refused by jsonb."""
    import datasets

    ds = datasets.Dataset.from_list([
        {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away.",
         "context": ["Greeting etiquette.", "Be kind."], "score": 0.5},
        {"prompt": "Bye?", "chosen": "Goodbye.", "rejected": "No.", "context": None,
         "score": float("nan")},
    ])
    ds.to_parquet(str(tmp_path / "ds.parquet"))
    campaign = CampaignFactory(name="pq")
    result = comparisons_import_file(campaign=campaign, source=tmp_path / "ds.parquet")
    assert (result.labels, result.label_sources) == (2, {"ds.parquet": 2})
    extras = {p.turns[0]["content"]: p.extra for p in Prompt.objects.filter(campaign=campaign)}
    assert extras == {"Hi?": {"context": ["Greeting etiquette.", "Be kind."], "score": 0.5},
                      "Bye?": {"score": None}}  # NaN is kept as null; an absent column is not
    assert result.extra_fields == {"context": 1, "score": 2}


def test_export_api_exports_the_chosen_sources(db, client_for, settings, tmp_path,
                                               django_capture_on_commit_callbacks):
    """POST .../exports/ with sources=dataset gives the imported labels alone, on the worker."""
    from annotation.models import Campaign, PreferenceExport
    from annotation.services.imports import comparisons_import_file

    settings.GAPLAB_EXPORT_DIR = tmp_path
    campaign = Campaign.objects.create(name="export-sources")
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        '{"prompt": "2+2?", "chosen": "4", "rejected": "5", "source": "mini"}\n'
        '{"prompt": "3+3?", "chosen": "6", "rejected": "7", "source": "mini"}\n')
    comparisons_import_file(campaign=campaign, source=data)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client_for("researcher").post(
            f"/api/campaigns/{campaign.pk}/exports/", {"format": "jsonl", "sources": "dataset"},
            content_type="application/json")
    assert answer.status_code == 202 and answer.json()["sources"] == "dataset"
    export = PreferenceExport.objects.get(pk=answer.json()["id"])
    assert export.status == PreferenceExport.Status.SUCCEEDED and export.row_count == 2
    bad = client_for("researcher").post(
        f"/api/campaigns/{campaign.pk}/exports/", {"sources": "robots"},
        content_type="application/json")
    assert bad.status_code == 400 and "sources" in bad.json()
