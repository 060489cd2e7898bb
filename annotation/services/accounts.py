"""Accounts and roles: who may create, change, deactivate and reset whom.

Roles are Django groups of the same name. Every account change goes through a service here,
which takes the acting user as ``by``: a superuser (or ``by=None``, meaning the system itself:
management commands, the demo seed, simulated annotators) may do anything; an admin manages
only *managed* accounts (see ``users_manageable_by``) and may grant only the managed roles.
The Django admin (``annotation/admin_accounts.py``) calls these services and shows an admin
nothing else, so the rule holds in one place for every caller.
"""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth import password_validation
from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet

from annotation.errors import ApplicationError, ForbiddenError
from annotation.models import AnnotatorProfile


class Role(StrEnum):
    """Gaplab's roles, stored as Django groups of the same name."""

    ANNOTATOR = "annotator"
    ADMIN = "admin"
    RESEARCHER = "researcher"


# The roles a non-superuser admin may grant, and the only groups a managed account may hold.
# Granting "admin" would let an admin mint peers who could then act on its behalf.
MANAGED_ROLES: frozenset[Role] = frozenset({Role.ANNOTATOR, Role.RESEARCHER})
# Roles that use the Django admin; is_staff follows the role and is never set by hand.
STAFF_ROLES: frozenset[Role] = frozenset({Role.ADMIN, Role.RESEARCHER})


def user_roles(user: AbstractBaseUser) -> set[Role]:
    """The user's roles; a superuser also holds ``Role.ADMIN``; anonymous holds none."""
    if not user.is_authenticated:
        return set()
    names = {g.name for g in user.groups.all()}
    roles = {r for r in Role if r.value in names}
    if user.is_superuser:
        roles.add(Role.ADMIN)
    return roles


def _is_system_or_superuser(by: AbstractBaseUser | None) -> bool:
    return by is None or bool(by.is_superuser)


def users_manageable_by(*, by: AbstractBaseUser | None) -> QuerySet[User]:
    """The accounts ``by`` may see and change.

    A superuser (or the system) manages everyone. An admin manages accounts whose whole power is
    at most a managed role: not a superuser, no group outside ``MANAGED_ROLES`` (so no other
    admin, itself included) and no raw permission granted to the user directly. Without the last
    two, an admin could reset the password of a more powerful account and log in as it.
    Dataset-label and AI-judge accounts are the system's alone. Anyone else manages no one.
    """
    if _is_system_or_superuser(by):
        return User.objects.all()
    if Role.ADMIN not in user_roles(by):
        return User.objects.none()
    foreign_groups = Group.objects.exclude(name__in=[r.value for r in MANAGED_ROLES])
    return (
        User.objects.filter(is_superuser=False)
        .exclude(groups__in=foreign_groups)
        .exclude(user_permissions__isnull=False)
        # A dataset's labels and an AI judge are no one's account: an admin who could set
        # its password or role could log in as it and add judgments in its name.
        .exclude(annotator_profile__kind__in=[AnnotatorProfile.Kind.DATASET,
                                              AnnotatorProfile.Kind.AI_JUDGE])
    )


def user_manageable_by(*, by: AbstractBaseUser | None, user: User) -> bool:
    """Whether ``by`` may change ``user``; reads the database, not ``user``'s unsaved fields."""
    if _is_system_or_superuser(by):
        return True
    return user.pk is not None and users_manageable_by(by=by).filter(pk=user.pk).exists()


def _authorize(*, by: AbstractBaseUser | None, user: User | None = None,
               role: Role | None = None) -> None:
    """Raise ForbiddenError unless ``by`` may act on ``user`` and grant ``role``."""
    if _is_system_or_superuser(by):
        return
    if Role.ADMIN not in user_roles(by):
        raise ForbiddenError("Only admins manage accounts.")
    if role is not None and role not in MANAGED_ROLES:
        raise ForbiddenError(f"Only a superuser can grant the {role.value} role.")
    if user is not None and not user_manageable_by(by=by, user=user):
        raise ForbiddenError("Only a superuser can change this account.")


