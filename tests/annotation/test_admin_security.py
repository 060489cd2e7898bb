"""No privilege escalation through the Django admin (issue 6, items 1 and 10).

Every attempt runs through the real admin pages with a logged-in non-superuser admin (the
``cast`` admin), then reads the database back: the response code alone proves nothing when a
form silently ignores or silently applies a field.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.forms import MultiWidget
from django.test import Client
from rest_framework.authtoken.models import Token

from annotation.errors import ForbiddenError
from annotation.models import AnnotatorProfile, Assignment
from annotation.services.accounts import (
    Role,
    user_create_with_role,
    user_password_set,
    user_role_set,
    user_roles,
    users_manageable_by,
)
from tests.conftest import PASSWORD
from tests.factories import ComparisonFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "Fresh-pass-9731"
USERS = "/admin/auth/user/"


@pytest.fixture
def people(cast) -> dict[str, User]:
    """The cast plus a second admin and a superuser: the accounts an admin must not touch."""
    return {
        **cast,
        "admin2": user_create_with_role(username="admin2", password=PASSWORD, role=Role.ADMIN),
        "root": User.objects.create_superuser(username="root", password=PASSWORD),
    }


@pytest.fixture
def admin_client(cast) -> Client:
    client = Client()
    client.force_login(cast["admin"])
    return client


def _power(user: User) -> dict[str, Any]:
    """Everything about an account that carries power or lets someone log in as it."""
    user = User.objects.get(pk=user.pk)
    return {
        "is_superuser": user.is_superuser,
        "is_staff": user.is_staff,
        "is_active": user.is_active,
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "perms": sorted(user.user_permissions.values_list("codename", flat=True)),
        "password": user.password,
        "username": user.username,
    }


def _form_data(client: Client, url: str) -> dict[str, Any]:
    """The POST body the admin page's own form would send unchanged."""
    resp = client.get(url)
    assert resp.status_code == 200, (url, resp.status_code)
    form = resp.context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        if field.disabled:
            continue
        value = form[name].value()
        if value is None or value is False:
            continue
        if isinstance(field.widget, MultiWidget):  # a split date and time
            for i, part in enumerate(field.widget.decompress(value)):
                data[f"{name}_{i}"] = "" if part is None else str(part)
        else:
            data[name] = "on" if value is True else value
    return data


def _listed(client: Client) -> list[User]:
    """The accounts on the user list page."""
    return list(client.get(USERS).context["cl"].result_list)


def _escalation_fields() -> dict[str, Any]:
    admin_group = Group.objects.get(name=Role.ADMIN.value)
    perm = Permission.objects.get(codename="change_group")
    return {
        "is_superuser": "on",
        "is_staff": "on",
        "groups": [str(admin_group.pk)],
        "user_permissions": [str(perm.pk)],
    }


# --- the change form -----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["admin", "admin2", "root"])
@pytest.mark.parametrize("field", ["is_superuser", "is_staff", "groups", "user_permissions",
                                   "role"])
def test_admin_cannot_change_an_admin_or_superuser_account(people, admin_client, target, field):
    """Its own account, another admin and a superuser are "not found": no form, no write."""
    victim = people[target]
    before = _power(victim)
    url = f"{USERS}{victim.pk}/change/"

    page = admin_client.get(url)
    assert page.status_code == 302 and page["Location"] == "/admin/"
    assert victim not in _listed(admin_client)

    body = {"username": victim.username, "is_active": "on", "role": "researcher",
            "last_login_0": "", "date_joined_0": "2024-01-01", "date_joined_1": "00:00:00"}
    body.update({k: v for k, v in {**_escalation_fields(), "role": "admin"}.items()
                 if k == field})
    resp = admin_client.post(url, body)
    assert resp.status_code in (302, 403, 404), resp.status_code
    assert _power(victim) == before


