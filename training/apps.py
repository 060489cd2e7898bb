from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate

# What the admin and researcher roles may do with training rows in the Django admin. Runs,
# sweeps and artifacts are view-only records apart from what the services do ("add" queues a run
# through run_create, "change" on a run is the cancel action); a model's name and notes change.
# No delete: runs name their inputs with PROTECT, and history stays.
_ROLE_PERMISSIONS = {
    role: {
        "trainingrun": ("view", "add", "change"),
        "sweep": ("view",),
        "registeredmodel": ("view", "add", "change"),
        "runartifact": ("view",),
        "runmetric": ("view",),
    }
    for role in ("admin", "researcher")
}


def _sync_training_roles(sender, **kwargs) -> None:
    from annotation.services.roles import role_permissions_grant

    role_permissions_grant(app_label="training", permissions=_ROLE_PERMISSIONS)


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_sync_training_roles, sender=self,
                             dispatch_uid="gaplab-training-roles-sync")
