"""Parse comparison files (JSONL, CSV, Hugging Face ``datasets``) into validated rows. No ORM.

Every row is checked before anything is written, and an error names the line (or dataset row)
and the field, so an import is all-or-nothing. Accepted fields per row:

- ``prompt``: a string (an HH-style transcript ``"\\n\\nHuman: ...\\n\\nAssistant:"`` is split
  into turns; any other string is one user turn) or a list of ``{"role", "content"}`` turns;
- ``responses``: two or more strings or ``{"text", "model", "version", "run"}`` objects; or
  ``chosen`` + ``rejected`` (TRL / HH style; without ``prompt`` both may be whole HH transcripts
  sharing one prefix); CSV uses ``response_a``, ``response_b``, ``response_c`` ...;
- optional ``gold`` (A, B, tie, both_bad; two responses only) with an optional tolerance
  ``accepts`` (e.g. ``["A", "tie"]``; CSV ``A|tie``), which makes the comparison a known-answer
  calibration item; optional ``kind`` (regular, calibration, eval), ``category``, ``id``,
  ``source``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

CHOICES = ("A", "B", "tie", "both_bad")
KINDS = ("regular", "calibration", "eval")
ROLES = ("system", "user", "assistant")
MAX_RESPONSES = 8
MAX_ERRORS_REPORTED = 20
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


class ImportFileError(Exception):
    """The file cannot be imported; nothing was written. ``errors`` name line and field."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        shown = errors[:MAX_ERRORS_REPORTED]
        more = len(errors) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        super().__init__(text)


@dataclass(frozen=True)
class ResponseIn:
    text: str
    source_model: str = ""
    source_version: str = ""
    source_run: str = ""


@dataclass(frozen=True)
class ImportRow:
    line: int
    turns: list[dict[str, str]]
    responses: list[ResponseIn]
    kind: str = "regular"
    gold: str | None = None
    accepts: tuple[str, ...] = ()
    category: str = ""
    external_id: str = ""
    source: str = ""
    pairs: list[tuple[int, int]] = field(default_factory=list)


