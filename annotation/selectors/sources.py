"""Reads about who stands behind judgments: people, or an imported dataset's own labels.

An imported row's preference is kept as the judgment of a ``dataset`` annotator per source
(``annotation.services.imports``). Those judgments are kept apart from the people's: the
quality frame, drift scan and annotator tables read people only, snapshots and exports choose
with ``sources``, and ``source_agreement_list`` measures each person against each source.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from annotation.models import AnnotatorProfile, Campaign, Comparison, Judgment
from annotation.quality import wilson_interval  # numpy only

# Which judgments a snapshot or export aggregates.
SOURCES_ALL = "all"          # everyone: people, dataset labels and AI judges
SOURCES_PEOPLE = "people"    # persons and simulated annotators: not a dataset, not an AI judge
SOURCES_DATASET = "dataset"  # the dataset labels alone
SOURCES = (SOURCES_ALL, SOURCES_PEOPLE, SOURCES_DATASET)


def machine_annotator_ids() -> set[int]:
    """User ids of the annotators who are not people: datasets' labels and AI judges (left out
    of a ``people`` snapshot, so RLHF and RLAIF labels can be compared)."""
    return set(AnnotatorProfile.objects.filter(
        kind__in=[AnnotatorProfile.Kind.DATASET, AnnotatorProfile.Kind.AI_JUDGE])
        .values_list("user_id", flat=True))


def dataset_annotator_ids() -> set[int]:
    """User ids of every ``dataset`` annotator (one per imported source: a handful)."""
    return set(AnnotatorProfile.objects.filter(kind=AnnotatorProfile.Kind.DATASET)
               .values_list("user_id", flat=True))


@dataclass(frozen=True)
class SourceAgreement:
    """How often one person's current judgments match one source's labels.

    ``agreement`` = ``n_agree / n``, over the regular comparisons that both the person and the
    source judged; a choice agrees only when it equals the label (a tie against a decisive
    label does not agree). ``ci_low``/``ci_high``: the 95% Wilson interval.
    """

    annotator_id: int
    username: str
    source: str
    n: int
    n_agree: int

    @property
    def agreement(self) -> float:
        return self.n_agree / self.n if self.n else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.n_agree, self.n)


def source_agreement_list(*, campaign: Campaign) -> list[SourceAgreement]:
    """Each person's agreement with each source's labels in ``campaign``, by username, source.

    Three queries; people without a judgment on a labelled comparison are left out.
    """
    dataset_ids = dataset_annotator_ids()
    labels: dict[int, list[tuple[str, str]]] = defaultdict(list)  # comparison -> (source, choice)
    for comparison_id, source, choice in (
        Judgment.objects.filter(campaign=campaign, annotator_id__in=dataset_ids,
                                superseded_by__isnull=True,
                                comparison__kind=Comparison.Kind.REGULAR)
        .values_list("comparison_id", "annotator__annotator_profile__source", "choice")
        .iterator(chunk_size=5000)
    ):
        labels[comparison_id].append((source, choice))
    if not labels:
        return []
    counts: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    # The people's judgments are read whole and matched here, not joined to the labels in SQL:
    # right after a bulk import the planner's row estimates are stale and it chose a nested
    # loop that took 23 s for 40,000 labels and no people judgments (0.2 s this way).
    for annotator_id, username, comparison_id, choice in (
        Judgment.objects.filter(campaign=campaign, superseded_by__isnull=True,
                                comparison__kind=Comparison.Kind.REGULAR)
        .exclude(annotator_id__in=dataset_ids)
        .values_list("annotator_id", "annotator__username", "comparison_id", "choice")
        .iterator(chunk_size=5000)
    ):
        for source, label in labels.get(comparison_id, ()):
            tally = counts[(annotator_id, username, source)]
            tally[0] += 1
            tally[1] += int(choice == label)
    return [
        SourceAgreement(annotator_id=annotator_id, username=username, source=source, n=n,
                        n_agree=agree)
        for (annotator_id, username, source), (n, agree)
        in sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][2]))
    ]
