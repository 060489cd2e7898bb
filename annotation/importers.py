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

Source labels: a row that says which response its source preferred keeps that preference (the
service writes it as the judgment of a ``dataset`` annotator for the source). Accepted forms:

- ``chosen`` + ``rejected``: ``chosen`` is preferred (canonical A);
- ``responses`` + ``label``: a choice among A, B, tie, both_bad (two responses only, A being
  ``responses[0]``), or the 0-based index of the preferred response (an integer, or digits in
  CSV): with n responses, the indexed one wins each of its n - 1 pairs and the other pairs carry
  no label. ``label`` together with ``chosen``/``rejected`` is refused (they already say it).

Only regular rows keep a label: a calibration row's label is its ``gold``, and an eval row's
judgments measure a policy, so ``label`` on those is refused and ``chosen``/``rejected`` there
keep the texts only.

Every other field is kept as it came on the prompt (``ImportRow.extra``, stored in
``Prompt.extra``), never dropped: the service names them in a warning. ``context`` (retrieved
passages: a string or a list of strings) is shown to annotators in a collapsible panel. Values
JSON cannot hold are converted: NaN and infinities become null, other types (dates, bytes from
a dataset) their text.

Skipping invalid rows: every ``parse_*`` function takes ``rejects``; when a list is given, a row
that fails validation is appended to it as a ``Rejected`` (line, field, message, raw row) and
the valid rows are returned, instead of the whole file being refused. Errors of the file itself
(size, row limit, an unreadable dataset, a CSV the reader loses its place in) still refuse it.

Hostile input is refused row by row, never by a crash: every string (keys and values, at any
depth) is checked for NUL and lone surrogates, which PostgreSQL cannot store; JSON nesting is
capped before parsing; a CSV line the ``csv`` module cannot read ends the parse with its line
and column; an error message never echoes raw input or a server path.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from annotation.choices import CHOICES

KINDS = ("regular", "calibration", "eval")
# Fields with a meaning here; every other field of a row goes to ImportRow.extra.
KNOWN_FIELDS = frozenset({"prompt", "responses", "chosen", "rejected", "gold", "accepts", "kind",
                          "category", "id", "source", "label"})
# The extra field shown to annotators (retrieved passages).
CONTEXT_FIELD = "context"
ROLES = ("system", "user", "assistant")
MAX_RESPONSES = 8
MAX_ERRORS_REPORTED = 20
# Errors kept on an ImportFileError (and sent back by the API); the rest are counted.
MAX_ERRORS_KEPT = 100
# The deepest record the format needs is 3 (prompt -> turn -> content); 20 leaves room for
# extra metadata and stays far below the interpreter's recursion limit.
MAX_DEPTH = 20
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
# What PostgreSQL refuses in text and jsonb (NUL) or cannot encode as UTF-8 (lone surrogates,
# which is also what bytes that are not UTF-8 become under the surrogateescape decoding below).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# JSON strings and brackets, to measure nesting without recursing (see _json_too_deep).
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class ImportFileError(Exception):
    """The file cannot be imported; nothing was written. ``errors`` name line and field."""

    def __init__(self, errors: list[str]) -> None:
        # Messages end up in JSON and HTML responses; escape anything that cannot be encoded.
        self.errors = [_escape_unstorable(e) for e in errors]
        shown = self.errors[:MAX_ERRORS_REPORTED]
        more = len(self.errors) - len(shown)
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
    # The source's preference per pair (index into ``pairs`` -> canonical choice).
    labels: dict[int, str] = field(default_factory=dict)
    # Fields Gaplab has no column for, JSON-safe (see the module docstring).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    """A row refused under skip-invalid: where, why, and the row as it came."""

    line: int
    field: str
    message: str
    row: Any

    def as_json(self) -> str:
        """One JSON line; ``ensure_ascii`` so unstorable characters survive as escapes."""
        return json.dumps({"line": self.line, "field": self.field, "message": self.message,
                           "row": self.row}, ensure_ascii=True, default=str)