@pytest.mark.parametrize("field", ["is_superuser", "is_staff", "groups", "user_permissions"])
def test_escalation_fields_posted_for_an_annotator_are_ignored(people, admin_client, field):
    """The managed form has no such field, so a hand-made POST saves and grants nothing."""
    annotator = people["annotator"]
    url = f"{USERS}{annotator.pk}/change/"
    body = _form_data(admin_client, url)
    assert set(body) <= {"username", "first_name", "last_name", "email", "is_active", "role"}
    body[field] = _escalation_fields()[field]
    body["first_name"] = "Ann"

    resp = admin_client.post(url, body)
    assert resp.status_code == 302, resp.content[:2000]
    after = _power(annotator)
    assert User.objects.get(pk=annotator.pk).first_name == "Ann"  # the save did happen
    assert after["is_superuser"] is False and after["is_staff"] is False
    assert after["groups"] == ["annotator"] and after["perms"] == []


def test_admin_role_is_not_a_choice_for_an_annotator(people, admin_client):
    annotator = people["annotator"]
    url = f"{USERS}{annotator.pk}/change/"
    body = {**_form_data(admin_client, url), "role": "admin"}
    before = _power(annotator)

    resp = admin_client.post(url, body)
    assert resp.status_code == 200  # the form again, with the error
    assert "role" in resp.context["adminform"].form.errors
    assert _power(annotator) == before


def test_researcher_with_a_raw_permission_is_out_of_reach(people, admin_client):
    """An account holding a permission outside the managed roles counts as more powerful."""
    researcher = people["researcher"]
    researcher.user_permissions.add(Permission.objects.get(codename="delete_campaign"))
    before = _power(researcher)

    assert admin_client.get(f"{USERS}{researcher.pk}/change/").status_code == 302
    resp = admin_client.post(f"{USERS}{researcher.pk}/password/",
                             {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD,
                              "usable_password": "true"})
    assert resp.status_code == 404
    assert _power(researcher) == before


# --- the add form --------------------------------------------------------------------------


def _add_body(username: str, role: str, **extra: Any) -> dict[str, Any]:
    return {"username": username, "email": f"{username}@example.org", "role": role,
            "usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD,
            **extra}


@pytest.mark.parametrize("field", ["is_superuser", "is_staff", "groups", "user_permissions"])
def test_add_form_ignores_escalation_fields(cast, admin_client, field):
    body = _add_body("newbie", "annotator", **{field: _escalation_fields()[field]})
    resp = admin_client.post(f"{USERS}add/", body)
    assert resp.status_code == 302, resp.content[:2000]
    made = _power(User.objects.get(username="newbie"))
    assert made["is_superuser"] is False and made["is_staff"] is False
    assert made["groups"] == ["annotator"] and made["perms"] == []


def test_add_form_refuses_the_admin_role(cast, admin_client):
    resp = admin_client.post(f"{USERS}add/", _add_body("wannabe", "admin"))
    assert resp.status_code == 200
    assert "role" in resp.context["adminform"].form.errors
    assert not User.objects.filter(username="wannabe").exists()


def test_add_form_shows_no_power_fields(cast, admin_client):
    form = admin_client.get(f"{USERS}add/").context["adminform"].form
    assert set(form.fields) == {"username", "email", "role", "usable_password", "password1",
                                "password2"}


# --- the password form ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["admin", "admin2", "root"])
def test_admin_cannot_reset_an_admin_or_superuser_password(people, admin_client, target):
    victim = people[target]
    before = _power(victim)
    url = f"{USERS}{victim.pk}/password/"
    assert admin_client.get(url).status_code == 404
    resp = admin_client.post(url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD,
                                   "usable_password": "true"})
    assert resp.status_code == 404
    assert _power(victim) == before
    assert User.objects.get(pk=victim.pk).check_password(PASSWORD)


def test_history_and_delete_of_a_superuser_are_not_found(people, admin_client):
    root = people["root"]
    for page in ("history", "delete"):
        resp = admin_client.get(f"{USERS}{root.pk}/{page}/")
        assert resp.status_code in (302, 403, 404), (page, resp.status_code)
        assert b"root" not in resp.content
    assert admin_client.post(f"{USERS}{root.pk}/delete/", {"post": "yes"}).status_code in (
        302, 403, 404)
    assert User.objects.filter(pk=root.pk).exists()


