"""Reads that feed snapshots: current judgments, gold scores and the texts of comparisons.

"Current" means not superseded (a correction replaces the judgment it supersedes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db.models import QuerySet

from annotation.calibration import gold_correct
from annotation.models import Campaign, Comparison, Judgment, PreferenceExport, Snapshot

if TYPE_CHECKING:
    from annotation.aggregation import PairVote


def snapshot_votes(*, campaign: Campaign) -> list[PairVote]:
    """Current judgments on the campaign's regular comparisons, ordered by judgment id."""
    from annotation.aggregation import PairVote  # pandas: kept out of the web's URL conf

    rows = (
        Judgment.objects.filter(
            campaign=campaign, superseded_by__isnull=True,
            comparison__kind=Comparison.Kind.REGULAR,
        )
        .order_by("id")
        .values_list("comparison_id", "annotator_id", "choice")
        .iterator(chunk_size=5000)
    )
    return [PairVote(*row) for row in rows]


def annotator_gold_counts(*, campaign: Campaign) -> dict[int, tuple[int, int]]:
    """Per annotator id: (n_correct, n_gold) over current judgments on gold calibration items.

    A judgment is correct when its choice is in the item's ``gold_accepts`` (the tolerance), or
    equals ``gold_choice`` when no tolerance is set (``annotation.calibration.gold_correct``).
    Swapped re-shows and transitivity closers carry no gold and are left out: they score
    self-consistency, not accuracy.
    """
    rows = (
        Judgment.objects.filter(
            campaign=campaign, superseded_by__isnull=True,
            comparison__kind=Comparison.Kind.CALIBRATION,
        )
        .values_list("annotator_id", "choice", "comparison__gold_choice",
                     "comparison__gold_accepts")
        .iterator(chunk_size=5000)
    )
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for annotator_id, choice, gold_choice, gold_accepts in rows:
        ok = gold_correct(choice, gold_choice=gold_choice, gold_accepts=gold_accepts or [])
        if ok is None:
            continue
        counts[annotator_id][0] += int(ok)
        counts[annotator_id][1] += 1
    return {annotator: (c, n) for annotator, (c, n) in counts.items()}


def snapshot_gold_votes(
    *, campaign: Campaign,
) -> tuple[list[PairVote], dict[int, tuple[str, ...]]]:
    """Current judgments on the campaign's gold calibration items, and what each item's gold
    accepts: (votes ordered by judgment id, {comparison id: accepted choices}).

    These anchor gold-anchored Dawid-Skene: the accepted choices are ``gold_accepts`` (a
    tolerance such as "A, or a tie") or, when none is set, ``(gold_choice,)``, the same rule as
    ``annotation.calibration.gold_correct``. Known-answer and degraded items carry gold;
    swapped re-shows and transitivity closers have none and are left out. Gold items nobody
    judged are left out of both. Two queries.
    """
    from annotation.aggregation import PairVote  # pandas: kept out of the web's URL conf

    rows = list(
        Judgment.objects.filter(
            campaign=campaign, superseded_by__isnull=True,
            comparison__kind=Comparison.Kind.CALIBRATION,
            comparison__gold_choice__isnull=False,
        )
        .order_by("id")
        .values_list("comparison_id", "annotator_id", "choice")
        .iterator(chunk_size=5000)
    )
    judged = {comparison_id for comparison_id, _, _ in rows}
    gold = {
        pk: tuple(accepts) if accepts else (choice,)
        for pk, choice, accepts in Comparison.objects.filter(
            campaign=campaign, kind=Comparison.Kind.CALIBRATION, gold_choice__isnull=False,
        ).values_list("id", "gold_choice", "gold_accepts").iterator(chunk_size=5000)
        if pk in judged
    }
    return [PairVote(*row) for row in rows], gold


def comparison_response_ids(*, comparison_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """comparison id -> (response A id, response B id)."""
    return {
        pk: (a, b)
        for pk, a, b in Comparison.objects.filter(pk__in=list(comparison_ids))
        .values_list("id", "response_a_id", "response_b_id")
    }


def comparisons_with_texts(*, comparison_ids: Iterable[int]) -> QuerySet[Comparison]:
    """The comparisons with prompt and both responses loaded, by id."""
    return (
        Comparison.objects.filter(pk__in=list(comparison_ids))
        .select_related("prompt", "response_a", "response_b")
        .only("id", "prompt__turns", "prompt__category", "response_a__text", "response_b__text")
        .order_by("id")
    )


# --- The researcher's data page (annotation/views/data.py) --------------------------------------

DATA_PAGE_ROWS = 100  # newest first; older ones stay in the admin's lists


def data_snapshot_list(*, campaign: Campaign | None = None) -> QuerySet[Snapshot]:
    """Snapshots for the data page, newest first, with campaign and creator loaded."""
    rows = Snapshot.objects.select_related("campaign", "created_by").order_by("-created_at",
                                                                             "-pk")
    if campaign is not None:
        rows = rows.filter(campaign=campaign)
    return rows[:DATA_PAGE_ROWS]


def data_export_list(*, campaign: Campaign | None = None) -> QuerySet[PreferenceExport]:
    """Exports for the data page, newest first, with campaign and requester loaded."""
    rows = PreferenceExport.objects.select_related("campaign", "requested_by").order_by(
        "-created_at", "-pk")
    if campaign is not None:
        rows = rows.filter(campaign=campaign)
    return rows[:DATA_PAGE_ROWS]


def data_export_get(*, export_id: int) -> PreferenceExport | None:
    """One export with what its row on the data page shows."""
    return (PreferenceExport.objects.select_related("campaign", "requested_by")
            .filter(pk=export_id).first())
