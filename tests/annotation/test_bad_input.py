"""Hostile input never gives a 500: imports answer 4xx naming line and field, and write nothing;
URLs holding NUL, lone surrogates or bytes that are not UTF-8 answer 400 naming the parameter.

Every import case runs through both upload doors (the REST API and the Django admin), on the
real PostgreSQL the app stores into, since it is PostgreSQL that refuses NUL.
"""

from __future__ import annotations

import csv
import html
import io
import json

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from annotation.models import Campaign, Comparison, Prompt, Response
from tests.factories import CampaignFactory

GOOD = {"prompt": "What is 2 + 2?", "responses": ["4", "5"]}
CSV_HEADER = "prompt,response_a,response_b\n"
HUGE = 140_000  # past the csv module's 131,072-character field limit


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    # The import API allows GAPLAB_THROTTLE_IMPORT uploads per user; its counters live in the
    # cache, which outlives a test's database transaction.
    cache.clear()


def _jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _good_line(i: int = 1) -> str:
    return json.dumps({"prompt": f"Question {i}?", "responses": [f"A{i}", f"B{i}"]})


# (name, file name, bytes, text the error must hold: line and field)
BAD_FILES = [
    ("nul-in-string", "bad.jsonl",
     _jsonl(_good_line(), '{"prompt": "a\\u0000b", "responses": ["x", "y"]}'),
     "line 2, field 'prompt': holds a NUL character"),
    ("lone-surrogate-in-response", "bad.jsonl",
     _jsonl(_good_line(), _good_line(2), '{"prompt": "q", "responses": ["x", "y\\ud800"]}'),
     "line 3, field 'responses[1]': holds a lone surrogate"),
    ("lone-surrogate-in-turn", "bad.jsonl",
     _jsonl('{"prompt": [{"role": "user", "content": "\\udfff"}], "responses": ["x", "y"]}'),
     "line 1, field 'prompt[0].content': holds a lone surrogate"),
    ("nul-in-a-key", "bad.jsonl",
     _jsonl('{"prompt": "q", "responses": ["x", "y"], "meta": {"k\\u0000": 1}}'),
     "line 1, field 'meta.k\\x00': its name holds a NUL character"),
    ("nested-100000-deep-in-a-field", "bad.jsonl",
     _jsonl(_good_line(),
            '{"prompt": "q", "responses": ["x", "y"], "extra": '
            + "[" * 100_000 + "]" * 100_000 + "}"),
     "line 2, field 'extra': is nested deeper than 20 levels"),
    ("nested-100000-deep-bare", "bad.jsonl",
     _jsonl("[" * 100_000 + "]" * 100_000),
     "line 1, field '(json)': is nested deeper than 20 levels"),
    ("number-with-5000-digits", "bad.jsonl",
     _jsonl('{"prompt": "q", "responses": ["x", "y"], "n": ' + "9" * 5000 + "}"),
     "line 1, field '(json)': invalid JSON (a number has too many digits)"),
    ("bytes-not-utf8-jsonl", "bad.jsonl",
     b'{"prompt": "q", "responses": ["x", "y"]}\n{"prompt": "q\xff", "responses": ["x", "y"]}\n',
     "line 2, field 'prompt': holds a byte that is not UTF-8 (0xff)"),
    ("csv-field-over-limit", "bad.csv",
     (CSV_HEADER + "q,a,b\nq2,a," + "x" * HUGE + "\nq3,a,b\n").encode(),
     "line 3, field 'response_b': cannot be read as CSV (field larger than field limit"),
    ("csv-quoted-field-over-limit", "bad.csv",
     (CSV_HEADER + 'q,a,b\n"q2","' + "y" * HUGE + '",b\n').encode(),
     "line 3, field 'response_a': cannot be read as CSV (field larger than field limit"),
    ("csv-nul-byte", "bad.csv",
     (CSV_HEADER + "q,a,b\nq\x002,a,b\n").encode(),
     "line 3, field 'prompt': holds a NUL character"),
    ("csv-nul-in-header", "bad.csv",
     b"prompt,response_a,resp\x00onse_b\nq,a,b\n",
     "line 1, field 'header column 3': holds a NUL character"),
    ("csv-bytes-not-utf8", "bad.csv",
     (CSV_HEADER.encode() + b"q,a,b\nq2,a\xed\xa0\x80,b\n"),
     "line 3, field 'response_a': holds a byte that is not UTF-8 (0xed)"),
]


def _counts() -> tuple[int, int, int]:
    return Prompt.objects.count(), Response.objects.count(), Comparison.objects.count()


