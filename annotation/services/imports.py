"""Import comparisons: parse a file, then write all its rows or none.

A row's own preference (``chosen``/``rejected``, or ``label``; see ``annotation.importers``) is
kept as the judgment of a ``dataset`` annotator, one per source: the file's declared source
when the caller gives one, else the row's ``source``, else the file's name. The declaration wins
because a row's ``source`` is often provenance, not a labeller: the HH-RLHF sample in
``tests/shared_data`` names a file and line per row, which would make 1,303 annotators of one
dataset (the import warns when a file makes more than ``MANY_SOURCES``). Those accounts
cannot log in and never receive work; their judgments are written here, in the import's
transaction, as completed assignments plus judgments (append-only like any other), and they are
left out of the people's tallies and quality tables (``annotation.selectors.sources``).
Snapshots and exports choose whether to use them (``sources``).

With ``skip_invalid`` the valid rows import and the refused ones come back in
``ImportResult.rejects`` (``import_rejects_write`` writes them as JSON Lines); by default a file
with any bad row imports nothing.

Importing is idempotent: a row the campaign already has (same conversation, context, responses,
kind and gold: ``prompt_fingerprint``), or one repeated in the file, is skipped and counted in
``ImportResult.duplicates``, so a file imported twice adds nothing the second time and says so.
``allow_duplicates`` imports such rows again, for the rare deliberate repeat.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from annotation import importers
from annotation.errors import ApplicationError
from annotation.importers import ImportFileError, ImportRow, Rejected
from annotation.models import (
    AnnotatorProfile,
    Assignment,
    Campaign,
    Comparison,
    Judgment,
    Prompt,
    Response,
)
from annotation.services.accounts import Role, user_create_with_role

# What a dataset annotator is called when neither the row nor the file names a source.
FALLBACK_SOURCE = "import"
# More label sources than this in one file are probably per-row provenance: warn.
MANY_SOURCES = 20


@dataclass(frozen=True)
class ImportResult:
    prompts: int
    responses: int
    comparisons: int
    calibration: int
    # Source labels kept: judgments written for dataset annotators, per source.
    labels: int = 0
    label_sources: dict[str, int] = field(default_factory=dict)
    # Fields kept in Prompt.extra, with how many rows carried each.
    extra_fields: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Rows refused under skip_invalid (empty otherwise: a bad row refuses the whole file).
    rejects: list[Rejected] = field(default_factory=list)
    # Rows skipped because the campaign (or the file, earlier) already had them.
    duplicates: int = 0

    @property
    def rejected(self) -> int:
        return len(self.rejects)


def prompt_fingerprint(*, turns: list, context: Any, texts: list[str], kind: str,
                       gold: str | None, accepts: list[str] | tuple[str, ...]) -> str:
    """The sha256 that says two imported rows are the same item.

    The conversation, its context passages, the responses' texts in order, the kind and the
    gold answer: what an annotator sees and what is scored. Not the row's ids, source or
    labels (a re-export of the same data with new ids is still the same data). Migration
    0014 computed it for the prompts that existed before it, so it must not change without a
    migration that recomputes it.
    """
    canonical = json.dumps(
        {"turns": turns, "context": context, "texts": texts, "kind": kind,
         "gold": gold or "", "accepts": sorted(accepts or ())},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _row_fingerprint(row: ImportRow) -> str:
    return prompt_fingerprint(
        turns=row.turns, context=row.extra.get(importers.CONTEXT_FIELD),
        texts=[r.text for r in row.responses], kind=row.kind, gold=row.gold,
        accepts=row.accepts)


def campaign_import_lock(campaign: Campaign) -> None:
    """Serialise imports into ``campaign`` until the caller's transaction ends.

    FOR NO KEY UPDATE, not FOR UPDATE: every judgment and assignment written meanwhile checks
    its foreign key to the campaign with FOR KEY SHARE, which FOR UPDATE would block, so a
    minute-long import would stall the campaign's annotators. NO KEY UPDATE blocks only another
    import's lock (SQLite has no row locks: its transactions are serialised anyway).
    """
    Campaign.objects.select_for_update(no_key=True).filter(pk=campaign.pk).first()


# Fingerprints looked up per query: SQLite allows 32,766 bound variables.
_LOOKUP_CHUNK = 5000


def _new_rows(campaign: Campaign, rows: list[ImportRow],
              prints: list[str]) -> tuple[list[ImportRow], list[str]]:
    """The rows (and their fingerprints) that neither the campaign nor an earlier row has."""
    unique = sorted(set(prints))
    known: set[str] = set()
    for start in range(0, len(unique), _LOOKUP_CHUNK):
        known.update(Prompt.objects.filter(
            campaign=campaign, fingerprint__in=unique[start: start + _LOOKUP_CHUNK],
        ).values_list("fingerprint", flat=True))
    kept_rows, kept_prints = [], []
    for row, fingerprint in zip(rows, prints, strict=True):
        if fingerprint not in known:
            known.add(fingerprint)
            kept_rows.append(row)
            kept_prints.append(fingerprint)
    return kept_rows, kept_prints


# How each caller asks for duplicates: the command's flag, the API's field, the admin's box.
ALLOW_DUPLICATES_HOW = ("--allow-duplicates, the API's allow_duplicates or the upload form's "
                        "\"Import duplicates too\"")


def duplicates_message(*, duplicates: int, total: int) -> str:
    """What every caller says about skipped duplicates."""
    if duplicates == total:
        return (f"All {total} rows are already in this campaign (same conversation, "
                "responses, kind and gold), so nothing was imported. To import them again on "
                f"purpose, use {ALLOW_DUPLICATES_HOW}.")
    return (f"{duplicates} of {total} rows were already in this campaign (or repeated in the "
            f"file) and were skipped. To import them too, use {ALLOW_DUPLICATES_HOW}.")


def _username_for(source: str) -> str:
    # Usernames allow letters, digits and @.+-_ only; a source like "Anthropic/hh-rlhf" does
    # not fit, and two sources may slugify alike, so a short hash keeps them apart.
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:10]
    return f"dataset-{slugify(source)[:100] or 'source'}-{digest}"


def dataset_annotator_get_or_create(*, source: str) -> User:
    """Return the ``dataset`` annotator of ``source``, creating it (unable to log in) if new.

    Idempotent and safe under concurrent imports of one new source: the loser of the race on
    the username finds the winner's account.
    """
    source = source[:300]
    profile = (AnnotatorProfile.objects.select_related("user")
               .filter(kind=AnnotatorProfile.Kind.DATASET, source=source).first())
    if profile is not None:
        return profile.user
    try:
        with transaction.atomic():
            return user_create_with_role(
                username=_username_for(source), password=None, role=Role.ANNOTATOR,
                annotator_kind=AnnotatorProfile.Kind.DATASET, source=source,
            )
    except (ApplicationError, IntegrityError):
        profile = (AnnotatorProfile.objects.select_related("user")
                   .filter(kind=AnnotatorProfile.Kind.DATASET, source=source).first())
        if profile is None:
            raise
        return profile.user


def _labels_write(*, campaign: Campaign, labelled: list[tuple[Comparison, str, str]]) -> Counter:
    """Write (comparison, choice, source) as completed assignments and judgments, in bulk.

    No claim counter moves: a dataset label is not a claim, so it never uses up a comparison's
    overlap. The key ``dataset-label:<comparison id>`` is unique per annotator (each comparison
    is new in this import).
    """
    users = {source: dataset_annotator_get_or_create(source=source)
             for source in sorted({source for _, _, source in labelled})}
    now = timezone.now()
    assignments = Assignment.objects.bulk_create(
        [
            Assignment(campaign=campaign, comparison=comparison, annotator=users[source],
                       a_on_left=True, status=Assignment.Status.COMPLETED, issued_at=now,
                       expires_at=now, finished_at=now)
            for comparison, _, source in labelled
        ],
        batch_size=2000,
    )
    Judgment.objects.bulk_create(
        [
            Judgment(assignment=assignment, campaign=campaign, comparison=comparison,
                     annotator=users[source], choice=choice, strength=None,
                     seconds_spent=0.0, a_on_left=True,
                     idempotency_key=f"dataset-label:{comparison.pk}")
            for assignment, (comparison, choice, source)
            in zip(assignments, labelled, strict=True)
        ],
        batch_size=2000,
    )
    return Counter(source for _, _, source in labelled)


def _warnings(rows: list[ImportRow], extra_fields: dict[str, int],
              label_sources: dict[str, int]) -> list[str]:
    warnings = []
    if len(label_sources) > MANY_SOURCES:
        warnings.append(f"The rows' source field named {len(label_sources)} label sources, "
                        f"so {len(label_sources)} dataset annotators hold the labels; if it is "
                        "provenance, import again with a declared source.")
    unknown = {k: n for k, n in extra_fields.items() if k != importers.CONTEXT_FIELD}
    if unknown:
        listed = ", ".join(f"{k} ({n} rows)" for k, n in sorted(unknown.items()))
        warnings.append(f"Unknown fields kept on the prompts (Prompt.extra), not shown to "
                        f"annotators: {listed}.")
    # Calibration items must look like regular ones; a context panel on one kind only
    # would tell them apart.
    def with_context(kind: str) -> set[bool]:
        return {importers.CONTEXT_FIELD in r.extra for r in rows if r.kind == kind}

    calibration, regular = with_context("calibration"), with_context("regular")
    if calibration and regular and (True in calibration) != (True in regular):
        warnings.append("Some rows carry a context and some do not, split by kind: annotators "
                        "could tell calibration items apart by the context panel.")
    return warnings


@transaction.atomic
def comparisons_import(*, campaign: Campaign, rows: list[ImportRow], label_source: str = "",
                       default_source: str = "", allow_duplicates: bool = False) -> ImportResult:
    """Write validated rows in one transaction: all of them or, on any error, none.

    A row with n responses becomes n·(n-1)/2 comparisons (every pair), in the file's order.
    Its source labels become judgments of the dataset annotator of
    ``label_source or row.source or default_source`` (``FALLBACK_SOURCE`` when all are empty);
    its extra fields go to ``Prompt.extra``. Rows the campaign already has are skipped unless
    ``allow_duplicates`` (the module docstring). The campaign row is locked first
    (``campaign_import_lock``), so two imports of one file at once cannot both find its rows
    new.
    """
    campaign_import_lock(campaign)
    total = len(rows)
    prints = [_row_fingerprint(row) for row in rows]
    if not allow_duplicates:
        rows, prints = _new_rows(campaign, rows, prints)
    duplicates = total - len(rows)
    prompts = Prompt.objects.bulk_create(
        [
            Prompt(campaign=campaign, turns=row.turns, category=row.category,
                   external_id=row.external_id, source=row.source, extra=row.extra,
                   fingerprint=fingerprint)
            for row, fingerprint in zip(rows, prints, strict=True)
        ]
    )
    responses = Response.objects.bulk_create(
        [
            Response(prompt=prompt, text=r.text, source_model=r.source_model,
                     source_version=r.source_version, source_run=r.source_run)
            for prompt, row in zip(prompts, rows, strict=True)
            for r in row.responses
        ]
    )
    comparisons = []
    labels: list[tuple[int, str, str]] = []  # (index into comparisons, choice, source)
    offset = 0
    for prompt, row in zip(prompts, rows, strict=True):
        mine = responses[offset: offset + len(row.responses)]
        offset += len(row.responses)
        for k, (i, j) in enumerate(row.pairs):
            if k in row.labels:
                labels.append((len(comparisons), row.labels[k],
                               label_source or row.source or default_source
                               or FALLBACK_SOURCE))
            comparisons.append(
                Comparison(
                    campaign=campaign, prompt=prompt, response_a=mine[i], response_b=mine[j],
                    kind=row.kind, gold_choice=row.gold, gold_accepts=list(row.accepts),
                    calibration_type=(
                        Comparison.CalibrationType.KNOWN_ANSWER if row.gold else ""
                    ),
                )
            )
    Comparison.objects.bulk_create(comparisons, batch_size=2000)
    by_source = _labels_write(
        campaign=campaign,
        labelled=[(comparisons[index], choice, src) for index, choice, src in labels],
    ) if labels else Counter()
    extra_fields = dict(sorted(Counter(k for row in rows for k in row.extra).items()))
    warnings = _warnings(rows, extra_fields, by_source)
    if duplicates:
        warnings.insert(0, duplicates_message(duplicates=duplicates, total=total))
    return ImportResult(
        prompts=len(prompts), responses=len(responses), comparisons=len(comparisons),
        calibration=sum(1 for c in comparisons if c.kind == Comparison.Kind.CALIBRATION),
        labels=len(labels), label_sources=dict(sorted(by_source.items())),
        extra_fields=extra_fields, warnings=warnings, duplicates=duplicates,
    )


def _source_name(source: Path | str | Any) -> str:
    if isinstance(source, str | Path):
        return Path(source).name
    return Path(getattr(source, "name", "") or "").name


def comparisons_import_file(
    *, campaign: Campaign, source: Path | str | Any, fmt: str | None = None,
    skip_invalid: bool = False, label_source: str | None = None,
    allow_duplicates: bool = False,
) -> ImportResult:
    """Parse ``source`` and import every row into ``campaign``, or nothing.

    ``source`` is a path (a JSONL/CSV file, a .parquet/.arrow file or a ``save_to_disk``
    folder) or an uploaded file (Django ``UploadedFile``); ``fmt`` (jsonl, csv, dataset)
    overrides the guess from the name. The size and row limits are
    ``GAPLAB_IMPORT_MAX_BYTES`` and ``GAPLAB_IMPORT_MAX_ROWS``. ``label_source`` is the file's
    declared source: whose labels the rows' ``chosen``/``rejected`` (or ``label``) are; when
    it is not given, each row's ``source``, else the file's name.

    Raises ImportFileError, naming each bad line (or dataset row) and field, when the file
    cannot be imported; then nothing was written. With ``skip_invalid`` a bad row is skipped
    instead and returned in ``ImportResult.rejects``; the file is still refused when no row is
    valid or the file itself is bad (size, row limit, unreadable). Rows the campaign already
    has are skipped and counted unless ``allow_duplicates``. Every caller (API, admin
    upload, management command, demo seed) goes through here, so all enforce the same limits
    and checks.
    """
    limits = {"max_bytes": settings.GAPLAB_IMPORT_MAX_BYTES,
              "max_rows": settings.GAPLAB_IMPORT_MAX_ROWS}
    rejects: list[Rejected] | None = [] if skip_invalid else None
    if isinstance(source, str | Path):
        rows = importers.parse_path(Path(source), fmt=fmt, rejects=rejects, **limits)
    else:
        rows = importers.parse_upload(source, fmt=fmt, rejects=rejects, **limits)
    try:
        result = comparisons_import(campaign=campaign, rows=rows,
                                    label_source=(label_source or "").strip()[:300],
                                    default_source=_source_name(source)[:300],
                                    allow_duplicates=allow_duplicates)
    except DataError as exc:
        # Backstop: the parser refuses what PostgreSQL cannot store (NUL, lone surrogates,
        # over-long names), so this means a check is missing. The atomic block has rolled
        # back; answer the client as a bad file, not a 500.
        first = str(exc).strip().splitlines()[:1]
        raise ImportFileError(
            [f"the database refused a row ({first[0] if first else type(exc).__name__})"]
        ) from exc
    if not rejects:
        return result
    warning = (f"{len(rejects)} invalid rows were skipped (first: line {rejects[0].line}, "
               f"field '{rejects[0].field}': {rejects[0].message}).")
    return ImportResult(**{**result.__dict__, "rejects": rejects,
                           "warnings": [*result.warnings, warning]})


def import_rejects_write(*, rejects: list[Rejected], out: Path) -> int:
    """Write refused rows as JSON Lines ``{line, field, message, row}``; return how many.

    ``row`` is the row as it came (the raw text of a line that was not JSON). Written beside
    and renamed, so a reader never sees half a file.
    """

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for reject in rejects:
            fh.write(reject.as_json() + "\n")
    os.replace(tmp, out)
    return len(rejects)
