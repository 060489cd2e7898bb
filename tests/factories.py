"""factory_boy factories for the annotation models."""

from __future__ import annotations

import factory
from django.contrib.auth.models import User

from annotation.models import Campaign, Comparison, Prompt, Response


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"campaign-{n}")
    title = factory.Faker("sentence", nb_words=3)
    overlap = 3
    calibration_rate = 0.0
    reshow_rate = 0.0  # tests that want re-shows ask for them; keeps sequences exact


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    campaign = factory.SubFactory(CampaignFactory)
    turns = factory.LazyFunction(lambda: [{"role": "user", "content": "What is 2 + 2?"}])


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Response number {n}.")


class ComparisonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comparison

    campaign = factory.SubFactory(CampaignFactory)
    prompt = factory.SubFactory(PromptFactory, campaign=factory.SelfAttribute("..campaign"))
    response_a = factory.SubFactory(ResponseFactory, prompt=factory.SelfAttribute("..prompt"))
    response_b = factory.SubFactory(ResponseFactory, prompt=factory.SelfAttribute("..prompt"))
    kind = Comparison.Kind.REGULAR


class CalibrationFactory(ComparisonFactory):
    kind = Comparison.Kind.CALIBRATION
    gold_choice = "A"


def make_users(n: int, *, prefix: str = "rater") -> list[User]:
    from annotation.services import Role, user_create_with_role

    return [
        user_create_with_role(username=f"{prefix}{i}", password="pw-12345678",
                              role=Role.ANNOTATOR)
        for i in range(n)
    ]