@pytest.mark.parametrize(("name", "filename", "data", "expected"), BAD_FILES,
                         ids=[case[0] for case in BAD_FILES])
def test_bad_file_through_the_api_is_a_400_naming_line_and_field(
    client_for, name, filename, data, expected,
):
    """The API answers 400 with the line and field, in JSON that encodes; nothing is written."""
    campaign = CampaignFactory()
    before = _counts()
    resp = client_for("researcher").post(
        f"/api/campaigns/{campaign.pk}/import/",
        {"file": SimpleUploadedFile(filename, data)},
    )
    assert resp.status_code == 400, resp.content[:300]
    body = resp.json()
    assert expected in body["detail"]
    assert any(expected in error for error in body["errors"])
    assert _counts() == before


@pytest.mark.parametrize(("name", "filename", "data", "expected"), BAD_FILES,
                         ids=[case[0] for case in BAD_FILES])
def test_bad_file_through_the_admin_is_a_400_naming_line_and_field(
    client_for, name, filename, data, expected,
):
    """The admin upload re-renders its form with status 400 and the error; nothing is written."""
    campaign = CampaignFactory()
    before = _counts()
    resp = client_for("admin").post(
        "/admin/annotation/campaign/import/",
        {"campaign": campaign.pk, "file": SimpleUploadedFile(filename, data)},
    )
    assert resp.status_code == 400
    assert expected in html.unescape(resp.content.decode())
    assert _counts() == before


def test_a_good_file_still_imports_through_both_doors(client_for):
    """The checks refuse only what cannot be stored: tabs, emoji, U+2028 and CSV quotes pass."""
    campaign = CampaignFactory()
    line = json.dumps({"prompt": "tab\there \u2028 and \U0001f600",
                       "responses": ["x\u0085y", "caf\u00e9"]}, ensure_ascii=False)
    resp = client_for("researcher").post(
        f"/api/campaigns/{campaign.pk}/import/",
        {"file": SimpleUploadedFile("good.jsonl", _jsonl(line, _good_line(2)))},
    )
    assert resp.status_code == 201, resp.content
    assert resp.json()["comparisons"] == 2
    prompt = Prompt.objects.get(campaign=campaign, turns__0__content__startswith="tab")
    assert prompt.turns[0]["content"] == "tab\there \u2028 and \U0001f600"
    resp = client_for("admin").post(
        "/admin/annotation/campaign/import/",
        {"campaign": campaign.pk, "file": SimpleUploadedFile(
            "good.csv", (CSV_HEADER + '"a, quoted ""prompt""",x,y\n').encode())},
    )
    assert resp.status_code == 302
    assert campaign.comparisons.count() == 3


def test_a_bad_dataset_upload_names_the_upload_not_the_server_temp_file(client_for):
    """A dataset the reader refuses is a 400 that calls the file by the name it was sent as."""
    campaign = CampaignFactory()
    resp = client_for("researcher").post(
        f"/api/campaigns/{campaign.pk}/import/",
        {"file": SimpleUploadedFile("mine.parquet", b"this is not parquet at all")},
    )
    assert resp.status_code == 400
    detail = resp.json()["detail"]
    assert detail.startswith("mine.parquet: cannot read the dataset")
    assert "/tmp" not in detail and "tmp" not in detail.split("(")[0]
    assert campaign.comparisons.count() == 0


def test_a_dataset_row_with_nul_names_the_row_and_field(client_for, tmp_path):
    """Rows of a Hugging Face dataset get the same string checks, numbered as rows."""
    import datasets

    path = tmp_path / "rows.parquet"
    datasets.Dataset.from_list([
        {"prompt": "fine", "chosen": "yes", "rejected": "no"},
        {"prompt": "bad", "chosen": "ye\x00s", "rejected": "no"},
    ]).to_parquet(str(path))
    campaign = CampaignFactory()
    resp = client_for("researcher").post(
        f"/api/campaigns/{campaign.pk}/import/",
        {"file": SimpleUploadedFile("rows.parquet", path.read_bytes())},
    )
    assert resp.status_code == 400
    assert "row 2, field 'chosen': holds a NUL character" in resp.json()["detail"]
    assert campaign.comparisons.count() == 0


