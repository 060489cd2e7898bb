"""World campaigns do not give calibration items away by content (issue 6 item 3).

A calibration item's prompt also appears in regular items; a known-answer pair never repeats one
of its prompt's regular pairs; a degraded reply keeps its original's length where the transform
allows (wrong number, unrelated answer; a truncation is shorter by nature).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest

from annotation.models import Comparison, Response
from evaluation.services import world_campaign_create


def _campaign(name: str, **kw):
    args = {"world_name": "arithmetic", "name": name, "n_prompts": 60, "seed": 7,
            "calibration_rate": 0.2, "pairs_per_prompt": 2, "n_calibration": 40}
    args.update(kw)
    return world_campaign_create(**args)


def _good_and_worse(c: Comparison) -> tuple[Response, Response]:
    if c.gold_choice == "A":
        return c.response_a, c.response_b
    return c.response_b, c.response_a


@pytest.mark.django_db
@pytest.mark.parametrize(("n_prompts", "n_calibration"), [(60, 40), (10, 25)])
def test_every_calibration_prompt_also_appears_in_regular_items(n_prompts, n_calibration):
    """The share of calibration items whose prompt is in no regular item is 0, also when there
    are more calibration items than prompts."""
    campaign = _campaign(f"spread-{n_prompts}", n_prompts=n_prompts, n_calibration=n_calibration)
    comparisons = Comparison.objects.filter(campaign=campaign)
    regular_prompts = set(comparisons.filter(kind="regular").values_list("prompt_id", flat=True))
    calibration = list(comparisons.filter(kind="calibration").values_list("prompt_id", flat=True))
    assert len(calibration) == n_calibration
    alone = [p for p in calibration if p not in regular_prompts]
    assert len(alone) / len(calibration) == 0
    # Every prompt of the campaign carries regular work: no prompt exists for gold alone.
    assert regular_prompts == set(campaign.prompts.values_list("id", flat=True))


@pytest.mark.django_db
def test_no_calibration_pair_repeats_a_regular_pair_of_its_prompt():
    campaign = _campaign("pairs", n_prompts=20, n_calibration=30)
    pairs = defaultdict(list)
    for c in Comparison.objects.filter(campaign=campaign).order_by("id"):
        pairs[c.prompt_id].append(frozenset((c.response_a_id, c.response_b_id)))
    for prompt_pairs in pairs.values():
        assert len(prompt_pairs) == len(set(prompt_pairs))


@pytest.mark.django_db
def test_degraded_replies_keep_the_original_length_where_the_transform_allows():
    """Mean length(degraded) / length(original) is near 1 for wrong-number and unrelated
    replies; truncated replies are shorter, as they must be."""
    campaign = _campaign("lengths", n_prompts=150, n_calibration=150)
    ratios = defaultdict(list)
    for c in (Comparison.objects.filter(campaign=campaign, calibration_type="degraded")
              .select_related("response_a", "response_b")):
        good, worse = _good_and_worse(c)
        transform = worse.source_version.removeprefix("degraded:")
        ratios[transform].append(len(worse.text) / len(good.text))
        assert good.source_version == "candidate"
        assert worse.features["utility"] < good.features["utility"]
    assert {"wrong_number", "unrelated", "truncate"} <= set(ratios)
    assert min(len(v) for v in ratios.values()) >= 10, {k: len(v) for k, v in ratios.items()}
    wrong, unrelated = statistics.mean(ratios["wrong_number"]), statistics.mean(ratios["unrelated"])
    assert wrong == pytest.approx(1.0, abs=0.03), wrong
    assert unrelated == pytest.approx(1.0, abs=0.1), unrelated
    assert statistics.mean(ratios["truncate"]) < 0.9  # inherent, and documented
