"""Read a campaign's current judgments into the arrays that ``annotation/quality.py`` takes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db.models.functions import Length

from annotation.calibration import gold_correct, reshow_consistent, transitive
from annotation.choices import CHOICE_CODES
from annotation.models import Campaign, Comparison, Judgment
from annotation.quality import JudgmentFrame
from annotation.selectors.sources import dataset_annotator_ids

# The response feature that says whether a response agrees with the user's stated belief
# (set by worlds with sycophancy probes; evaluation/worlds).
AGREEMENT_FEATURE = "agrees_with_user"


@dataclass(frozen=True)
class CampaignFrame:
    frame: JudgmentFrame
    annotator_ids: list[int]  # frame.annotator index -> user id
    judgment_ids: np.ndarray
    created_at: list[datetime]


def judgment_frame(*, campaign: Campaign) -> CampaignFrame:
    """Current (not superseded) judgments of the campaign's people in chronological order.

    Dataset annotators (an import's own labels) are left out: they are not the people whose
    quality, biases and drift the frame feeds (``annotation.selectors.sources``).
    """
    rows = list(
        Judgment.objects.filter(campaign=campaign, superseded_by__isnull=True)
        .exclude(annotator_id__in=dataset_annotator_ids())
        .annotate(len_a=Length("comparison__response_a__text"),
                  len_b=Length("comparison__response_b__text"))
        .order_by("created_at", "id")
        .values_list(
            "id", "annotator_id", "comparison_id", "choice", "strength", "a_on_left",
            "seconds_spent", "created_at", "len_a", "len_b",
            "comparison__kind", "comparison__gold_choice", "comparison__gold_accepts",
            "comparison__calibration_type", "comparison__source_comparison_id",
            "comparison__prompt_id", "comparison__response_a_id", "comparison__response_b_id",
            f"comparison__response_a__features__{AGREEMENT_FEATURE}",
            f"comparison__response_b__features__{AGREEMENT_FEATURE}",
        )
    )
    annotator_ids = sorted({r[1] for r in rows})
    a_index = {uid: i for i, uid in enumerate(annotator_ids)}
    c_index: dict[int, int] = {}
    n = len(rows)
    consistent = np.full(n, np.nan)
    is_reshow = np.zeros(n, dtype=bool)
    # (annotator, comparison) -> choice, for scoring re-shows against the original answer.
    answer = {(r[1], r[2]): r[3] for r in rows}
    triangles: dict[tuple[int, int], list[int]] = defaultdict(list)
    gold_ok = np.full(n, np.nan)
    # The gold choice's code on calibration rows that have one (-1 elsewhere): the anchor of
    # the gold-anchored Dawid-Skene fit (annotation/quality.py).
    gold_label = np.full(n, -1, dtype=np.int64)
    agree = np.full(n, np.nan)
    for i, r in enumerate(rows):
        (_, uid, cid, choice, _, _, _, _, _, _, kind, gold, accepts, ctype, source, prompt_id,
         _, _, agree_a, agree_b) = r
        c_index.setdefault(cid, len(c_index))
        if kind == Comparison.Kind.CALIBRATION:
            ok = gold_correct(choice, gold_choice=gold, gold_accepts=accepts or [])
            if ok is not None:
                gold_ok[i] = float(ok)
            if gold in CHOICE_CODES:
                gold_label[i] = CHOICE_CODES[gold]
            if ctype == Comparison.CalibrationType.SWAPPED_RESHOW:
                is_reshow[i] = True
                original = answer.get((uid, source))
                if original in ("A", "B") and choice in ("A", "B"):
                    consistent[i] = float(reshow_consistent(choice, original))
            elif ctype == Comparison.CalibrationType.TRANSITIVITY and choice in ("A", "B"):
                # Built so that response A is the one the annotator's own chain ranks first.
                consistent[i] = float(choice == "A")
        elif kind == Comparison.Kind.REGULAR and choice in ("A", "B"):
            triangles[(uid, prompt_id)].append(i)
        if agree_a is not None and agree_b is not None and agree_a != agree_b:
            agree[i] = float(agree_a) - float(agree_b)
    for members in triangles.values():
        if len(members) >= 3:
            _score_triangles(rows, members, consistent)
    frame = JudgmentFrame(
        annotator=np.array([a_index[r[1]] for r in rows], dtype=np.int64),
        item=np.array([c_index[r[2]] for r in rows], dtype=np.int64),
        choice=np.array([CHOICE_CODES[r[3]] for r in rows], dtype=np.int64),
        strength=np.array([r[4] or 0 for r in rows], dtype=np.int64),
        a_on_left=np.array([r[5] for r in rows], dtype=bool),
        seconds=np.array([r[6] for r in rows], dtype=float),
        len_diff=np.array([(r[8] or 0) - (r[9] or 0) for r in rows], dtype=float),
        agree_diff=agree,
        gold_ok=gold_ok,
        consistent=consistent,
        is_reshow=is_reshow,
        is_calibration=np.array([r[10] == Comparison.Kind.CALIBRATION for r in rows],
                                dtype=bool),
        gold_label=gold_label,
    )
    return CampaignFrame(frame=frame, annotator_ids=annotator_ids,
                         judgment_ids=np.array([r[0] for r in rows], dtype=np.int64),
                         created_at=[r[7] for r in rows])


def _score_triangles(rows: list, members: list[int], consistent: np.ndarray) -> None:
    """Mark the last judgment of each closed triangle X-Y-Z of one annotator on one prompt."""
    beats: dict[tuple[int, int], tuple[int, int]] = {}  # (x, y) sorted -> (orientation, row)
    for i in members:
        a, b, choice = rows[i][16], rows[i][17], rows[i][3]
        x, y = sorted((a, b))
        winner = a if choice == "A" else b
        beats[(x, y)] = (1 if winner == x else -1, i)
    responses = sorted({r for pair in beats for r in pair})
    for xi, x in enumerate(responses):
        for yi in range(xi + 1, len(responses)):
            y = responses[yi]
            for z in responses[yi + 1:]:
                if (x, y) in beats and (y, z) in beats and (x, z) in beats:
                    (oxy, r1), (oyz, r2), (oxz, r3) = beats[(x, y)], beats[(y, z)], beats[(x, z)]
                    consistent[max(r1, r2, r3)] = float(transitive(oxy, oyz, oxz))