def test_the_command_with_create_leaves_no_campaign_behind_on_a_bad_file(db, tmp_path):
    """import_comparisons --create makes the campaign in the import's transaction."""
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_jsonl(_good_line(), '{"prompt": "\\u0000", "responses": ["x", "y"]}'))
    with pytest.raises(CommandError, match="line 2, field 'prompt': holds a NUL"):
        call_command("import_comparisons", str(path), campaign="fresh", create=True)
    assert not Campaign.objects.filter(name="fresh").exists()
    assert _counts() == (0, 0, 0)


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("/quality/campaigns/{id}/annotators/a%00b/", "URL parameter 'username' holds a NUL"),
    ("/quality/campaigns/{id}/annotators/annotator/unpause/%00/", "the URL path holds a NUL"),
    ("/quality/campaigns/{id}/?tab=%00", "query parameter 'tab' holds a NUL"),
    ("/quality/campaigns/{id}/?tab=%ff", "query parameter 'tab' is not valid UTF-8"),
    ("/quality/campaigns/{id}/?t%00b=1", "the name of query parameter 't\\x00b' is not valid"),
])
def test_a_url_with_nul_or_bad_bytes_is_a_400_naming_the_parameter(client_for, url, expected):
    campaign = CampaignFactory()
    resp = client_for("admin").get(url.format(id=campaign.pk))
    assert resp.status_code == 400
    assert resp["Content-Type"].startswith("text/plain")
    assert expected in resp.content.decode()


def test_an_api_url_with_nul_is_a_json_400(client_for):
    campaign = CampaignFactory()
    resp = client_for("researcher").get(f"/api/campaigns/{campaign.pk}/judgments/?limit=%00")
    assert resp.status_code == 400
    assert resp.json() == {"detail": "query parameter 'limit' holds a NUL character or a lone "
                                     "surrogate"}


def test_clean_urls_pass_the_guard(client_for, cast):
    """Percent-encoded UTF-8 (an accented name) is ordinary text, not a bad request."""
    campaign = CampaignFactory()
    client = client_for("admin")
    assert client.get(f"/quality/campaigns/{campaign.pk}/?tab=caf%C3%A9&x=a+b").status_code == 200
    resp = client.get(f"/quality/campaigns/{campaign.pk}/annotators/Jos%C3%A9/")
    assert resp.status_code == 404  # no such annotator: the view ran and answered
    resp = client.get(f"/quality/campaigns/{campaign.pk}/annotators/{cast['annotator']}/")
    assert resp.status_code == 200


@pytest.mark.parametrize("name", ["a%ff", "%ED%A0%80"])
def test_path_bytes_that_are_not_utf8_reach_the_view_as_ascii(client_for, name):
    """Django re-percent-encodes them, so the lookup is of plain text: a 404, never a 500."""
    campaign = CampaignFactory()
    resp = client_for("admin").get(f"/quality/campaigns/{campaign.pk}/annotators/{name}/")
    assert resp.status_code == 404


# --- Fuzz -----------------------------------------------------------------------------------

# Strings that cover what broke before: NUL and other controls, lone surrogates (written out by
# json.dumps as \ud800 escapes), line separators, quotes and commas for CSV, long runs.
_NASTY = st.sampled_from(["\x00", "\ud800", "\udfff", "\udc80", "\x1c", "\u2028", "\x85",
                          "\r", "\n", '"', ",", "\\", "\ufeff", "\U0001f600", "é"])
_TEXT = st.lists(st.one_of(st.text(max_size=12), _NASTY), max_size=6).map("".join)
_LONG = st.sampled_from([0, 10, 131_073, 140_000]).map(lambda n: "z" * n)
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _TEXT)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=12,
)
_FIELD = st.one_of(_TEXT, _JSON, _LONG)
_RECORD = st.fixed_dictionaries(
    {"prompt": st.one_of(_TEXT, st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "x"]), "content": _TEXT}),
        max_size=3))},
    optional={"responses": st.lists(_FIELD, max_size=4), "gold": _FIELD, "kind": _FIELD,
              "chosen": _FIELD, "rejected": _FIELD, "category": _FIELD, "meta": _JSON},
)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


@st.composite
def _jsonl_bytes(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["record", "record", "json", "deep", "raw"]))
        if kind == "record":
            lines.append(json.dumps(draw(_RECORD)))  # ensure_ascii: surrogates as escapes
        elif kind == "json":
            lines.append(json.dumps(draw(_JSON)))
        elif kind == "deep":
            depth = draw(st.sampled_from([19, 20, 21, 999, 100_000]))
            lines.append('{"prompt": "q", "responses": ["a", "b"], "x": ' + _deep(depth) + "}")
        else:
            lines.append(draw(_TEXT))
    data = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):  # splice raw bytes: bad UTF-8, NUL, structure
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=6)) + data[at:]
    return data


