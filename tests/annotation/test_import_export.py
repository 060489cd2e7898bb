"""Import is all-or-nothing with errors naming line and field; export is TRL's format."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation import importers
from annotation.models import Comparison, Prompt, Response
from annotation.services import (
    assignment_issue_next,
    comparisons_import,
    judgment_submit,
)
from tests.factories import CampaignFactory, make_users
from tests.shared_data import SHARED_DATA

HH_SAMPLE = SHARED_DATA / "hh_rlhf_sample.jsonl"
LIMITS = {"max_bytes": 10_000_000, "max_rows": 10_000}


def _good(i: int) -> dict:
    return {"prompt": f"Question {i}?", "responses": [f"Answer {i} one.", f"Answer {i} two."]}


def _jsonl(records: list) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


def test_hh_transcript_is_split_into_turns():
    turns = importers.parse_hh_transcript(
        "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant:"
    )
    assert turns == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke"},
    ]


def test_real_hh_sample_parses_with_multi_turn_prompts():
    rows = importers.parse_path(HH_SAMPLE, fmt=None, **LIMITS)
    assert len(rows) == 1303
    assert max(len(r.turns) for r in rows) >= 5
    assert all(r.turns[-1]["role"] == "user" and len(r.responses) == 2 for r in rows)


def test_whole_hh_transcripts_without_prompt_share_a_prefix():
    prefix = "\n\nHuman: Is the sky blue?\n\nAssistant:"
    row = importers.parse_record({"chosen": prefix + " Yes.", "rejected": prefix + " No."}, 1)
    assert row.turns == [{"role": "user", "content": "Is the sky blue?"}]
    assert [r.text for r in row.responses] == ["Yes.", "No."]
    with pytest.raises(importers._RowError, match="different prefixes"):
        importers.parse_record(
            {"chosen": prefix + " Yes.", "rejected": "\n\nHuman: Other?\n\nAssistant: No."}, 1
        )


def test_a_bad_line_57_imports_nothing_and_the_error_names_it(db, tmp_path):
    campaign = CampaignFactory(name="c57")
    records = [_good(i) for i in range(1, 61)]
    records[56] = {"prompt": "Question 57?", "responses": ["only one"]}
    path = tmp_path / "bad.jsonl"
    path.write_text(_jsonl(records))
    with pytest.raises(CommandError) as excinfo:
        call_command("import_comparisons", str(path), campaign="c57")
    assert "line 57, field 'responses'" in str(excinfo.value)
    assert Prompt.objects.count() == Response.objects.count() == Comparison.objects.count() == 0
    # The same file through the service path parses nothing either.
    with pytest.raises(importers.ImportFileError) as parsed:
        importers.parse_path(path, fmt=None, **LIMITS)
    assert parsed.value.errors == [
        "line 57, field 'responses': needs a list of at least two responses"
    ]
    assert campaign.comparisons.count() == 0


def test_invalid_json_and_several_bad_lines_are_all_reported():
    text = _jsonl([_good(1), "{not json", _good(3), {"prompt": "", "responses": ["a", "b"]}])
    with pytest.raises(importers.ImportFileError) as excinfo:
        importers.parse_text(text, fmt="jsonl", max_rows=100)
    errors = excinfo.value.errors
    assert errors[0].startswith("line 2, field '(json)'")
    assert errors[1].startswith("line 4, field 'prompt'")


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"prompt": "q", "responses": ["a", "b"], "gold": "C"}, "gold"),
        ({"prompt": "q", "responses": ["a", "b", "c"], "gold": "A"}, "gold"),
        ({"prompt": "q", "responses": ["a", "b"], "kind": "calibration"}, "gold"),
        ({"prompt": "q", "responses": ["a", "b"], "kind": "regular", "gold": "A"}, "gold"),
        ({"prompt": "q", "responses": ["a", "a"]}, "responses"),
        ({"prompt": [{"role": "robot", "content": "x"}], "responses": ["a", "b"]}, "prompt"),
        ({"responses": ["a", "b"]}, "prompt"),
        ({"prompt": "q", "responses": ["a", "b"], "kind": "gold"}, "kind"),
    ],
)
def test_field_errors_name_the_field(record, field):
    with pytest.raises(importers._RowError) as excinfo:
        importers.parse_record(record, 1)
    assert excinfo.value.field_name == field


def test_csv_with_a_multiline_field_reports_the_record_start_line():
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["prompt", "response_a", "response_b", "gold", "category"])
    writer.writerow(["Line one\nline two?", "a", "b", "", "math"])
    writer.writerow(["Third?", "a", "", "", ""])
    with pytest.raises(importers.ImportFileError) as excinfo:
        importers.parse_text(buf.getvalue(), fmt="csv", max_rows=10)
    assert excinfo.value.errors == [
        "line 4, field 'responses': needs a list of at least two responses"
    ]


def test_three_responses_become_every_pair_and_gold_makes_calibration(db):
    campaign = CampaignFactory()
    rows = importers.parse_text(
        _jsonl([
            {"prompt": [{"role": "user", "content": "Pick"}], "category": "x",
             "responses": ["one", {"text": "two", "model": "m", "version": "1"}, "three"]},
            {"prompt": "2+2?", "responses": ["4", "5"], "gold": "A"},
        ]),
        fmt="jsonl", max_rows=10,
    )
    result = comparisons_import(campaign=campaign, rows=rows)
    assert (result.comparisons, result.calibration, result.responses) == (4, 1, 5)
    assert Response.objects.get(text="two").source_model == "m"
    gold = Comparison.objects.get(kind="calibration")
    assert gold.gold_choice == "A" and gold.response_a.text == "4"


def test_size_and_row_limits_are_enforced(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(_jsonl([_good(i) for i in range(50)]))
    with pytest.raises(importers.ImportFileError, match="limit"):
        importers.parse_path(path, fmt=None, max_bytes=100, max_rows=1000)
    with pytest.raises(importers.ImportFileError, match="more than 10 rows"):
        importers.parse_path(path, fmt=None, max_bytes=10**6, max_rows=10)


def test_huggingface_dataset_imports(db, tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(
        [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."},
         {"prompt": "Bye?", "chosen": "Goodbye.", "rejected": "No."}]
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    ds.to_parquet(str(tmp_path / "ds.parquet"))
    campaign = CampaignFactory(name="hf")
    call_command("import_comparisons", str(tmp_path / "ds"), campaign="hf")
    assert campaign.comparisons.count() == 2
    rows = importers.parse_path(tmp_path / "ds.parquet", fmt=None, **LIMITS)
    assert len(rows) == 2


def _judge_all(campaign, users, choices):
    """Each user answers every comparison; choices[user_index] is the canonical choice."""
    for user, choice in zip(users, choices, strict=True):
        while (a := assignment_issue_next(campaign=campaign, annotator=user)) is not None:
            judgment_submit(assignment=a, annotator=user, choice=choice, strength=2,
                            idempotency_key=str(a.token), seconds_spent=1.0)


def test_export_writes_trl_preferences_by_majority(db, tmp_path):
    campaign = CampaignFactory(name="exp", overlap=3)
    rows = importers.parse_text(
        _jsonl([{"prompt": "\n\nHuman: Hi\n\nAssistant:", "responses": ["Hello!", "Meh."]}]),
        fmt="jsonl", max_rows=10,
    )
    comparisons_import(campaign=campaign, rows=rows)
    _judge_all(campaign, make_users(3), ["B", "B", "A"])
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", campaign="exp", out=str(out))
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["prompt"] == [{"role": "user", "content": "Hi"}]
    assert row["chosen"] == [{"role": "assistant", "content": "Meh."}]
    assert row["rejected"] == [{"role": "assistant", "content": "Hello!"}]
    assert row["agreement"] == pytest.approx(2 / 3, abs=1e-3) and row["n_judgments"] == 3

    import datasets

    call_command("export_preferences", campaign="exp", out=str(tmp_path / "ds"), format="dataset")
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert ds.column_names[:3] == ["prompt", "chosen", "rejected"] and len(ds) == 1


def test_ties_and_calibration_items_are_not_exported(db, tmp_path):
    campaign = CampaignFactory(name="tie", overlap=2)
    rows = importers.parse_text(
        _jsonl([{"prompt": "q", "responses": ["x", "y"]},
                {"prompt": "g", "responses": ["4", "5"], "gold": "A"}]),
        fmt="jsonl", max_rows=10,
    )
    comparisons_import(campaign=campaign, rows=rows)
    _judge_all(campaign, make_users(2), ["A", "B"])
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", campaign="tie", out=str(out))
    assert out.read_text() == ""


def test_api_import_and_admin_upload_are_all_or_nothing(client_for, cast):
    campaign = CampaignFactory(name="up")
    bad = _jsonl([_good(i) for i in range(1, 57)] + [{"prompt": "x"}] + [_good(58)])
    upload = SimpleUploadedFile("bad.jsonl", bad.encode())
    resp = client_for("researcher").post(f"/api/campaigns/{campaign.pk}/import/", {"file": upload})
    assert resp.status_code == 400
    assert "line 57, field 'responses'" in resp.json()["detail"]
    admin = client_for("admin")
    upload = SimpleUploadedFile("bad.jsonl", bad.encode())
    resp = admin.post("/admin/annotation/campaign/import/",
                      {"campaign": campaign.pk, "file": upload})
    assert resp.status_code == 400 and "line 57, field" in resp.content.decode()
    assert campaign.comparisons.count() == 0
    good = SimpleUploadedFile("good.jsonl", _jsonl([_good(1), _good(2)]).encode())
    resp = client_for("researcher").post(f"/api/campaigns/{campaign.pk}/import/", {"file": good})
    assert resp.status_code == 201 and resp.json()["comparisons"] == 2
