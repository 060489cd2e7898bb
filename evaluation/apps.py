from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate

# What the admin and researcher roles may do with experiments in the Django admin: "add" queues
# one through experiment_create, "change" is the cancel action; rows are otherwise view-only
# job state that only the worker writes. No delete: results stay.
_ROLE_PERMISSIONS = {role: {"experiment": ("view", "add", "change")}
                     for role in ("admin", "researcher")}


def _sync_evaluation_roles(sender, **kwargs) -> None:
    """Grant the role groups their evaluation permissions (after annotation's roles_sync)."""
    from django.contrib.auth.models import Group, Permission

    for role, models in _ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = Permission.objects.filter(
            content_type__app_label="evaluation",
            codename__in=[f"{a}_{m}" for m, actions in models.items() for a in actions])
        group.permissions.add(*wanted)


class EvaluationConfig(AppConfig):
    name = "evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from evaluation.rewards import campaign_true_reward
        from training.rewards import true_reward_resolver_register

        true_reward_resolver_register(campaign_true_reward)
        post_migrate.connect(_sync_evaluation_roles, sender=self,
                             dispatch_uid="gaplab-evaluation-roles-sync")