class _RowError(Exception):
    def __init__(self, field_name: str, message: str, *, raw: Any = None,
                 fatal: bool = False) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.message = message
        # The line's text when it never became a record (invalid JSON): what a reject keeps.
        self.raw = raw
        # The reader lost its place in the file: later rows cannot be told apart, so even
        # skip-invalid refuses the file.
        self.fatal = fatal


def _escape_unstorable(text: str) -> str:
    return _UNSTORABLE.sub(lambda m: ascii(m.group())[1:-1], text)


def _show(value: Any, limit: int = 40) -> str:
    """A short, printable repr of an input value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    name = _field_name(key)
    return f"{path}.{name}" if path else name


def _field_name(key: Any) -> str:
    """A key as an error names it: as written when printable, else escaped (``k\\x00``)."""
    if isinstance(key, str) and key and key.isprintable():
        return key if len(key) <= 40 else key[:37] + "..."
    text = ascii(key)[1:-1] if isinstance(key, str) else _show(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _unstorable_message(text: str, at: int) -> str:
    char = text[at]
    if char == "\x00":
        return f"holds a NUL character at position {at + 1}"
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        # Also what an undecodable byte becomes (surrogateescape): name both readings.
        return (f"holds a byte that is not UTF-8 (0x{code - 0xDC00:02x}) or a lone surrogate "
                f"(\\u{code:04x}) at position {at + 1}")
    return f"holds a lone surrogate (\\u{code:04x}) at position {at + 1}"


def _check_strings(record: Any) -> None:
    """Raise _RowError naming the field path of the first unstorable string or too-deep value.

    Walks keys and values of nested dicts and lists without recursion, so a hostile depth
    costs nothing but the walk; the path reads like ``prompt[1].content``.
    """
    stack: list[tuple[Any, str, int]] = [(record, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            bad = _UNSTORABLE.search(value)
            if bad:
                raise _RowError(path or "(row)", _unstorable_message(value, bad.start()))
        elif isinstance(value, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise _RowError(path or "(row)", f"is nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            children = []
            for key, child in items:
                if isinstance(key, str):
                    bad = _UNSTORABLE.search(key)
                    if bad:
                        raise _RowError(_child(path, key),
                                        "its name " + _unstorable_message(key, bad.start()))
                children.append((child, _child(path, key), depth + 1))
            stack.extend(reversed(children))


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
                raise _RowError("prompt", f"turn {i + 1} has role {_show(role)}; use {ROLES}")
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


def _json_safe(value: Any) -> Any:
    """``value`` as JSON that PostgreSQL's jsonb stores: NaN/inf -> null, odd types -> text."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        # jsonb refuses NaN and infinities; in a dataset column NaN means "missing".
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def _parse_context(value: Any) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return
    raise _RowError(CONTEXT_FIELD, "must be a string or a list of strings (passages)")


def _parse_label(record: dict[str, Any], *, n_responses: int, kind: str,
                 pairs: list[tuple[int, int]]) -> dict[int, str]:
    """The source's preference per pair index, from ``label`` (see the module docstring)."""
    label = record.get("label")
    if label in (None, ""):
        return {}
    if kind != "regular":
        raise _RowError("label", f"only regular rows keep a source label, not {kind} "
                                 "(a calibration row's label is its gold)")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label.strip())
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise _RowError("label", "must be a choice (A, B, tie, both_bad) or a response index")
    if isinstance(label, str):
        if label not in CHOICES:
            raise _RowError("label", f"is {_show(label)}; use one of {', '.join(CHOICES)} "
                                     "or a response index")
        if n_responses != 2:
            raise _RowError("label", "a choice needs exactly two responses; give an index")
        return {0: label}
    if not 0 <= label < n_responses:
        raise _RowError("label", f"is {label}; a 0-based index below {n_responses}")
    return {k: ("A" if i == label else "B")
            for k, (i, j) in enumerate(pairs) if label in (i, j)}


