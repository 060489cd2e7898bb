"""Keep the role groups and their Django-admin permissions in place (run after migrate).

No role holds a permission on auth.group, auth.permission or authtoken: whoever can edit a
group, a permission or a token can make themselves anything. Admins add and change users, and
``annotation/admin_accounts.py`` narrows that to the accounts and roles that
``annotation.services.accounts`` lets them manage.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

# codename prefixes per model. Judgments are append-only and assignments carry claim state that
# only the assignment services keep consistent, so both are view-only for everyone; annotator
# profiles are paused and un-paused by the quality services (which record why and since when).
_ROLE_PERMISSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "admin": {
        "annotation.campaign": ("view", "add", "change", "delete"),
        "annotation.prompt": ("view", "add", "change", "delete"),
        "annotation.response": ("view", "add", "change", "delete"),
        "annotation.comparison": ("view", "add", "change", "delete"),
        "annotation.assignment": ("view",),
        "annotation.judgment": ("view",),
        "annotation.annotatorprofile": ("view",),
        "annotation.preferenceexport": ("view", "add"),
        "annotation.annotatorquality": ("view",),
        "annotation.campaignquality": ("view",),
        "annotation.driftalert": ("view",),
        "annotation.snapshot": ("view", "add"),
        "auth.user": ("view", "add", "change"),
    },
    "researcher": {
        "annotation.campaign": ("view", "add", "change"),
        "annotation.prompt": ("view", "add", "change"),
        "annotation.response": ("view", "add", "change"),
        "annotation.comparison": ("view", "add", "change"),
        "annotation.assignment": ("view",),
        "annotation.judgment": ("view",),
        "annotation.annotatorprofile": ("view",),
        "annotation.preferenceexport": ("view", "add"),
        "annotation.annotatorquality": ("view",),
        "annotation.campaignquality": ("view",),
        "annotation.driftalert": ("view",),
        "annotation.snapshot": ("view", "add"),
    },
    "annotator": {},
}


def roles_sync() -> None:
    """Create the role groups and give each exactly its permissions; safe to run again."""
    for role, models in _ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for label, actions in models.items():
            app_label, model = label.split(".")
            wanted.extend(
                Permission.objects.filter(
                    content_type__app_label=app_label, content_type__model=model,
                    codename__in=[f"{a}_{model}" for a in actions],
                )
            )
        group.permissions.set(wanted)


def role_permissions_grant(*, app_label: str,
                           permissions: dict[str, dict[str, tuple[str, ...]]]) -> None:
    """Add another app's permissions to the role groups: ``{role: {model: actions}}``.

    For the apps above annotation (training, evaluation), which annotation must not import:
    each calls this from its own ``post_migrate`` (after ``roles_sync``, which runs first as
    annotation is installed first and which sets only annotation's permissions). Safe to run
    again."""
    for role, models in permissions.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*Permission.objects.filter(
            content_type__app_label=app_label,
            codename__in=[f"{a}_{m}" for m, actions in models.items() for a in actions]))

