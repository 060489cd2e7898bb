from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate

# What the admin and researcher roles may do with experiments and eval rounds in the Django
# admin: "add" queues an experiment through experiment_create (a round through
# eval_round_create), "change" is the cancel (compute win rate) action; rows are otherwise
# view-only state that only the services write. No delete: results stay.
_ROLE_PERMISSIONS = {role: {"experiment": ("view", "add", "change"),
                            "evalround": ("view", "add", "change")}
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
