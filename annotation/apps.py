from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender, **kwargs) -> None:
    from annotation.services.roles import roles_sync

    roles_sync()


class AnnotationConfig(AppConfig):
    name = "annotation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Groups and permissions must exist after every migrate (tests and fresh installs too).
        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="gaplab-roles-sync")
