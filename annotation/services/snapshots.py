"""Snapshots: immutable, content-addressed datasets of aggregated preferences (DESIGN section 2).

A snapshot is a JSON Lines file of TRL conversational preference rows

    {prompt, chosen, rejected, margin, weight, comparison_id, agreement, n_judgments, category}

(``prompt`` the list of role/content turns; ``chosen`` / ``rejected`` one assistant message each;
``margin`` / ``weight`` from the aggregate's confidence, see ``annotation.aggregation``), one per
regular comparison the named method decides. Undecided comparisons are left out.

Content addressing: each row is written as canonical JSON (sorted keys, no spaces, UTF-8, floats
rounded to 6 places so that the last bits of an optimizer's output cannot change the hash), one a
line. ``content_hash = sha256(header + "\\n" + body)`` where the header is the canonical JSON of
{format, campaign, method, params} with the params resolved against the method's defaults, so
``params=None`` and the explicit defaults name the same snapshot. The campaign is in the header so
that two campaigns can never share a snapshot. The file lives at
``DATA_DIR/snapshots/<content_hash>.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from annotation.errors import ApplicationError, GoneError
from annotation.models import Campaign, Snapshot
from annotation.selectors.snapshots import (
    annotator_gold_counts,
    comparison_response_ids,
    comparisons_with_texts,
    snapshot_gold_votes,
    snapshot_votes,
)
from annotation.selectors.sources import (
    SOURCES,
    SOURCES_ALL,
    SOURCES_DATASET,
    dataset_annotator_ids,
    machine_annotator_ids,
)

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "gaplab-snapshot-v1"
_FLOAT_PLACES = 6


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def snapshot_dir() -> Path:
    return Path(settings.DATA_DIR) / "snapshots"


def snapshot_header(*, campaign_name: str, method: str, params: dict[str, Any]) -> bytes:
    return _canonical({"format": SNAPSHOT_FORMAT, "campaign": campaign_name, "method": method,
                       "params": params}).encode("utf-8")


def snapshot_hash(*, header: bytes, body: bytes) -> str:
    return hashlib.sha256(header + b"\n" + body).hexdigest()


class BuiltRows(NamedTuple):
    rows: list[dict[str, Any]]
    params: dict[str, Any]  # resolved against the method's defaults
    fit: dict[str, Any]  # the fit's diagnostics (iterations, converged, ...), may be empty


def snapshot_rows_build(
    *, campaign: Campaign, method: str, params: dict[str, Any] | None = None,
    sources: str = SOURCES_ALL,
) -> BuiltRows:
    """Aggregate the campaign's current regular judgments into rows, with the resolved params
    and the fit's diagnostics.

    ``sources`` picks whose judgments count: ``all`` (everyone: people, imported dataset
    labels, AI judges), ``people`` (no dataset labels, no AI judges) or ``dataset``
    (``annotation.selectors.sources``); any other than ``all`` is
    recorded in the resolved params as ``sources`` (so ``all`` keeps the hashes snapshots had
    before dataset labels existed). Rows are ordered by comparison id. Raises ApplicationError
    for an unknown method, parameter or sources, and for gold_weighted when no annotator has a
    judgment on a gold item.
    """
    if sources not in SOURCES:
        raise ApplicationError(f"Unknown sources {sources!r}; choose from {', '.join(SOURCES)}.",
                               extra={"field": "sources"})
    # pandas and scipy: imported where a snapshot is built, never by the web's URL conf.
    from annotation.aggregation import aggregate_pairwise_fit, pairwise_params

    try:
        resolved = pairwise_params(method, params)
    except ValueError as exc:
        raise ApplicationError(str(exc), extra={"field": "params"}) from exc
    votes = snapshot_votes(campaign=campaign)
    if sources == SOURCES_DATASET:
        dataset = dataset_annotator_ids()
        votes = [v for v in votes if v.annotator in dataset]
    elif sources != SOURCES_ALL:
        machines = machine_annotator_ids()
        votes = [v for v in votes if v.annotator not in machines]
    if sources != SOURCES_ALL:
        resolved = {**resolved, "sources": sources}
    comparison_ids = sorted({v.comparison for v in votes})
    items = comparison_response_ids(comparison_ids=comparison_ids) if method == "bradley_terry" \
        else None
    gold_counts = annotator_gold_counts(campaign=campaign) if method == "gold_weighted" else None
    # Gold-anchored Dawid-Skene: calibration judgments join EM with their gold as observed truth.
    anchor_votes, gold = snapshot_gold_votes(campaign=campaign) if method == "dawid_skene" \
        else ([], None)
    try:
        fit = aggregate_pairwise_fit(
            method, votes, items=items, gold_counts=gold_counts, anchor_votes=anchor_votes,
            gold=gold, params={k: v for k, v in resolved.items() if k != "sources"})
    except ValueError as exc:
        raise ApplicationError(str(exc)) from exc
    decisions = fit.decisions
    if fit.info.get("converged") is False:
        # Flagged, not hidden: the rows are the last iterate's; Snapshot.fits records it too.
        logger.warning("snapshot %s of %s: the fit did not converge: %s", method,
                       campaign.name, fit.info)
    decided = {d.comparison: d for d in decisions if d.winner is not None}
    rows = []
    for comparison in comparisons_with_texts(comparison_ids=decided).iterator(chunk_size=2000):
        decision = decided[comparison.pk]
        a, b = comparison.response_a.text, comparison.response_b.text
        chosen, rejected = (a, b) if decision.winner == "A" else (b, a)
        rows.append({
            "prompt": comparison.prompt.turns,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "margin": round(decision.margin, _FLOAT_PLACES),
            "weight": round(decision.weight, _FLOAT_PLACES),
            "comparison_id": comparison.pk,
            "agreement": round(decision.agreement, _FLOAT_PLACES),
            "n_judgments": decision.n_judgments,
            "category": comparison.prompt.category,
        })
    return BuiltRows(rows, resolved, _plain_info(fit.info))


def _plain_info(info: dict[str, Any]) -> dict[str, Any]:
    """The fit's diagnostics as JSON values (numpy scalars to Python, nested dicts kept)."""
    return json.loads(json.dumps(info, default=lambda v: v.item() if hasattr(v, "item")
                                 else str(v)))