def parse_record(record: Any, line: int) -> ImportRow:
    """Validate one record (a dict from any format) into an ImportRow; raise _RowError."""
    if isinstance(record, _RowError):  # the reader could not turn this line into a record
        raise record
    if not isinstance(record, dict):
        raise _RowError("(row)", "must be a JSON object")
    _check_strings(record)
    has_pair = "chosen" in record or "rejected" in record
    if has_pair and "responses" in record:
        raise _RowError("responses", "give either responses or chosen/rejected, not both")
    if has_pair and record.get("label") not in (None, ""):
        raise _RowError("label", "chosen/rejected already say which response is preferred")
    if record.get(CONTEXT_FIELD) is not None:
        _parse_context(record[CONTEXT_FIELD])
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
        raise _RowError("gold", f"is {_show(gold)}; use one of {', '.join(CHOICES)}")
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
        raise _RowError("kind", f"is {_show(kind)}; use one of {', '.join(KINDS)}")
    if kind == "calibration" and gold is None:
        raise _RowError("gold", "a calibration item needs a gold choice")
    if kind != "calibration" and gold is not None:
        raise _RowError("gold", f"only calibration items carry gold, not {kind}")
    pairs = list(combinations(range(len(responses)), 2))
    if has_pair:
        labels = {0: "A"} if kind == "regular" else {}
    else:
        labels = _parse_label(record, n_responses=len(responses), kind=kind, pairs=pairs)
    return ImportRow(
        line=line, turns=turns, responses=responses, kind=kind, gold=gold,
        accepts=tuple(accepts) or ((gold,) if gold else ()),
        category=_optional_str(record, "category", 100),
        external_id=_optional_str(record, "id", 200),
        source=_optional_str(record, "source", 300),
        pairs=pairs, labels=labels,
        # A null field says nothing (a dataset column this row lacks); everything else is kept.
        extra={str(k): _json_safe(v) for k, v in record.items()
               if k not in KNOWN_FIELDS and v is not None},
    )


def _validate_all(records: Iterable[tuple[int, Any]], *, max_rows: int,
                  unit: str = "line", rejects: list[Rejected] | None = None) -> list[ImportRow]:
    """Validate every record; refuse the file on any bad row, or, with ``rejects``, collect
    the bad rows there and return the good ones (a fatal reader error still refuses)."""
    rows: list[ImportRow] = []
    errors: list[str] = []
    failed = 0
    for line, record in records:
        if len(rows) + failed >= max_rows:
            raise ImportFileError([f"the file holds more than {max_rows} rows (the limit)"])
        try:
            rows.append(parse_record(record, line))
        except _RowError as exc:
            failed += 1
            message = f"{unit} {line}, field '{exc.field_name}': {exc.message}"
            if rejects is not None and not exc.fatal:
                raw = exc.raw if exc.raw is not None else record
                rejects.append(Rejected(line=line, field=exc.field_name, message=exc.message,
                                        row=None if isinstance(raw, _RowError) else raw))
                continue
            if rejects is not None:  # fatal: the rest of the file cannot be read
                raise ImportFileError([message]) from exc
            if len(errors) < MAX_ERRORS_KEPT:
                errors.append(message)
    if failed > len(errors) and rejects is None:
        errors.append(f"and {failed - len(errors)} more {unit}s with errors")
    if errors:
        raise ImportFileError(errors)
    if not rows:
        if rejects:
            shown = [f"{unit} {r.line}, field '{r.field}': {r.message}"
                     for r in rejects[:MAX_ERRORS_KEPT]]
            raise ImportFileError([f"the file holds no valid rows ({len(rejects)} refused)",
                                   *shown])
        raise ImportFileError(["the file holds no rows"])
    return rows


def _json_too_deep(line: str) -> str | None:
    """Return the top-level key (or "(json)") under which ``line`` nests past MAX_DEPTH.

    Counting brackets first keeps the common case to two C-speed scans; only a line with more
    brackets than the cap is tokenized (strings skipped whole by the regex). Checking before
    ``json.loads`` keeps hostile depth away from the recursion limit.
    """
    if line.count("[") + line.count("{") <= MAX_DEPTH:
        return None
    depth = 0
    key = "(json)"
    for match in _JSON_TOKEN.finditer(line):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return key
        elif token in "]}":
            depth -= 1
        elif depth == 1 and line[match.end():].lstrip()[:1] == ":":
            try:
                key = json.loads(token)
            except ValueError:
                key = "(json)"
            key = _field_name(key)
    return None


