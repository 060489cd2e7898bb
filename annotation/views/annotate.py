"""Annotator pages: htmx function views. One service call each; rendering only.

GET never changes state: the annotate page shows the item the annotator already holds, or a
Start button whose POST claims one. The submit and skip POSTs answer with the next item; after
a skip, the panel offers its undo for as long as ``selectors.assignment_skip_undoable`` allows.
A paused annotator is shown the pause and nothing else.
"""

from __future__ import annotations

from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation import selectors
from annotation.errors import ApplicationError
from annotation.forms import JudgmentForm, SkipForm, SkipUndoForm
from annotation.models import Assignment, Campaign
from annotation.permissions import role_required
from annotation.services import (
    Role,
    assignment_issue_next,
    assignment_skip,
    assignment_skip_undo,
    judgment_submit_from_screen,
    user_roles,
)

PANEL = "annotation/annotate.html#annotation-panel"
# The skip box's reasons: (value stored in Assignment.skip_reason, label, key in the box).
SKIP_REASONS = [
    ("cannot judge", "I cannot judge this", "1"),
    ("offensive content", "Offensive content", "2"),
    ("broken item", "Broken or unreadable item", "3"),
    ("other", "Other", "4"),
]
_SKIP_LABELS = {value: label for value, label, _ in SKIP_REASONS}


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
    return render(request, "annotation/index.html", {
        "campaigns": campaigns, "pause": selectors.annotator_pause(annotator=request.user),
    })


def _claim_next(request: HttpRequest, campaign: Campaign) -> tuple[Assignment | None, str]:
    """Claim the annotator's next item (or get the live one back); POST paths only."""
    try:
        return assignment_issue_next(campaign=campaign, annotator=request.user), ""
    except ApplicationError as exc:
        return None, exc.message


def _panel_context(request: HttpRequest, campaign: Campaign, *, error: str = "",
                   form: JudgmentForm | None = None, claim: bool = True) -> dict:
    """The panel's context; ``claim`` issues the next item (POST), else only reads (GET).

    A paused annotator gets the pause alone: no item, no claim, no error from the claim.
    """
    pause = selectors.annotator_pause(annotator=request.user)
    if pause is not None:
        return {"campaign": campaign, "pause": pause, "item": None}
    if claim:
        assignment, claim_error = _claim_next(request, campaign)
        error = error or claim_error
    else:
        assignment = selectors.assignment_live_for_annotator(
            campaign=campaign, annotator=request.user
        )
    view = selectors.comparison_for_annotator(assignment=assignment) if assignment else None
    skipped = selectors.assignment_skip_undoable(campaign=campaign, annotator=request.user)
    return {
        "campaign": campaign,
        "item": view,
        # Without a live item, a GET offers the Start button; after a claim, "no work left".
        "started": claim,
        "error": error,
        "form_errors": form.errors if form is not None else None,
        "progress": selectors.annotator_progress(campaign=campaign, annotator=request.user),
        "strengths": [("1", "slight", "q"), ("2", "clear", "w"), ("3", "strong", "e")],
        "skip_reasons": SKIP_REASONS,
        "skipped": skipped,
        "skipped_reason": (_SKIP_LABELS.get(skipped.skip_reason, skipped.skip_reason)
                           if skipped else ""),
    }


def _render_panel(request: HttpRequest, context: dict, *, status: int = 200) -> HttpResponse:
    template = PANEL if request.htmx else "annotation/annotate.html"
    if request.htmx:
        status = 200  # htmx swaps only 2xx; the error is shown inside the panel
    return render(request, template, context, status=status)


@require_GET
@role_required(Role.ANNOTATOR)
def annotate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Show the item the annotator holds in this campaign, else a Start button; claims nothing."""
    campaign = get_object_or_404(Campaign, pk=campaign_id, is_active=True)
    return _render_panel(request, _panel_context(request, campaign, claim=False))


@require_POST
@role_required(Role.ANNOTATOR)
def annotate_start(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Claim the next item (the live one if the annotator holds one) and show it.

    A plain form post is answered with a redirect to the page (post/redirect/get) when an item
    was issued, and with the page itself when none was (no work left, paused, closed).
    """
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = _panel_context(request, campaign)
    if not request.htmx and context["item"] is not None:
        return redirect("annotate", campaign_id=campaign.pk)
    return _render_panel(request, context)


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
        judgment_submit_from_screen(
            token=data["token"], annotator=request.user, choice=data["choice"],
            strength=data["strength"], idempotency_key=data["idempotency_key"],
            seconds_spent=data["seconds_spent"], rationale=data["rationale"],
            criteria=form.criteria_screen_choices(),
        )
    except ApplicationError as exc:
        return _render_panel(request, _panel_context(request, campaign, error=exc.message),
                             status=400)
    if not request.htmx:
        # Claim here, in the POST, so the page the redirect leads to shows the next item.
        _claim_next(request, campaign)
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
        _claim_next(request, campaign)  # as after a submit: the redirect shows the next item
        return redirect("annotate", campaign_id=campaign.pk)
    return _render_panel(request, _panel_context(request, campaign, error=error),
                         status=400 if error else 200)


@require_POST
@role_required(Role.ANNOTATOR)
def annotate_skip_undo(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Give the annotator's last skip back (the Undo of the skip notice) and show it.

    An undo that can no longer be done is answered with the panel and a message saying why.
    """
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = SkipUndoForm(request.POST)
    error = ""
    if not form.is_valid():
        error = "Say which skip to undo (skipped_token)."
    else:
        try:
            assignment = _own_assignment(request, form.cleaned_data["skipped_token"])
            assignment_skip_undo(assignment=assignment, annotator=request.user)
        except ApplicationError as exc:
            error = exc.message
    if not request.htmx and not error:
        return redirect("annotate", campaign_id=campaign.pk)
    # Read only: after an undo the live item is the one given back; after a refusal, the
    # item held before.
    return _render_panel(request, _panel_context(request, campaign, error=error, claim=False),
                         status=400 if error else 200)


def login_locked_out(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    """Answer a login refused by django-axes (settings.AXES_LOCKOUT_CALLABLE).

    429 with the lockout page and Retry-After: the cool-off restarts at every attempt made
    during a lockout, so the whole cool-off is how long the client must wait from now.
    """
    cool_off = get_cool_off(request)
    seconds = int(cool_off.total_seconds()) if cool_off else 0
    context = {
        "cooloff_minutes": max(1, round(seconds / 60)) if seconds else None,
        "failure_limit": get_failure_limit(request, credentials),
        "username": get_client_username(request, credentials) or "",
    }
    response = render(request, "registration/locked_out.html", context, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response
