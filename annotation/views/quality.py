"""Quality dashboards (DESIGN section 4): htmx function views, reads through selectors.quality.

Admins and researchers read the campaign page, the annotator table and timelines; only admins
act (un-pause an annotator, acknowledge a drift alert) through the quality services. Annotators
see their own page only, which shows delayed, aggregated calibration feedback.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.errors import ApplicationError
from annotation.models import AnnotatorProfile, Campaign, DriftAlert
from annotation.permissions import role_required
from annotation.quality import MIN_PEER_ITEMS
from annotation.selectors import quality as sq
from annotation.services import Role, user_roles
from annotation.services.quality import annotator_unpause as annotator_unpause_service
from annotation.services.quality import quality_recompute_request

TABLE = "quality/annotators.html"

# (sort key, header, title) for the table head; the key is also the query-string value.
_COLUMNS = [
    ("annotator", "Annotator", ""),
    ("judgments", "Judgments", "Current judgments in this campaign, counted now"),
    ("gold", "Gold accuracy [95% CI]", "Wilson interval; updated on every gold answer"),
    ("agreement", "Peer agreement", "Share agreeing with the other annotators"),
    ("competence", "DS competence", "Dawid-Skene P(correct)"),
    ("position", "Position bias", "P(choose left) - 0.5"),
    ("length", "Length bias", "Logistic coefficient per 100 characters"),
    ("sycophancy", "Sycophancy bias", "P(agree with the user) - 0.5 on probes"),
    ("seconds", "Median time (s)",
     "Median seconds per judgment; 'too fast': an open speed alert (runs mostly faster than "
     "the time to read both responses)"),
    ("status", "Status", ""),
    ("alerts", "Open alerts", "Unacknowledged drift alerts"),
]


class AnnotatorTableForm(forms.Form):
    """Sort and filter of the annotator table; an invalid field falls back to its default."""

    sort = forms.ChoiceField(choices=[(k, k) for k in sq.ANNOTATOR_SORTS], required=False)
    dir = forms.ChoiceField(choices=[("asc", "asc"), ("desc", "desc")], required=False)
    status = forms.ChoiceField(
        choices=[("", "all"), *AnnotatorProfile.Status.choices], required=False
    )
    q = forms.CharField(max_length=150, required=False, strip=True)

    def params(self) -> dict:
        self.is_valid()  # cleaned_data keeps the valid fields only
        data = self.cleaned_data
        return {
            "sort": data.get("sort") or "gold",
            "descending": data.get("dir") == "desc",
            "status": data.get("status") or "",
            "search": data.get("q") or "",
        }


def _is_admin(request: HttpRequest) -> bool:
    return Role.ADMIN in user_roles(request.user)


def _annotator_or_404(username: str) -> AbstractBaseUser:
    return get_object_or_404(get_user_model(), username=username)


def _estimates(campaign: Campaign, back: str) -> dict:
    """Context of quality/_estimates.html: live counts, the estimates' age, the recompute."""
    return {
        "fresh": sq.campaign_freshness(campaign=campaign),
        "every": getattr(settings, "GAPLAB_QUALITY_RECOMPUTE_EVERY", 50),
        "back": back,
    }


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def quality_index(request: HttpRequest) -> HttpResponse:
    return render(request, "quality/index.html", {
        "campaigns": sq.campaign_overview_list(),
        "every": getattr(settings, "GAPLAB_QUALITY_RECOMPUTE_EVERY", 50),
    })


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def campaign_quality(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    buckets = sq.campaign_label_mix(campaign=campaign)
    return render(request, "quality/campaign.html", {
        **_estimates(campaign, request.get_full_path()),
        "campaign": campaign,
        "quality": sq.campaign_quality_get(campaign=campaign),
        "buckets": buckets,
        "chart": sq.label_mix_chart_data(buckets),
        "alerts": sq.drift_alert_list(campaign=campaign),
        "is_admin": _is_admin(request),
    })


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def annotator_table(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = AnnotatorTableForm(request.GET)
    params = form.params()
    page = {} if request.htmx else _estimates(campaign, request.get_full_path())
    template = TABLE + "#annotator-table" if request.htmx else TABLE
    return render(request, template, {
        **page,
        "campaign": campaign,
        "rows": sq.annotator_quality_list(campaign=campaign, **params),
        "params": params,
        "columns": _COLUMNS,
        "min_peer_items": MIN_PEER_ITEMS,
        "is_admin": _is_admin(request),
    })



@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def annotator_timeline(request: HttpRequest, campaign_id: int, username: str) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    annotator = _annotator_or_404(username)
    timeline = sq.annotator_timeline(campaign=campaign, annotator=annotator)
    row = sq.annotator_quality_row(campaign=campaign, annotator=annotator)
    level = None if row is None else sq.accuracy_level(
        n_gold=row.n_gold, ci_low=row.gold_ci_low, ci_high=row.gold_ci_high,
        threshold=campaign.accuracy_threshold)
    return render(request, "quality/timeline.html", {
        **_estimates(campaign, request.get_full_path()),
        "campaign": campaign,
        "annotator": annotator,
        "profile": sq.annotator_profile_get(annotator=annotator),
        "min_peer_items": MIN_PEER_ITEMS,
        "row": row,
        "level": level,
        "timeline": timeline,
        "chart": {**timeline.chart_data(), "threshold": campaign.accuracy_threshold},
        "alerts": sq.drift_alert_list(campaign=campaign, annotator=annotator, open_only=False),
        "is_admin": _is_admin(request),
    })


@require_POST
@role_required(Role.ADMIN)
def annotator_unpause(request: HttpRequest, campaign_id: int, username: str) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    annotator = _annotator_or_404(username)
    error = ""
    try:
        annotator_unpause_service(campaign=campaign, annotator=annotator, by=request.user)
    except ApplicationError as exc:
        error = exc.message
    if not request.htmx:
        if error:
            return HttpResponse(error, status=400, content_type="text/plain")
        return redirect(_safe_next(request, reverse("quality-annotators", args=[campaign.pk])))
    # htmx swaps only 2xx, so an error is shown inside the swapped row.
    return render(request, TABLE + "#annotator-row", {
        "campaign": campaign,
        "row": sq.annotator_quality_row(campaign=campaign, annotator=annotator),
        "error": error,
        "min_peer_items": MIN_PEER_ITEMS,
        "is_admin": True,
    })


@require_http_methods(["GET", "POST"])
@role_required(Role.ADMIN, Role.RESEARCHER)
def quality_recompute(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """GET: the estimates block (its recompute's state, polled while one waits or runs).
    POST (admins): queue a recompute through the service, joining one already queued."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    back = reverse("quality-campaign", args=[campaign.pk])
    if request.method == "POST":
        if not _is_admin(request):
            return HttpResponse("Only admins can recompute quality.", status=403,
                                content_type="text/plain")
        quality_recompute_request(campaign=campaign)
        if not request.htmx:
            return redirect(_safe_next(request, back))
    context = _estimates(campaign, _safe_next(request, back))
    context.update(campaign=campaign, is_admin=_is_admin(request),
                   polled=request.method == "GET")
    return render(request, "quality/_estimates.html", context)


@require_POST
@role_required(Role.ADMIN)
def drift_alert_acknowledge(request: HttpRequest, campaign_id: int, alert_id: int) -> HttpResponse:
    from annotation.services.quality import drift_alert_acknowledge as acknowledge

    alert = get_object_or_404(DriftAlert, pk=alert_id, campaign_id=campaign_id)
    error = ""
    try:
        acknowledge(alert=alert, by=request.user)
    except ApplicationError as exc:
        error = exc.message
    if not request.htmx:
        if error:
            return HttpResponse(error, status=400, content_type="text/plain")
        return redirect(_safe_next(request, reverse("quality-campaign", args=[alert.campaign_id])))
    alert = sq.drift_alert_list(campaign=alert.campaign, open_only=False).get(pk=alert.pk)
    return render(request, "quality/_alert_row.html",
                  {"alert": alert, "error": error, "is_admin": True})


@require_GET
@role_required(Role.ANNOTATOR)
def my_quality(request: HttpRequest) -> HttpResponse:
    campaigns = sq.my_quality(annotator=request.user)
    return render(request, "quality/mine.html", {
        "campaigns": campaigns,
        "has_feedback": any(c.batches for c in campaigns),
        "batch_size": sq.FEEDBACK_BATCH,
        "holdback": sq.FEEDBACK_HOLDBACK,
    })