def _jsonl_records(text: str) -> Iterator[tuple[int, Any]]:
    # Split on "\n" only: str.splitlines() also splits on U+2028, \x1c and friends, which
    # JSON allows raw inside strings, and would make line numbers disagree with editors.
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        deep_key = _json_too_deep(line)
        if deep_key is not None:
            yield line_no, _RowError(deep_key, f"is nested deeper than {MAX_DEPTH} levels",
                                     raw=line)
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, _RowError("(json)", f"invalid JSON ({exc.msg}, column {exc.colno})",
                                     raw=line)
        except RecursionError:  # backstop: _json_too_deep should have caught it
            yield line_no, _RowError("(json)", "invalid JSON (nested too deeply)", raw=line)
        except ValueError:
            # The one other ValueError json.loads raises: an integer longer than
            # sys.get_int_max_str_digits() (CVE-2020-10735).
            yield line_no, _RowError("(json)", "invalid JSON (a number has too many digits)",
                                     raw=line)


class _LineTap:
    """Iterate lines for csv.reader, keeping those of the record being read."""

    def __init__(self, text: str) -> None:
        self._lines = io.StringIO(text)
        self.taken: list[str] = []

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.taken.append(line)
        return line


# An absolute path in a library's message (a temp file, the datasets cache): not for clients.
_SERVER_PATH = re.compile(r"/(?:[\w.\-]+/)+[\w.\-]*")
_CSV_FIELD = re.compile(r'"[^"]*(?:""[^"]*)*"?|[^,\r\n]*')


def _csv_column_over_limit(raw: str, header: list[str]) -> str:
    """Name the column of the first field in ``raw`` longer than the csv field limit."""
    limit = csv.field_size_limit()
    pos, column = 0, 0
    while pos <= len(raw):
        match = _CSV_FIELD.match(raw, pos)
        if match is None:
            break
        if match.end() - match.start() > limit:
            return _csv_column_name(header, column)
        pos = match.end()
        if raw[pos:pos + 1] != ",":
            break
        pos, column = pos + 1, column + 1
    return "(row)"


def _csv_column_name(header: list[str], index: int) -> str:
    if index < len(header) and header[index]:
        return _field_name(header[index])
    return f"column {index + 1}"


def _csv_records(text: str) -> Iterator[tuple[int, Any]]:
    """Yield (first line, record) per CSV row; a row the csv module refuses ends the file.

    After a csv.Error (a field over the module's limit, say) the reader's position inside a
    quoted field is unknown, so later "rows" would be noise: one precise error is reported.
    """
    tap = _LineTap(text)
    reader = csv.reader(tap)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield 1, _RowError(_csv_column_over_limit("".join(tap.taken), []),
                           f"the header cannot be read as CSV ({exc})", fatal=True)
        return
    if header is None:
        return
    for index, name in enumerate(header):
        bad = _UNSTORABLE.search(name)
        if bad:
            yield 1, _RowError(f"header column {index + 1}",
                               _unstorable_message(name, bad.start()), fatal=True)
            return
    start = reader.line_num + 1
    while True:
        tap.taken.clear()
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, _RowError(_csv_column_over_limit("".join(tap.taken), header),
                                   f"cannot be read as CSV ({exc})", raw="".join(tap.taken),
                                   fatal=True)
            return
        line, start = start, reader.line_num + 1
        if not values:  # a blank line, as csv.DictReader skips it
            continue
        raw = {_csv_column_name(header, i): value for i, value in enumerate(values)}
        try:
            _check_strings(raw)
        except _RowError as exc:
            exc.raw = raw
            yield line, exc
            continue
        record: dict[str, Any] = {}
        response_keys = sorted(k for k in raw if k.startswith("response_"))
        responses = [raw[key] for key in response_keys if raw[key]]
        if responses:
            record["responses"] = responses
        # Known columns when filled; every other non-empty column is an extra field, kept.
        for key, value in raw.items():
            if value and key not in response_keys:
                record[key] = value
        yield line, record


