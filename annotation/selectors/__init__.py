"""Every non-trivial read of the annotation app, by subject; the annotator's own reads are
re-exported here (``from annotation import selectors; selectors.comparison_for_annotator``).

- ``annotator``: what an annotator may see (the one access path to a comparison's texts),
  progress, their assignments; judgment lists.
- ``quality``: the dashboards' reads (annotator table, timelines, campaign charts, alerts).
- ``frame``: a campaign's judgments as the numeric frame the quality math takes.
- ``snapshots``: current votes, gold scores and texts that snapshots aggregate.
"""

from __future__ import annotations

from annotation.selectors.annotator import (
    PROGRESS_BATCH,
    SKIP_UNDO_SECONDS,
    AnnotatorPause,
    AnnotatorProgress,
    AnnotatorView,
    annotator_pause,
    annotator_progress,
    assignment_get_for_annotator,
    assignment_live_for_annotator,
    assignment_skip_undoable,
    campaign_list_for_annotator,
    comparison_for_annotator,
    judgment_list,
)

__all__ = [
    "PROGRESS_BATCH",
    "SKIP_UNDO_SECONDS",
    "AnnotatorPause",
    "AnnotatorProgress",
    "AnnotatorView",
    "annotator_pause",
    "annotator_progress",
    "assignment_get_for_annotator",
    "assignment_live_for_annotator",
    "assignment_skip_undoable",
    "campaign_list_for_annotator",
    "comparison_for_annotator",
    "judgment_list",
]
