"""Annotator pages: htmx function views. One service call each; rendering only."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from annotation import selectors
from annotation.errors import ApplicationError
from annotation.forms import JudgmentForm, SkipForm
from annotation.models import Assignment, Campaign
from annotation.permissions import role_required
from annotation.services import (
    Role,
    assignment_issue_next,
    assignment_skip,
    choice_from_screen,
    judgment_submit,
    user_roles,
)

PANEL = "annotation/annotate.html#annotation-panel"


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    roles = user_roles(request.user)
    if Role.ANNOTATOR in roles:
        return redirect("annotate-index")
    if roles & {Role.ADMIN, Role.RESEARCHER}:
        return redirect("quality-index")
    return render(request, "annotation/no_role.html", status=403)


@require_GET
@role_required(Role.ANNOTATOR)
def annotate_index(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.campaign_list_for_annotator(annotator=request.user)
    return render(request, "annotation/index.html", {"campaigns": campaigns})


def _panel_context(request: HttpRequest, campaign: Campaign, *, error: str = "",
                   form: JudgmentForm | None = None) -> dict:
    assignment = None
    try:
        assignment = assignment_issue_next(campaign=campaign, annotator=request.user)
    except ApplicationError as exc:
        error = error or exc.message
    view = selectors.comparison_for_annotator(assignment=assignment) if assignment else None
    return {
        "campaign": campaign,
        "item": view,
        "error": error,
        "form_errors": form.errors if form is not None else None,
        "progress": selectors.annotator_progress(campaign=campaign, annotator=request.user),
        "strengths": [("1", "slight", "q"), ("2", "clear", "w"), ("3", "strong", "e")],
    }


def _render_panel(request: HttpRequest, context: dict, *, status: int = 200) -> HttpResponse:
    template = PANEL if request.htmx else "annotation/annotate.html"
    if request.htmx:
        status = 200  # htmx swaps only 2xx; the error is shown inside the panel
    return render(request, template, context, status=status)


@require_GET
@role_required(Role.ANNOTATOR)
def annotate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id, is_active=True)
    return _render_panel(request, _panel_context(request, campaign))


def _own_assignment(request: HttpRequest, token) -> Assignment:
    assignment = selectors.assignment_get_for_annotator(token=token, annotator=request.user)
    if assignment is None:
        raise ApplicationError("This comparison is not yours.")
    return assignment


@require_POST
@role_required(Role.ANNOTATOR)
def annotate_submit(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = JudgmentForm(request.POST, criteria=campaign.criteria)
    if not form.is_valid():
        return _render_panel(request, _panel_context(request, campaign, form=form), status=400)
    data = form.cleaned_data
    try:
        assignment = _own_assignment(request, data["token"])
        seconds = data["seconds_spent"]
        if seconds is None:
            seconds = (timezone.now() - assignment.issued_at).total_seconds()
        judgment_submit(
            assignment=assignment, annotator=request.user,
            choice=choice_from_screen(data["choice"], a_on_left=assignment.a_on_left),
            strength=data["strength"], idempotency_key=data["idempotency_key"],
            seconds_spent=seconds, rationale=data["rationale"],
            criteria_choices={
                name: choice_from_screen(value, a_on_left=assignment.a_on_left)
                for name, value in form.criteria_screen_choices().items()
            },
        )
    except ApplicationError as exc:
        return _render_panel(request, _panel_context(request, campaign, error=exc.message),
                             status=400)
    if not request.htmx:
        return redirect("annotate", campaign_id=campaign.pk)
    return _render_panel(request, _panel_context(request, campaign))


@require_POST
@role_required(Role.ANNOTATOR)
def annotate_skip(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = SkipForm(request.POST)
    error = ""
    if not form.is_valid():
        error = "Say why you skip this comparison."
    else:
        try:
            assignment = _own_assignment(request, form.cleaned_data["token"])
            assignment_skip(assignment=assignment, annotator=request.user,
                            reason=form.cleaned_data["reason"])
        except ApplicationError as exc:
            error = exc.message
    if not request.htmx and not error:
        return redirect("annotate", campaign_id=campaign.pk)
    return _render_panel(request, _panel_context(request, campaign, error=error),
                         status=400 if error else 200)