def _write_atomically(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)  # a reader never sees half a file; racing writers write equal bytes


def snapshot_create(
    *, campaign: Campaign, method: str, created_by: AbstractBaseUser | None = None,
    params: dict[str, Any] | None = None, sources: str = SOURCES_ALL,
) -> Snapshot:
    """Aggregate the campaign with ``method`` and store the rows as a content-addressed snapshot.

    Idempotent: when a snapshot with the same content hash exists it is returned (and its file
    rewritten if it went missing), also under concurrent calls. Raises ApplicationError for an
    unknown method, parameter or sources, a gold-weighted snapshot without gold, or when no
    comparison is decided (an empty training set is a mistake, not a snapshot). ``sources``:
    see ``snapshot_rows_build`` (default ``all``: people and imported dataset labels).
    """
    if method not in Snapshot.Method.values:
        raise ApplicationError(
            f"Unknown method {method!r}; choose from {', '.join(Snapshot.Method.values)}.",
            extra={"field": "method"},
        )
    rows, resolved, fits = snapshot_rows_build(campaign=campaign, method=method, params=params,
                                               sources=sources)
    if not rows:
        raise ApplicationError(f"No comparison of {campaign.name} is decided by {method}; "
                               "nothing to snapshot.")
    body = "".join(_canonical(row) + "\n" for row in rows).encode("utf-8")
    header = snapshot_header(campaign_name=campaign.name, method=method, params=resolved)
    content_hash = snapshot_hash(header=header, body=body)
    path = snapshot_dir() / f"{content_hash}.jsonl"
    existing = Snapshot.objects.filter(content_hash=content_hash).first()
    if existing is not None:
        if not Path(existing.path).exists():
            _write_atomically(Path(existing.path), body)
        if existing.size_bytes is None:
            # Made before sizes were recorded: the size is the file's, so filling it in keeps
            # the snapshot what its hash says (an update, not a save: snapshots are immutable).
            Snapshot.objects.filter(pk=existing.pk).update(size_bytes=len(body))
            existing.size_bytes = len(body)
        return existing
    _write_atomically(path, body)
    snapshot = Snapshot(
        campaign=campaign, method=method, content_hash=content_hash, path=str(path),
        row_count=len(rows), size_bytes=len(body), params=resolved, fits=fits,
        created_by=created_by,
    )
    snapshot.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            snapshot.save(force_insert=True)
    except IntegrityError:
        # A concurrent call stored the same content first; it is the same snapshot.
        return Snapshot.objects.get(content_hash=content_hash)
    return snapshot


def snapshot_file(*, snapshot: Snapshot) -> Path:
    """The snapshot's file on disk; GoneError (410) when it is missing, with the remedy."""
    path = Path(snapshot.path)
    if not path.is_file():
        raise GoneError(f"Snapshot {snapshot.content_hash[:12]}'s file is missing on the "
                        "server; create the same snapshot again (same campaign, method and "
                        "sources) to write it back.")
    return path


def snapshot_rows(snapshot: Snapshot) -> list[dict[str, Any]]:
    """The snapshot's rows, after checking the file still has the content its hash names.

    Raises ApplicationError when the file is missing or was changed.
    """
    path = Path(snapshot.path)
    if not path.exists():
        raise ApplicationError(f"Snapshot file {path} is missing.")
    body = path.read_bytes()
    from annotation.aggregation import pairwise_params  # heavy: see snapshot_rows_build

    # Re-resolve: a JSON column may hand back 3.0 as 3, which would change the header's bytes.
    stored = dict(snapshot.params)
    sources = stored.pop("sources", None)  # not a method parameter (snapshot_rows_build)
    params = pairwise_params(snapshot.method, stored)
    if sources is not None:
        params["sources"] = sources
    header = snapshot_header(campaign_name=snapshot.campaign.name, method=snapshot.method,
                             params=params)
    if snapshot_hash(header=header, body=body) != snapshot.content_hash:
        raise ApplicationError(f"Snapshot file {path} does not match its hash; it was changed.")
    return [json.loads(line) for line in body.decode("utf-8").splitlines() if line]


def snapshot_to_dataset(snapshot: Snapshot) -> datasets.Dataset:
    """The snapshot as a ``datasets.Dataset`` (TRL's conversational preference format)."""
    import datasets  # heavy: only in processes that build datasets

    return datasets.Dataset.from_list(snapshot_rows(snapshot))
