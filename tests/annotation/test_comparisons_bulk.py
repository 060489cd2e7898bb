"""comparisons_bulk_create: the annotation service through which other apps (world campaigns)
write prompts, responses and comparisons."""

from __future__ import annotations

import pytest

from annotation.errors import ApplicationError
from annotation.models import Comparison, Prompt, Response
from annotation.services.comparisons import (
    ComparisonSpec,
    PromptSpec,
    ResponseSpec,
    comparisons_bulk_create,
)
from tests.factories import CampaignFactory

TURNS = [{"role": "user", "content": "What is 2 + 2?"}]


def _spec(*comparisons: ComparisonSpec) -> PromptSpec:
    return PromptSpec(
        turns=TURNS, category="addition", external_id="q1", source="test",
        responses=[ResponseSpec(text="4", features={"utility": 1.0}),
                   ResponseSpec(text="5", source_model="m", source_version="v"),
                   ResponseSpec(text="four, I think", source_version="degraded:x")],
        comparisons=list(comparisons),
    )


@pytest.mark.django_db
def test_writes_prompts_responses_and_mixed_comparisons_on_one_prompt():
    campaign = CampaignFactory()
    result = comparisons_bulk_create(campaign=campaign, prompts=[_spec(
        ComparisonSpec(a=0, b=1),
        ComparisonSpec(a=2, b=0, kind="calibration", gold_choice="B", gold_accepts=("B", "tie"),
                       calibration_type="degraded"),
    )])
    assert (result.prompts, result.responses, result.comparisons, result.calibration) == (
        1, 3, 2, 1)
    regular, gold = Comparison.objects.filter(campaign=campaign).order_by("id")
    assert (regular.kind, regular.response_a.text, regular.response_b.text) == ("regular", "4",
                                                                                "5")
    assert (gold.response_a.text, gold.gold_choice, gold.gold_accepts) == (
        "four, I think", "B", ["B", "tie"])
    assert gold.prompt_id == regular.prompt_id
    assert Response.objects.get(text="4").features == {"utility": 1.0}


@pytest.mark.django_db
@pytest.mark.parametrize(("bad", "message"), [
    (ComparisonSpec(a=0, b=3), "two distinct responses"),
    (ComparisonSpec(a=1, b=1), "two distinct responses"),
    (ComparisonSpec(a=0, b=1, gold_choice="A"), "gold only on calibration"),
    (ComparisonSpec(a=0, b=1, kind="calibration", calibration_type="degraded"), "needs gold"),
    (ComparisonSpec(a=0, b=1, kind="calibration", gold_choice="A", calibration_type="magic"),
     "calibration type"),
    (ComparisonSpec(a=0, b=1, kind="calibration", gold_choice="A", gold_accepts=("B",),
                    calibration_type="known_answer"), "among those accepted"),
])
def test_a_bad_spec_writes_nothing_and_names_the_prompt(bad, message):
    campaign = CampaignFactory()
    good = _spec(ComparisonSpec(a=0, b=1))
    with pytest.raises(ApplicationError, match=message) as info:
        comparisons_bulk_create(campaign=campaign, prompts=[good, _spec(bad)])
    assert "Prompt 1" in info.value.message
    assert not Prompt.objects.filter(campaign=campaign).exists()
