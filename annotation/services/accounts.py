from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.db import transaction

from annotation.models import AnnotatorProfile


class Role(StrEnum):
    """Gaplab's roles, stored as Django groups of the same name."""

    ANNOTATOR = "annotator"
    ADMIN = "admin"
    RESEARCHER = "researcher"


@transaction.atomic
def user_create_with_role(
    *, username: str, password: str | None, role: Role, email: str = ""
) -> User:
    """Create a user in the role's group; admins and researchers may use the Django admin.

    ``password=None`` makes an account that cannot log in (simulated annotators).
    """
    user = User(username=username, email=email, is_staff=role in (Role.ADMIN, Role.RESEARCHER))
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    user.full_clean()
    user.save()
    group, _ = Group.objects.get_or_create(name=role.value)
    user.groups.add(group)
    if role is Role.ANNOTATOR:
        AnnotatorProfile.objects.create(user=user)
    return user


def user_roles(user: AbstractBaseUser) -> set[Role]:
    if not user.is_authenticated:
        return set()
    names = {g.name for g in user.groups.all()}
    roles = {r for r in Role if r.value in names}
    if user.is_superuser:
        roles.add(Role.ADMIN)
    return roles