@st.composite
def _csv_bytes(draw) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    header = draw(st.sampled_from([
        ["prompt", "response_a", "response_b"], ["prompt", "chosen", "rejected", "gold"],
        ["prompt", "response_a", "response_b", "response_c", "kind"],
    ]))
    writer.writerow(header)
    for _ in range(draw(st.integers(0, 4))):
        width = len(header) + draw(st.integers(-1, 1))
        writer.writerow([draw(st.one_of(_TEXT, _LONG)) for _ in range(max(width, 0))])
    data = out.getvalue().encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=6)) + data[at:]
    return data


@pytest.fixture
def researcher_client(client_for):
    # Logged in once for all examples: a login costs more than most uploads.
    return client_for("researcher")


@pytest.mark.slow
@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(payload=st.one_of(_jsonl_bytes().map(lambda d: ("f.jsonl", d)),
                         _csv_bytes().map(lambda d: ("f.csv", d))))
def test_fuzzed_import_files_never_give_a_5xx(researcher_client, payload):
    """Whatever the bytes: 201 and rows written, or a 400 with errors and nothing written."""
    filename, data = payload
    cache.clear()  # see _fresh_throttle_counts: 200 uploads by one user within a second
    campaign = Campaign.objects.get_or_create(name="fuzz")[0]
    before = _counts()
    resp = researcher_client.post(
        f"/api/campaigns/{campaign.pk}/import/",
        {"file": SimpleUploadedFile(filename, data)},
    )
    assert resp.status_code < 500, (data[:200], resp.content[:300])
    event(f"HTTP {resp.status_code}")
    if resp.status_code == 201:
        assert _counts()[2] == before[2] + resp.json()["comparisons"]
    else:
        assert resp.status_code == 400
        body = resp.json()
        if data:
            assert body["errors"] and all(isinstance(e, str) for e in body["errors"])
        else:  # the serializer refuses an empty upload before the importer sees it
            assert body["file"]
        assert _counts() == before


@pytest.mark.parametrize(("name", "filename", "data", "expected"), BAD_FILES,
                         ids=[case[0] for case in BAD_FILES])
def test_bad_file_with_skip_invalid_imports_the_good_rows_or_is_a_400(
    client_for, name, filename, data, expected,
):
    """skip_invalid: the bad row comes back as a reject naming its line and field and the good
    rows import; a file with no good row, or one the CSV reader loses its place in, stays a 400
    and writes nothing. Never a 500."""
    campaign = CampaignFactory()
    before = _counts()
    resp = client_for("researcher").post(
        f"/api/campaigns/{campaign.pk}/import/",
        {"file": SimpleUploadedFile(filename, data), "skip_invalid": "true"},
    )
    line, field = expected.split(":", 1)[0].split(", field ")
    if resp.status_code == 201:
        body = resp.json()
        assert body["comparisons"] >= 1 and body["rejected"] >= 1
        assert (int(line.split()[1]), field.strip("'")) in {
            (r["line"], r["field"]) for r in body["rejects"]}
        assert _counts()[2] == before[2] + body["comparisons"]
    else:
        assert resp.status_code == 400, resp.content[:300]
        assert expected in resp.json()["detail"]
        assert _counts() == before


def test_the_rejects_file_keeps_hostile_rows_as_escaped_json(db, tmp_path):
    """NUL and lone surrogates survive in the rejects file as JSON escapes, one valid JSON
    object a line; invalid JSON is kept as its raw text."""
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(_jsonl(
        _good_line(),
        '{"prompt": "a\\u0000b", "responses": ["x", "y"]}',
        '{"prompt": "q", "responses": ["x", "y\\ud800"]}',
        '{"prompt": "q", "responses": ["x", "y"]',
    ) + b'{"prompt": "q\xff", "responses": ["x", "y"]}\n')
    out = tmp_path / "refused.jsonl"
    call_command("import_comparisons", str(path), campaign="hostile", create=True,
                 skip_invalid=True, rejects=str(out))
    assert Comparison.objects.filter(campaign__name="hostile").count() == 1
    refused = [json.loads(line) for line in out.read_text(encoding="ascii").splitlines()]
    assert [(r["line"], r["field"]) for r in refused] == [
        (2, "prompt"), (3, "responses[1]"), (4, "(json)"), (5, "prompt")]
    assert refused[0]["row"]["prompt"] == "a\x00b"
    assert refused[1]["row"]["responses"][1] == "y\ud800"
    assert refused[2]["row"] == '{"prompt": "q", "responses": ["x", "y"]'
    assert refused[3]["row"]["prompt"] == "q\udcff"  # the byte 0xff, as surrogateescape reads it
    assert "not UTF-8 (0xff)" in refused[3]["message"]
