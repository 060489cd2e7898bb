from __future__ import annotations

from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from evaluation.rewards import campaign_true_reward
        from training.rewards import true_reward_resolver_register

        true_reward_resolver_register(campaign_true_reward)
