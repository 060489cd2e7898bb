"""Accounts in the Django admin: superusers keep Django's full UserAdmin; admins manage accounts.

An admin (a non-superuser in the ``admin`` group) creates annotator and researcher accounts,
switches them between those two roles, deactivates and reactivates them and resets their
passwords. It never sees a form field that carries power (superuser, staff, groups, raw
permissions): the role is a choice of the two managed roles, and the staff flag follows it in
``user_role_set``. Accounts it may not manage (superusers, admins, itself included, and anyone
holding another group or a raw permission) are outside its queryset, so their change, password,
history and delete pages answer as if they did not exist. Every change goes through
``annotation.services.accounts``, which checks the same rule again.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm, AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from annotation.errors import ApplicationError
from annotation.services.accounts import (
    MANAGED_ROLES,
    Role,
    user_create_with_role,
    user_deactivate,
    user_details_update,
    user_manageable_by,
    user_password_set,
    user_reactivate,
    user_role_set,
    user_roles,
    users_manageable_by,
)

# The managed roles, least powerful first, as radio buttons.
_ROLE_CHOICES = [(r.value, r.value.capitalize())
                 for r in sorted(MANAGED_ROLES, key=[Role.ANNOTATOR, Role.RESEARCHER].index)]


class ManagedUserCreationForm(AdminUserCreationForm):
    """A new annotator or researcher; the account itself is made by ``user_create_with_role``."""

    role = forms.ChoiceField(choices=_ROLE_CHOICES, widget=forms.RadioSelect)

    class Meta(AdminUserCreationForm.Meta):
        fields = ("username", "email")


class ManagedUserChangeForm(UserChangeForm):
    """Name, address, role and active flag of a managed account; nothing else is a field."""

    role = forms.ChoiceField(choices=_ROLE_CHOICES, widget=forms.RadioSelect)

    class Meta(UserChangeForm.Meta):
        fields = ("username", "password", "first_name", "last_name", "email", "is_active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "role" in self.fields and self.instance.pk is not None:
            current = sorted(r.value for r in user_roles(self.instance) & MANAGED_ROLES)
            # An account with no role, or with both, must be given exactly one.
            self.fields["role"].initial = current[0] if len(current) == 1 else None


class ServicePasswordChangeForm(AdminPasswordChangeForm):
    """Django's admin password form, saved through ``user_password_set``.

    The view has already checked that the acting user may manage ``self.user``
    (``AccountUserAdmin.get_queryset`` and ``has_change_permission``).
    """

    def save(self, commit: bool = True) -> User:
        password = (self.cleaned_data["password1"] if self.cleaned_data["set_usable_password"]
                    else None)
        return user_password_set(user=self.user, password=password)


class AccountUserAdmin(UserAdmin):
    """Django's UserAdmin for superusers; the managed-accounts view for everyone else."""

    change_password_form = ServicePasswordChangeForm
    actions = ["deactivate_accounts", "reactivate_accounts"]

    managed_add_fieldsets = (
        (None, {"classes": ("wide",),
                "fields": ("username", "email", "role", "usable_password", "password1",
                           "password2")}),
    )
    managed_fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Role", {"fields": ("role", "is_active")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )

    # --- what an admin sees ----------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        # Every object view (change, password, history, delete) looks its object up here, so an
        # account outside this queryset is "not found" for the acting user.
        users = super().get_queryset(request).prefetch_related("groups")
        if request.user.is_superuser:
            return users
        return users.filter(pk__in=users_manageable_by(by=request.user).values("pk"))

    def get_fieldsets(self, request: HttpRequest, obj: User | None = None):
        if request.user.is_superuser:
            return super().get_fieldsets(request, obj)
        return self.managed_add_fieldsets if obj is None else self.managed_fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None):
        if request.user.is_superuser or obj is None:
            return super().get_readonly_fields(request, obj)
        return ("last_login", "date_joined")

    def get_form(self, request: HttpRequest, obj: User | None = None, **kwargs: Any):
        if not request.user.is_superuser:
            kwargs["form"] = ManagedUserCreationForm if obj is None else ManagedUserChangeForm
        return super().get_form(request, obj, **kwargs)

    def get_list_display(self, request: HttpRequest):
        if request.user.is_superuser:
            return (*super().get_list_display(request), "role_names")
        return ("username", "email", "first_name", "last_name", "role_names", "is_active")

    def get_list_filter(self, request: HttpRequest):
        if request.user.is_superuser:
            return super().get_list_filter(request)
        return ("is_active",)

    @admin.display(description="roles")
    def role_names(self, obj: User) -> str:
        return ", ".join(sorted(r.value for r in user_roles(obj)))

    # --- what an admin may do --------------------------------------------------------------

    def has_change_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        return obj is None or user_manageable_by(by=request.user, user=obj)

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        # Superusers only. Deleting an annotator cascades to their open assignments without
        # releasing the claims (claimed_count), and one with judgments cannot be deleted at all
        # (PROTECT); admins deactivate instead (user_deactivate).
        return bool(request.user.is_superuser) and super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: User, form: forms.ModelForm,
                   change: bool) -> None:
        if request.user.is_superuser:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        role = Role(data["role"])
        if not change:
            password = data["password1"] if data["set_usable_password"] else None
            made = user_create_with_role(username=data["username"], email=data.get("email", ""),
                                         password=password, role=role, by=request.user)
            # The admin logs and redirects with ``obj``: point it at the row the service made.
            obj.pk = made.pk
            obj._state.adding = False
            return
        # ``obj`` already carries the form's edits in memory; the services write from a fresh
        # row so that nothing but the fields named below can reach the database.
        user = User.objects.get(pk=obj.pk)
        user_details_update(user=user, username=data["username"], first_name=data["first_name"],
                            last_name=data["last_name"], email=data["email"], by=request.user)
        if user_roles(user) & MANAGED_ROLES != {role}:
            user_role_set(user=user, role=role, by=request.user)
        if data["is_active"] and not user.is_active:
            user_reactivate(user=user, by=request.user)
        elif not data["is_active"] and user.is_active:
            user_deactivate(user=user, by=request.user)

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets,
                     change: bool) -> None:
        if request.user.is_superuser:
            super().save_related(request, form, formsets, change)
        # A managed form has no many-to-many field; groups change only in user_role_set.

    # --- actions ---------------------------------------------------------------------------

    def _each(self, request: HttpRequest, queryset: QuerySet[User], service, verb: str) -> None:
        done, refused = 0, []
        for user in queryset:
            try:
                service(user=user, by=request.user)
                done += 1
            except ApplicationError as exc:
                refused.append(f"{user.get_username()}: {exc.message}")
        self.message_user(request, f"{verb} {done} account(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Refused " + "; ".join(refused[:10]), messages.WARNING)

    @admin.action(description="Deactivate selected accounts", permissions=["change"])
    def deactivate_accounts(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._each(request, queryset, user_deactivate, "Deactivated")

    @admin.action(description="Reactivate selected accounts", permissions=["change"])
    def reactivate_accounts(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._each(request, queryset, user_reactivate, "Reactivated")


def register(site: admin.AdminSite) -> None:
    """Replace Django's UserAdmin on ``site`` with ``AccountUserAdmin``."""
    if site.is_registered(User):
        site.unregister(User)
    site.register(User, AccountUserAdmin)