def _role_apply(*, user: User, role: Role,
                annotator_kind: str = AnnotatorProfile.Kind.PERSON, source: str = "") -> None:
    """Make ``role`` the user's only role group, with the staff flag and profile it implies."""
    role_groups = Group.objects.filter(name__in=[r.value for r in Role])
    user.groups.remove(*role_groups)
    group, _ = Group.objects.get_or_create(name=role.value)
    user.groups.add(group)
    # A superuser stays staff whatever its role: it runs the admin.
    is_staff = role in STAFF_ROLES or user.is_superuser
    if user.is_staff != is_staff:
        user.is_staff = is_staff
        user.save(update_fields=["is_staff"])
    if role is Role.ANNOTATOR:
        # Kept when the role is taken away: it carries the pause history of past judgments.
        AnnotatorProfile.objects.get_or_create(
            user=user, defaults={"kind": annotator_kind, "source": source[:300]})


@transaction.atomic
def user_create_with_role(
    *, username: str, password: str | None, role: Role, email: str = "",
    by: AbstractBaseUser | None = None,
    annotator_kind: str = AnnotatorProfile.Kind.PERSON, source: str = "",
) -> User:
    """Create a user in the role's group; admins and researchers may use the Django admin.

    ``password=None`` makes an account that cannot log in (simulated annotators, dataset
    labels); ``annotator_kind`` and ``source`` go on an annotator's profile. The password
    is not run through the validators here (the admin's form does that; seeds use fixed ones).
    Raises ForbiddenError when ``by`` may not grant ``role``, ApplicationError on a bad or taken
    username.
    """
    _authorize(by=by, role=role)
    user = User(username=username, email=email)
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    try:
        user.full_clean()
    except ValidationError as exc:
        raise ApplicationError("Invalid account.", extra={"fields": exc.message_dict}) from exc
    user.save()
    _role_apply(user=user, role=role, annotator_kind=annotator_kind, source=source)
    return user


@transaction.atomic
def user_role_set(*, user: User, role: Role, by: AbstractBaseUser | None = None) -> User:
    """Make ``role`` the user's one role: its group, its staff flag, its annotator profile.

    Idempotent. Other role groups are removed; groups that are not roles are left alone.
    Raises ForbiddenError when ``by`` may not change ``user`` or grant ``role``.
    """
    _authorize(by=by, user=user, role=role)
    _role_apply(user=user, role=role)
    return user


@transaction.atomic
def user_details_update(
    *, user: User, username: str, first_name: str, last_name: str, email: str,
    by: AbstractBaseUser | None = None,
) -> User:
    """Change the user's name and address; nothing that carries power.

    Raises ForbiddenError when ``by`` may not change ``user``, ApplicationError on a bad or taken
    username.
    """
    _authorize(by=by, user=user)
    user.username, user.first_name, user.last_name, user.email = (
        username, first_name, last_name, email
    )
    try:
        user.full_clean(exclude=["password"])
    except ValidationError as exc:
        raise ApplicationError("Invalid account.", extra={"fields": exc.message_dict}) from exc
    user.save(update_fields=["username", "first_name", "last_name", "email"])
    return user


@transaction.atomic
def user_deactivate(*, user: User, by: AbstractBaseUser | None = None) -> User:
    """Stop the user from logging in or using the API; keeps everything they made. Idempotent.

    Django's session backend and DRF's token authentication both refuse an inactive user, so
    open sessions and the API token stop working at once. Raises ForbiddenError when ``by`` may
    not change ``user``.
    """
    _authorize(by=by, user=user)
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def user_reactivate(*, user: User, by: AbstractBaseUser | None = None) -> User:
    """Let a deactivated user log in again. Idempotent; same permission as ``user_deactivate``."""
    _authorize(by=by, user=user)
    if not user.is_active:
        user.is_active = True
        user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def user_password_set(
    *, user: User, password: str | None, by: AbstractBaseUser | None = None,
) -> User:
    """Reset the user's password; ``None`` turns password login off for the account.

    The password must pass the configured validators (ApplicationError otherwise). Other
    sessions of the user end: Django ties a session to the password hash. Raises ForbiddenError
    when ``by`` may not change ``user``.
    """
    _authorize(by=by, user=user)
    if password is None:
        user.set_unusable_password()
    else:
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise ApplicationError("Password rejected.",
                                   extra={"fields": {"password": exc.messages}}) from exc
        user.set_password(password)
    user.save(update_fields=["password"])
    return user
