"""Creating preference calibration items: degraded pairs, swapped re-shows, transitivity closers.

Known-answer pairs with a tolerance come from import (``gold`` + ``accepts``) or the admin.
"""

from __future__ import annotations

import random

from django.db import transaction
from django.db.models import Q

from annotation.calibration import TransformError, degrade
from annotation.errors import ApplicationError
from annotation.models import Choice, Comparison, Judgment, Response

_system_random = random.SystemRandom()


@transaction.atomic
def calibration_degraded_create(
    *, comparison: Comparison, transform: str, rng: random.Random | None = None
) -> Comparison:
    """Make a degraded pair from a comparison's first response: it against a worse transform.

    The good response lands on a random canonical side; gold is that side, no tolerance.
    Raises ApplicationError when the transform does not apply (say, no number to change).
    """
    rng = rng or _system_random
    good = comparison.response_a
    pool = list(
        Response.objects.filter(prompt__campaign_id=comparison.campaign_id)
        .exclude(prompt_id=comparison.prompt_id)
        .values_list("text", flat=True)[:200]
    )
    try:
        worse_text = degrade(good.text, transform, rng=rng, unrelated_pool=pool)
    except TransformError as exc:
        raise ApplicationError(f"Cannot make a {transform} pair: {exc}.") from exc
    worse = Response.objects.create(
        prompt=good.prompt, text=worse_text, source_model=f"degraded:{transform}",
        features={**good.features, "degraded": transform},
    )
    good_is_a = rng.random() < 0.5
    gold = Choice.A if good_is_a else Choice.B
    item = Comparison(
        campaign_id=comparison.campaign_id, prompt=good.prompt,
        response_a=good if good_is_a else worse, response_b=worse if good_is_a else good,
        kind=Comparison.Kind.CALIBRATION, calibration_type=Comparison.CalibrationType.DEGRADED,
        gold_choice=gold, gold_accepts=[gold], source_comparison=comparison,
    )
    item.full_clean()
    item.save()
    return item


def calibration_reshow_create(*, judgment: Judgment) -> Comparison | None:
    """Schedule a swapped re-show of a decisive judgment for its author; None if not apt.

    The re-show exchanges canonical A and B and is issued to the author alone with the
    original's ``a_on_left`` (``assignment_issue_next`` copies it), so each text lands on the
    other side of the screen: a self-consistent annotator answers the mirrored choice and a
    position-biased one does not. The pair itself repeats one seen before; that is inherent.
    """
    if judgment.choice not in (Choice.A, Choice.B):
        return None
    original = judgment.comparison
    if original.kind != Comparison.Kind.REGULAR:
        return None
    reshow, created = Comparison.objects.get_or_create(
        campaign_id=original.campaign_id, source_comparison=original,
        calibration_type=Comparison.CalibrationType.SWAPPED_RESHOW,
        for_annotator_id=judgment.annotator_id,
        defaults={
            "prompt_id": original.prompt_id, "response_a_id": original.response_b_id,
            "response_b_id": original.response_a_id, "kind": Comparison.Kind.CALIBRATION,
        },
    )
    return reshow if created else None


def _orientation(choice: str, x_id: int, a_id: int) -> int:
    """+1 when response x won the comparison whose A is ``a_id``; -1 when it lost."""
    x_is_a = x_id == a_id
    return 1 if (choice == Choice.A) == x_is_a else -1


def calibration_transitivity_closer_create(*, judgment: Judgment) -> Comparison | None:
    """After X>Y and Y>Z from one annotator on one prompt, ask them X vs Z if nobody will.

    Created only when the campaign holds no comparison of X and Z (with three or more responses
    imported, every pair exists and transitivity is scored from the regular judgments).
    """
    if judgment.choice not in (Choice.A, Choice.B):
        return None
    comparison = judgment.comparison
    if comparison.kind != Comparison.Kind.REGULAR:
        return None
    here = {comparison.response_a_id, comparison.response_b_id}
    siblings = (
        Judgment.objects.filter(
            annotator_id=judgment.annotator_id, comparison__prompt_id=comparison.prompt_id,
            comparison__kind=Comparison.Kind.REGULAR, choice__in=[Choice.A, Choice.B],
            superseded_by__isnull=True,
        )
        .exclude(pk=judgment.pk)
        .select_related("comparison")
    )
    winner = comparison.response_a_id if judgment.choice == Choice.A else comparison.response_b_id
    loser = (here - {winner}).pop()
    for other in siblings:
        pair = {other.comparison.response_a_id, other.comparison.response_b_id}
        shared = pair & here
        if len(shared) != 1:
            continue
        y = shared.pop()
        z = (pair - {y}).pop()
        y_beats_z = _orientation(other.choice, y, other.comparison.response_a_id) == 1
        # Chains X>Y>Z: (winner, loser=y) then y>z; or z>y then (y=winner) > loser.
        if y == loser and y_beats_z:
            x_id, z_id = winner, z
        elif y == winner and not y_beats_z:
            x_id, z_id = z, loser
        else:
            continue
        exists = Comparison.objects.filter(campaign_id=comparison.campaign_id).filter(
            Q(response_a_id=x_id, response_b_id=z_id) | Q(response_a_id=z_id, response_b_id=x_id)
        )
        if exists.exists():
            continue
        return Comparison.objects.create(
            campaign_id=comparison.campaign_id, prompt_id=comparison.prompt_id,
            response_a_id=x_id, response_b_id=z_id, kind=Comparison.Kind.CALIBRATION,
            calibration_type=Comparison.CalibrationType.TRANSITIVITY,
            for_annotator_id=judgment.annotator_id, source_comparison=comparison,
            source_comparison_2=other.comparison,
        )
    return None