# --- groups, permissions and API tokens ----------------------------------------------------


@pytest.mark.parametrize("url", ["/admin/auth/group/", "/admin/auth/group/add/",
                                 "/admin/authtoken/tokenproxy/",
                                 "/admin/authtoken/tokenproxy/add/"])
def test_groups_and_tokens_are_closed_to_admins(people, admin_client, url):
    Token.objects.create(user=people["root"])
    assert admin_client.get(url).status_code == 403
    index = admin_client.get("/admin/").content
    assert b"/admin/auth/group/" not in index and b"/admin/authtoken/" not in index


def test_groups_and_tokens_stay_open_to_superusers(people):
    client = Client()
    client.force_login(people["root"])
    assert client.get("/admin/auth/group/").status_code == 200
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 200
    # And a superuser still has Django's full user form.
    form = client.get(f"{USERS}{people['admin'].pk}/change/").context["adminform"].form
    assert {"is_superuser", "is_staff", "groups", "user_permissions"} <= set(form.fields)


def test_no_role_holds_a_permission_on_groups_permissions_or_tokens(cast):
    risky = Permission.objects.filter(content_type__app_label__in=["authtoken"]) | \
        Permission.objects.filter(content_type__app_label="auth",
                                  content_type__model__in=["group", "permission"])
    for role in Role:
        group = Group.objects.get(name=role.value)
        assert not group.permissions.filter(pk__in=risky).exists(), role


# --- what an admin may do ------------------------------------------------------------------


def test_admin_creates_an_annotator_and_a_researcher(cast, admin_client):
    assert admin_client.post(f"{USERS}add/", _add_body("ann", "annotator")).status_code == 302
    assert admin_client.post(f"{USERS}add/", _add_body("res", "researcher")).status_code == 302

    ann, res = User.objects.get(username="ann"), User.objects.get(username="res")
    assert user_roles(ann) == {Role.ANNOTATOR} and not ann.is_staff
    assert AnnotatorProfile.objects.filter(user=ann).exists()
    assert user_roles(res) == {Role.RESEARCHER} and res.is_staff
    assert ann.check_password(NEW_PASSWORD) and ann.email == "ann@example.org"
    assert {ann, res} <= set(_listed(admin_client))


def test_admin_switches_a_role_and_the_staff_flag_follows(cast, admin_client):
    annotator = cast["annotator"]
    url = f"{USERS}{annotator.pk}/change/"

    resp = admin_client.post(url, {**_form_data(admin_client, url), "role": "researcher"})
    assert resp.status_code == 302
    annotator.refresh_from_db()
    assert user_roles(annotator) == {Role.RESEARCHER} and annotator.is_staff

    resp = admin_client.post(url, {**_form_data(admin_client, url), "role": "annotator"})
    assert resp.status_code == 302
    annotator.refresh_from_db()
    assert user_roles(annotator) == {Role.ANNOTATOR} and not annotator.is_staff