def parse_text(text: str, *, fmt: str, max_rows: int,
               rejects: list[Rejected] | None = None) -> list[ImportRow]:
    """Parse JSONL or CSV text; raise ImportFileError naming every bad line and field."""
    if fmt == "jsonl":
        return _validate_all(_jsonl_records(text), max_rows=max_rows, rejects=rejects)
    if fmt == "csv":
        return _validate_all(_csv_records(text), max_rows=max_rows, rejects=rejects)
    raise ImportFileError([f"unknown format {_show(fmt)}; use jsonl, csv or dataset"])


def parse_dataset(path: Path, *, max_rows: int, name: str | None = None,
                  rejects: list[Rejected] | None = None) -> list[ImportRow]:
    """Parse a Hugging Face dataset saved with ``save_to_disk`` (or a .parquet/.arrow file).

    ``name`` is what errors call the file (an upload's own name); the path, which may be a
    server temp file, never appears in an error.
    """
    import datasets  # heavy: imported only when a dataset is imported

    name = name or path.name
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
            raise ImportFileError([f"{name}: not a saved dataset, .parquet or .arrow file"])
        if len(ds) > max_rows:
            raise ImportFileError([f"the dataset holds more than {max_rows} rows (the limit)"])
        records = [(i + 1, dict(r)) for i, r in enumerate(ds)]
    except ImportFileError:
        raise
    except Exception as exc:
        # pyarrow and datasets raise a zoo of types on a hostile file (ArrowInvalid,
        # ArrowTypeError, OSError, KeyError, ...); whatever reading the file raises is the
        # file's fault, and must be a 400, not a 500.
        detail = _SERVER_PATH.sub("<path>", str(exc).replace(str(path), name))
        raise ImportFileError([f"{name}: cannot read the dataset ({detail[:300]})"]) from exc
    return _validate_all(records, max_rows=max_rows, unit="row", rejects=rejects)


def detect_format(name: str) -> str:
    lower = name.lower()
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    return "dataset"


def parse_path(path: Path, *, fmt: str | None, max_bytes: int, max_rows: int,
               rejects: list[Rejected] | None = None) -> list[ImportRow]:
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
        return parse_dataset(path, max_rows=max_rows, rejects=rejects)
    return parse_bytes(path.read_bytes(), fmt=fmt, max_bytes=max_bytes, max_rows=max_rows,
                       rejects=rejects)


def parse_bytes(data: bytes, *, fmt: str, max_bytes: int, max_rows: int,
                rejects: list[Rejected] | None = None) -> list[ImportRow]:
    """Parse JSONL or CSV bytes. Bytes that are not UTF-8 are reported per line and field.

    Decoding with ``surrogateescape`` turns each bad byte into a lone surrogate, which the
    per-string check then reports with its line and field, instead of one error for the file.
    """
    if len(data) > max_bytes:
        raise ImportFileError([f"the upload is {len(data)} bytes; the limit is {max_bytes}"])
    text = data.decode("utf-8-sig", errors="surrogateescape")
    return parse_text(text, fmt=fmt, max_rows=max_rows, rejects=rejects)


def parse_upload(upload: Any, *, fmt: str | None, max_bytes: int, max_rows: int,
                 rejects: list[Rejected] | None = None) -> list[ImportRow]:
    """Parse an uploaded file (Django UploadedFile); datasets go through a temporary file."""
    if upload.size > max_bytes:
        raise ImportFileError([f"the upload is {upload.size} bytes; the limit is {max_bytes}"])
    name = Path(upload.name or "upload").name
    fmt = fmt or detect_format(name)
    if fmt != "dataset":
        return parse_bytes(upload.read(), fmt=fmt, max_bytes=max_bytes, max_rows=max_rows,
                           rejects=rejects)
    import tempfile

    suffix = Path(name).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        for chunk in upload.chunks():
            tmp.write(chunk)
        tmp.flush()
        return parse_dataset(Path(tmp.name), max_rows=max_rows, name=name, rejects=rejects)
