"""Role checks for pages (decorator) and the API (DRF permission classes)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from annotation.services.accounts import Role, user_roles


class RoleRequired(PermissionDenied):
    """The 403 of a page that needs one of ``roles``: the 403 page (``config.handlers``) names
    them, and the log says one line for it, without a traceback (``ForbiddenWithoutTraceback``
    in ``config.handlers``)."""

    def __init__(self, roles: tuple[Role, ...]) -> None:
        self.roles = tuple(Role(r).value for r in roles)
        super().__init__(f"This page needs the {' or '.join(self.roles)} role.")


def role_required(*roles: Role) -> Callable:
    """Page decorator: log in first, then 403 unless the user holds one of ``roles``."""

    def decorator(view: Callable) -> Callable:
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not user_roles(request.user) & set(roles):
                raise RoleRequired(roles)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class _HasRole(BasePermission):
    roles: frozenset[Role] = frozenset()

    def has_permission(self, request, view) -> bool:
        return bool(user_roles(request.user) & self.roles)


class IsAnnotator(_HasRole):
    roles = frozenset({Role.ANNOTATOR})


class IsAdminOrResearcher(_HasRole):
    roles = frozenset({Role.ADMIN, Role.RESEARCHER})


class HasAnyRole(_HasRole):
    roles = frozenset(Role)
