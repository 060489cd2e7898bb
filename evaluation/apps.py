from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate

# What the admin and researcher roles may do with experiments in the Django admin: "add" queues
# one through experiment_create, "change" is the cancel action; rows are otherwise view-only
# job state that only the worker writes. No delete: results stay.
_ROLE_PERMISSIONS = {role: {"experiment": ("view", "add", "change")}
                     for role in ("admin", "researcher")}


def _sync_evaluation_roles(sender, **kwargs) -> None:
    from annotation.services.roles import role_permissions_grant

    role_permissions_grant(app_label="evaluation", permissions=_ROLE_PERMISSIONS)


class EvaluationConfig(AppConfig):
    name = "evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from evaluation.rewards import campaign_true_reward
        from training.rewards import true_reward_resolver_register

        true_reward_resolver_register(campaign_true_reward)
        post_migrate.connect(_sync_evaluation_roles, sender=self,
                             dispatch_uid="gaplab-evaluation-roles-sync")