def test_admin_deactivates_and_reactivates(cast, admin_client):
    annotator, researcher = cast["annotator"], cast["researcher"]
    url = f"{USERS}{annotator.pk}/change/"
    body = _form_data(admin_client, url)
    body.pop("is_active")
    assert admin_client.post(url, body).status_code == 302
    assert not User.objects.get(pk=annotator.pk).is_active

    resp = admin_client.post(USERS, {"action": "deactivate_accounts",
                                     "_selected_action": [researcher.pk]})
    assert resp.status_code == 302
    assert not User.objects.get(pk=researcher.pk).is_active
    # A deactivated account's API token stops working at once.
    token = Token.objects.create(user=researcher)
    assert Client().get("/api/campaigns/",
                        HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 401

    admin_client.post(USERS, {"action": "reactivate_accounts",
                              "_selected_action": [annotator.pk, researcher.pk]})
    assert User.objects.filter(pk__in=[annotator.pk, researcher.pk], is_active=True).count() == 2


def test_deactivate_action_cannot_reach_an_admin(people, admin_client):
    """A hand-made action POST naming a superuser's id is filtered by the queryset."""
    admin_client.post(USERS, {"action": "deactivate_accounts",
                              "_selected_action": [people["root"].pk, people["admin2"].pk]})
    assert User.objects.filter(pk__in=[people["root"].pk, people["admin2"].pk],
                               is_active=True).count() == 2


def test_admin_resets_an_annotators_password(cast, admin_client):
    annotator = cast["annotator"]
    resp = admin_client.post(f"{USERS}{annotator.pk}/password/",
                             {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD,
                              "usable_password": "true"})
    assert resp.status_code == 302
    annotator.refresh_from_db()
    assert annotator.check_password(NEW_PASSWORD)
    resp = Client().post("/accounts/login/", {"username": "annotator", "password": NEW_PASSWORD})
    assert resp.status_code == 302, "the new password logs in"


def test_password_form_runs_the_validators(cast, admin_client):
    annotator = cast["annotator"]
    resp = admin_client.post(f"{USERS}{annotator.pk}/password/",
                             {"password1": "123", "password2": "123", "usable_password": "true"})
    assert resp.status_code == 200
    assert User.objects.get(pk=annotator.pk).check_password(PASSWORD)


# --- the services say the same as the admin ------------------------------------------------


def test_services_refuse_an_admin_what_the_admin_hides(people):
    admin = people["admin"]
    with pytest.raises(ForbiddenError):
        user_role_set(user=people["annotator"], role=Role.ADMIN, by=admin)
    with pytest.raises(ForbiddenError):
        user_password_set(user=people["root"], password=NEW_PASSWORD, by=admin)
    with pytest.raises(ForbiddenError):
        user_role_set(user=admin, role=Role.RESEARCHER, by=admin)
    with pytest.raises(ForbiddenError):
        user_create_with_role(username="x", password=None, role=Role.ADMIN, by=admin)
    with pytest.raises(ForbiddenError):
        user_role_set(user=people["annotator"], role=Role.RESEARCHER, by=people["researcher"])
    manageable = set(users_manageable_by(by=admin).values_list("username", flat=True))
    assert manageable == {"annotator", "researcher", "outsider"}
    assert users_manageable_by(by=people["researcher"]).count() == 0
    # A superuser may do all of it.
    user_role_set(user=people["annotator"], role=Role.ADMIN, by=people["root"])
    assert Role.ADMIN in user_roles(people["annotator"])


# --- claim state ---------------------------------------------------------------------------


@pytest.fixture
def completed(cast, campaign) -> Assignment:
    from annotation.services.assignment import assignment_issue_next
    from annotation.services.judgments import judgment_submit

    ComparisonFactory(campaign=campaign)
    assignment = assignment_issue_next(campaign=campaign, annotator=cast["annotator"])
    judgment_submit(assignment=assignment, annotator=cast["annotator"], choice="A",
                    strength=2, idempotency_key="k-1", seconds_spent=3.0)
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.COMPLETED
    return assignment


@pytest.mark.parametrize("who", ["admin", "root"])
def test_assignment_is_view_only_in_the_admin(people, completed, who):
    client = Client()
    client.force_login(people[who])
    url = f"/admin/annotation/assignment/{completed.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200  # viewable
    assert b'name="_save"' not in page.content

    body = {"status": "pending", "comparison": completed.comparison_id,
            "annotator": completed.annotator_id, "campaign": completed.campaign_id,
            "a_on_left": "on", "issued_at_0": "2024-01-01", "issued_at_1": "00:00:00",
            "expires_at_0": "2099-01-01", "expires_at_1": "00:00:00"}
    assert client.post(url, body).status_code == 403
    assert client.get("/admin/annotation/assignment/add/").status_code == 403
    assert client.post(f"/admin/annotation/assignment/{completed.pk}/delete/",
                       {"post": "yes"}).status_code == 403
    resp = client.post("/admin/annotation/assignment/",
                       {"action": "delete_selected", "_selected_action": [completed.pk],
                        "post": "yes"})
    assert resp.status_code in (200, 302)
    completed.refresh_from_db()
    assert completed.status == Assignment.Status.COMPLETED


def test_comparison_claim_fields_are_read_only_once_made(cast, admin_client, completed):
    comparison = completed.comparison
    url = f"/admin/annotation/comparison/{comparison.pk}/change/"
    body = _form_data(admin_client, url)
    assert not {"target_overlap", "campaign", "kind", "claimed_count", "is_full"} & set(body)
    body.update({"target_overlap": "9", "kind": "eval", "claimed_count": "0", "priority": "5"})

    assert admin_client.post(url, body).status_code == 302
    comparison.refresh_from_db()
    assert comparison.priority == 5  # the save happened
    assert comparison.target_overlap is None and comparison.kind == "regular"
    assert comparison.claimed_count == 1


def test_campaign_overlap_is_read_only_once_made(cast, admin_client, campaign):
    url = f"/admin/annotation/campaign/{campaign.pk}/change/"
    body = _form_data(admin_client, url)
    assert "overlap" not in body
    body["overlap"] = "1"
    assert admin_client.post(url, body).status_code == 302
    campaign.refresh_from_db()
    assert campaign.overlap == 3


def test_annotator_profile_is_view_only(cast, admin_client):
    profile = AnnotatorProfile.objects.get(user=cast["annotator"])
    url = f"/admin/annotation/annotatorprofile/{profile.pk}/change/"
    assert admin_client.get(url).status_code == 200
    assert admin_client.post(url, {"user": cast["admin"].pk, "status": "paused"}).status_code \
        == 403
    profile.refresh_from_db()
    assert profile.user_id == cast["annotator"].pk and profile.status == "active"


# --- superusers keep full power ------------------------------------------------------------


def test_superuser_still_edits_any_account_with_the_full_form(people):
    client = Client()
    client.force_login(people["root"])
    admin2 = people["admin2"]
    url = f"{USERS}{admin2.pk}/change/"
    body = {**_form_data(client, url), "is_superuser": "on"}
    assert client.post(url, body).status_code == 302
    assert User.objects.get(pk=admin2.pk).is_superuser

    resp = client.post(f"{USERS}{admin2.pk}/password/",
                       {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD,
                        "usable_password": "true"})
    assert resp.status_code == 302
    assert User.objects.get(pk=admin2.pk).check_password(NEW_PASSWORD)


def test_admin_cannot_delete_an_annotator_with_open_claims(cast, admin_client):
    """Deleting would cascade to the open assignment without releasing its claim."""
    from annotation.services import assignment_issue_next

    comparison = ComparisonFactory()
    assignment = assignment_issue_next(campaign=comparison.campaign, annotator=cast["annotator"])
    assert assignment is not None
    resp = admin_client.post(f"{USERS}{cast['annotator'].pk}/delete/", {"post": "yes"})
    assert resp.status_code == 403
    assert Assignment.objects.filter(pk=assignment.pk).exists()
    comparison.refresh_from_db()
    assert comparison.claimed_count == 1


def test_dataset_label_accounts_are_out_of_an_admins_reach(cast, admin_client):
    source = user_create_with_role(username="dataset-hh", password=None, role=Role.ANNOTATOR,
                                   annotator_kind=AnnotatorProfile.Kind.DATASET, source="hh")
    assert source not in _listed(admin_client)
    resp = admin_client.post(f"{USERS}{source.pk}/password/",
                             {"password1": "new-pass-1234", "password2": "new-pass-1234"})
    assert resp.status_code in (302, 403, 404)
    source.refresh_from_db()
    assert not source.has_usable_password()
    with pytest.raises(ForbiddenError):
        user_role_set(user=source, role=Role.RESEARCHER, by=cast["admin"])