class _RowError(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.message = message


def parse_hh_transcript(text: str) -> list[dict[str, str]]:
    """Split ``"\\n\\nHuman: a\\n\\nAssistant: b ..."`` into role/content turns.

    A trailing empty ``Assistant:`` marker (the HH prompt's end) is dropped.
    """
    if not text.startswith("\n\nHuman:"):
        raise ValueError('an HH transcript starts with "\\n\\nHuman:"')
    parts = _HH_TURN.split(text)
    # parts = ["", "Human", content, "Assistant", content, ...]
    turns = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        turns.append({"role": role, "content": content.strip()})
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("the conversation must end with a Human turn")
    return turns


def _split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    marker = "\n\nAssistant:"
    ci, ri = chosen.rfind(marker), rejected.rfind(marker)
    if ci < 0 or ri < 0:
        raise _RowError("chosen", 'a whole transcript needs a final "\\n\\nAssistant:" turn')
    if chosen[: ci + len(marker)] != rejected[: ri + len(marker)]:
        raise _RowError("rejected", "chosen and rejected transcripts have different prefixes")
    try:
        turns = parse_hh_transcript(chosen[: ci + len(marker)])
    except ValueError as exc:
        raise _RowError("chosen", str(exc)) from exc
    return turns, chosen[ci + len(marker):].strip(), rejected[ri + len(marker):].strip()


def _parse_turns(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise _RowError("prompt", "is empty")
        if value.startswith("\n\nHuman:"):
            try:
                return parse_hh_transcript(value)
            except ValueError as exc:
                raise _RowError("prompt", str(exc)) from exc
        return [{"role": "user", "content": value.strip()}]
    if isinstance(value, list) and value:
        turns = []
        for i, turn in enumerate(value):
            if not isinstance(turn, dict) or set(turn) - {"role", "content"}:
                raise _RowError("prompt", f"turn {i + 1} must be an object with role and content")
            role, content = turn.get("role"), turn.get("content")
            if role not in ROLES:
                raise _RowError("prompt", f"turn {i + 1} has role {role!r}; use {ROLES}")
            if not isinstance(content, str) or not content.strip():
                raise _RowError("prompt", f"turn {i + 1} has no content")
            turns.append({"role": role, "content": content})
        return turns
    raise _RowError("prompt", "must be a non-empty string or a list of turns")


def _parse_response(value: Any, index: int) -> ResponseIn:
    name = f"responses[{index}]"
    if isinstance(value, str):
        if not value.strip():
            raise _RowError(name, "is empty")
        return ResponseIn(text=value)
    if isinstance(value, dict):
        text = value.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _RowError(name, "needs a non-empty text")
        return ResponseIn(
            text=text, source_model=str(value.get("model", "") or "")[:200],
            source_version=str(value.get("version", "") or "")[:100],
            source_run=str(value.get("run", "") or "")[:100],
        )
    raise _RowError(name, "must be a string or an object with text")


def _optional_str(record: dict[str, Any], key: str, limit: int) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise _RowError(key, "must be a string")
    value = str(value).strip()
    if len(value) > limit:
        raise _RowError(key, f"is longer than {limit} characters")
    return value


def parse_record(record: Any, line: int) -> ImportRow:
    """Validate one record (a dict from any format) into an ImportRow; raise _RowError."""
    if isinstance(record, _BadJson):
        raise _RowError("(json)", f"invalid JSON ({record.msg})")
    if not isinstance(record, dict):
        raise _RowError("(row)", "must be a JSON object")
    has_pair = "chosen" in record or "rejected" in record
    if has_pair and "responses" in record:
        raise _RowError("responses", "give either responses or chosen/rejected, not both")
    if has_pair:
        chosen, rejected = record.get("chosen"), record.get("rejected")
        for key, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str) or not value.strip():
                raise _RowError(key, "must be a non-empty string")
        if record.get("prompt") in (None, ""):
            turns, chosen, rejected = _split_hh_pair(chosen, rejected)
            if not chosen or not rejected:
                raise _RowError("chosen", "a reply after the last Assistant marker is empty")
        else:
            turns = _parse_turns(record["prompt"])
        responses = [ResponseIn(text=chosen), ResponseIn(text=rejected)]
    else:
        if "prompt" not in record:
            raise _RowError("prompt", "is missing")
        turns = _parse_turns(record["prompt"])
        raw = record.get("responses")
        if not isinstance(raw, list) or len(raw) < 2:
            raise _RowError("responses", "needs a list of at least two responses")
        if len(raw) > MAX_RESPONSES:
            raise _RowError("responses", f"holds more than {MAX_RESPONSES} responses")
        responses = [_parse_response(v, i) for i, v in enumerate(raw)]
    if len({r.text for r in responses}) != len(responses):
        raise _RowError("responses", "two responses have the same text")

    gold = record.get("gold")
    if gold in (None, ""):
        gold = None
    elif gold not in CHOICES:
        raise _RowError("gold", f"is {gold!r}; use one of {', '.join(CHOICES)}")
    elif len(responses) != 2:
        raise _RowError("gold", "needs exactly two responses")
    accepts = record.get("accepts") or []
    if isinstance(accepts, str):  # CSV: "A|tie"
        accepts = [a.strip() for a in accepts.split("|") if a.strip()]
    if not isinstance(accepts, list) or any(a not in CHOICES for a in accepts):
        raise _RowError("accepts", f"must list choices among {', '.join(CHOICES)}")
    if accepts and gold is None:
        raise _RowError("accepts", "needs a gold choice")
    if gold is not None and accepts and gold not in accepts:
        raise _RowError("accepts", "must include the gold choice")
    kind = record.get("kind") or ("calibration" if gold else "regular")
    if kind not in KINDS:
        raise _RowError("kind", f"is {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "calibration" and gold is None:
        raise _RowError("gold", "a calibration item needs a gold choice")
    if kind != "calibration" and gold is not None:
        raise _RowError("gold", f"only calibration items carry gold, not {kind}")
    return ImportRow(
        line=line, turns=turns, responses=responses, kind=kind, gold=gold,
        accepts=tuple(accepts) or ((gold,) if gold else ()),
        category=_optional_str(record, "category", 100),
        external_id=_optional_str(record, "id", 200),
        source=_optional_str(record, "source", 300),
        pairs=list(combinations(range(len(responses)), 2)),
    )


def _validate_all(records: Iterable[tuple[int, Any]], *, max_rows: int,
                  unit: str = "line") -> list[ImportRow]:
    rows: list[ImportRow] = []
    errors: list[str] = []
    for line, record in records:
        if len(rows) + len(errors) >= max_rows:
            raise ImportFileError([f"the file holds more than {max_rows} rows (the limit)"])
        try:
            rows.append(parse_record(record, line))
        except _RowError as exc:
            errors.append(f"{unit} {line}, field '{exc.field_name}': {exc.message}")
    if errors:
        raise ImportFileError(errors)
    if not rows:
        raise ImportFileError(["the file holds no rows"])
    return rows


def _jsonl_records(text: str) -> Iterator[tuple[int, Any]]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, _BadJson(exc.msg)


class _BadJson:
    def __init__(self, msg: str) -> None:
        self.msg = msg


def _csv_records(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return
    start = 2
    for raw in reader:
        record: dict[str, Any] = {}
        responses = []
        for key in sorted(k for k in raw if k and k.startswith("response_")):
            if raw[key]:
                responses.append(raw[key])
        if responses:
            record["responses"] = responses
        for key in ("prompt", "chosen", "rejected", "gold", "accepts", "kind", "category", "id",
                    "source"):
            if raw.get(key):
                record[key] = raw[key]
        yield start, record
        start = reader.line_num + 1


def parse_text(text: str, *, fmt: str, max_rows: int) -> list[ImportRow]:
    """Parse JSONL or CSV text; raise ImportFileError naming every bad line and field."""
    if fmt == "jsonl":
        return _validate_all(_jsonl_records(text), max_rows=max_rows)
    if fmt == "csv":
        return _validate_all(_csv_records(text), max_rows=max_rows)
    raise ImportFileError([f"unknown format {fmt!r}; use jsonl, csv or dataset"])


def parse_dataset(path: Path, *, max_rows: int) -> list[ImportRow]:
    """Parse a Hugging Face dataset saved with ``save_to_disk`` (or a .parquet/.arrow file)."""
    import datasets  # heavy: imported only when a dataset is imported

    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if len(ds) != 1:
                    raise ImportFileError(
                        [f"the dataset has splits {list(ds)}; save the one to import"]
                    )
                ds = next(iter(ds.values()))
        elif path.suffix == ".parquet":
            ds = datasets.Dataset.from_parquet(str(path))
        elif path.suffix == ".arrow":
            ds = datasets.Dataset.from_file(str(path))
        else:
            raise ImportFileError([f"{path.name}: not a saved dataset, .parquet or .arrow file"])
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ImportFileError([f"cannot read dataset: {exc}"]) from exc
    if len(ds) > max_rows:
        raise ImportFileError([f"the dataset holds more than {max_rows} rows (the limit)"])
    return _validate_all(((i + 1, dict(r)) for i, r in enumerate(ds)), max_rows=max_rows,
                         unit="row")


def detect_format(name: str) -> str:
    lower = name.lower()
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    return "dataset"


def parse_path(path: Path, *, fmt: str | None, max_bytes: int, max_rows: int) -> list[ImportRow]:
    """Parse a file or dataset folder, enforcing the size limit before reading it."""
    path = Path(path)
    if not path.exists():
        raise ImportFileError([f"{path}: no such file or folder"])
    fmt = fmt or detect_format(path.name)
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        size = path.stat().st_size
    if size > max_bytes:
        raise ImportFileError([f"{path.name} is {size} bytes; the limit is {max_bytes}"])
    if fmt == "dataset":
        return parse_dataset(path, max_rows=max_rows)
    return parse_bytes(path.read_bytes(), fmt=fmt, max_bytes=max_bytes, max_rows=max_rows)


def parse_bytes(data: bytes, *, fmt: str, max_bytes: int, max_rows: int) -> list[ImportRow]:
    if len(data) > max_bytes:
        raise ImportFileError([f"the upload is {len(data)} bytes; the limit is {max_bytes}"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError([f"the file is not UTF-8 (byte {exc.start})"]) from exc
    return parse_text(text, fmt=fmt, max_rows=max_rows)


def parse_upload(upload, *, fmt: str | None, max_bytes: int, max_rows: int) -> list[ImportRow]:
    """Parse an uploaded file (Django UploadedFile); datasets go through a temporary file."""
    if upload.size > max_bytes:
        raise ImportFileError([f"the upload is {upload.size} bytes; the limit is {max_bytes}"])
    fmt = fmt or detect_format(upload.name)
    if fmt != "dataset":
        return parse_bytes(upload.read(), fmt=fmt, max_bytes=max_bytes, max_rows=max_rows)
    import tempfile

    suffix = Path(upload.name).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        for chunk in upload.chunks():
            tmp.write(chunk)
        tmp.flush()
        return parse_dataset(Path(tmp.name), max_rows=max_rows)
