"""The researcher's data page: snapshots and exports per campaign, made and downloaded here.

Admins and researchers only. Making a snapshot runs ``snapshot_create`` in the request (it is
an aggregation of the campaign's judgments, seconds at most); an export is a job
(``preference_export_create``) whose row polls itself until it ends. Downloads are streamed
from disk with the session's authentication; a file that retention purged or that went missing
answers 410 with what to do, never a 500.
"""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from annotation.errors import ApplicationError, RateLimitedError
from annotation.models import Campaign, JobStatus, PreferenceExport, Snapshot
from annotation.permissions import role_required
from annotation.selectors.snapshots import (
    data_export_get,
    data_export_list,
    data_snapshot_list,
)
from annotation.services import Role, preference_export_create
from annotation.services.exports import (
    directory_zip,
    preference_export_cancel,
    preference_export_file,
)
from annotation.services.snapshots import snapshot_create, snapshot_file

PAGE = "data/home.html"
# htmx stops polling an element whose response has this status (and still swaps it in).
STOP_POLLING = 286


def _campaigns():
    return Campaign.objects.order_by("name")


class DataFilterForm(forms.Form):
    """Which campaign the page lists; an unknown one falls back to all."""

    campaign = forms.ModelChoiceField(queryset=_campaigns(), required=False,
                                      empty_label="All campaigns")


class SnapshotForm(forms.Form):
    campaign = forms.ModelChoiceField(queryset=_campaigns())
    method = forms.ChoiceField(choices=Snapshot.Method.choices,
                               initial=Snapshot.Method.DAWID_SKENE)
    sources = forms.ChoiceField(choices=PreferenceExport.Sources.choices,
                                initial=PreferenceExport.Sources.ALL)


class ExportForm(forms.Form):
    campaign = forms.ModelChoiceField(queryset=_campaigns())
    format = forms.ChoiceField(choices=PreferenceExport.Format.choices,
                               initial=PreferenceExport.Format.JSONL)
    sources = forms.ChoiceField(choices=PreferenceExport.Sources.choices,
                                initial=PreferenceExport.Sources.ALL)


def _snapshot_form(data=None, campaign: Campaign | None = None) -> SnapshotForm:
    # Distinct ids: both forms sit on one page with the same field names.
    return SnapshotForm(data, auto_id="snapshot-%s", initial={"campaign": campaign})


def _export_form(data=None, campaign: Campaign | None = None) -> ExportForm:
    return ExportForm(data, auto_id="export-%s", initial={"campaign": campaign})


def _form_error(form: forms.Form, exc: ApplicationError) -> None:
    """Put a refusal on the field it names (``extra["field"]``), else on the whole form."""
    field = exc.extra.get("field")
    form.add_error(field if field in form.fields else None, exc.message)


def _page(request: HttpRequest, *, snapshot_form: SnapshotForm | None = None,
          export_form: ExportForm | None = None, status: int = 200) -> HttpResponse:
    chosen = DataFilterForm(request.GET, auto_id="filter-%s")
    campaign = chosen.cleaned_data.get("campaign") if chosen.is_valid() else None
    return render(request, PAGE, {
        "filter_form": chosen,
        "campaign": campaign,
        "snapshot_form": snapshot_form or _snapshot_form(campaign=campaign),
        "export_form": export_form or _export_form(campaign=campaign),
        "snapshots": data_snapshot_list(campaign=campaign),
        "exports": data_export_list(campaign=campaign),
    }, status=status)


def _back(campaign: Campaign, anchor: str) -> HttpResponse:
    return redirect(f"{reverse('data-home')}?campaign={campaign.pk}#{anchor}")


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def data_home(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@role_required(Role.ADMIN, Role.RESEARCHER)
def data_snapshot_create(request: HttpRequest) -> HttpResponse:
    form = _snapshot_form(request.POST)
    if not form.is_valid():
        return _page(request, snapshot_form=form, status=400)
    data = form.cleaned_data
    try:
        snapshot = snapshot_create(campaign=data["campaign"], method=data["method"],
                                   sources=data["sources"], created_by=request.user)
    except ApplicationError as exc:
        _form_error(form, exc)
        return _page(request, snapshot_form=form, status=exc.status_code)
    return _back(snapshot.campaign, f"snapshot-{snapshot.pk}")


@require_POST
@role_required(Role.ADMIN, Role.RESEARCHER)
def data_export_create(request: HttpRequest) -> HttpResponse:
    form = _export_form(request.POST)
    if not form.is_valid():
        return _page(request, export_form=form, status=400)
    data = form.cleaned_data
    try:
        export = preference_export_create(campaign=data["campaign"], fmt=data["format"],
                                          sources=data["sources"], requested_by=request.user)
    except ApplicationError as exc:
        _form_error(form, exc)
        response = _page(request, export_form=form, status=exc.status_code)
        if isinstance(exc, RateLimitedError):
            response["Retry-After"] = str(exc.retry_after)
        return response
    return _back(export.campaign, f"export-{export.pk}")


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def data_export_row(request: HttpRequest, export_id: int) -> HttpResponse:
    """One export's row, which a queued or running export polls until it ends."""
    export = data_export_get(export_id=export_id)
    if export is None:
        if request.htmx:  # deleted meanwhile: the row goes, and its polling with it
            return HttpResponse("", status=STOP_POLLING)
        return _unavailable(request, f"Export #{export_id} does not exist.", status=404)
    ended = export.status in PreferenceExport.TERMINAL
    return render(request, PAGE + "#export-row", {"export": export},
                  status=STOP_POLLING if ended and request.htmx else 200)


@require_POST
@role_required(Role.ADMIN, Role.RESEARCHER)
def data_export_cancel(request: HttpRequest, export_id: int) -> HttpResponse:
    """Cancel a queued export, or ask a running one to stop; htmx swaps the row in place."""
    export = get_object_or_404(PreferenceExport, pk=export_id)
    error = ""
    try:
        preference_export_cancel(export=export)
    except ApplicationError as exc:
        error = exc.message
    if not request.htmx:
        if error:
            return _unavailable(request, error, status=409)
        return _back(export.campaign, f"export-{export.pk}")
    # htmx swaps only 2xx, so a refusal is shown inside the swapped row.
    return render(request, PAGE + "#export-row",
                  {"export": data_export_get(export_id=export.pk), "error": error})


def _unavailable(request: HttpRequest, message: str, *, status: int) -> HttpResponse:
    return render(request, "data/unavailable.html", {"message": message}, status=status)


def _download(path: Path, *, filename: str, content_type: str, zipped: bool) -> FileResponse:
    source = directory_zip(path) if zipped else path.open("rb")
    return FileResponse(source, as_attachment=True, filename=filename, content_type=content_type)


def _name(*parts: str) -> str:
    return "-".join(slugify(p) for p in parts if p)


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def data_export_download(request: HttpRequest, export_id: int) -> HttpResponse:
    """The export's file: JSONL as it is, a dataset export's directory as a zip."""
    export = get_object_or_404(PreferenceExport.objects.select_related("campaign"),
                               pk=export_id)
    if export.status != JobStatus.SUCCEEDED:
        state = export.get_status_display().lower()
        return _unavailable(request, f"Export #{export.pk} is {state}; only a succeeded export "
                            "has a file to download.", status=409)
    try:
        path = preference_export_file(export=export)
    except ApplicationError as exc:
        return _unavailable(request, exc.message, status=exc.status_code)
    zipped = path.is_dir()
    stem = _name(export.campaign.name, "export", str(export.pk), export.content_hash[:12])
    return _download(path, filename=stem + (".zip" if zipped else ".jsonl"), zipped=zipped,
                     content_type="application/zip" if zipped else "application/jsonl")


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def data_snapshot_download(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    """The snapshot's JSONL file, byte for byte what its content hash names."""
    snapshot = get_object_or_404(Snapshot.objects.select_related("campaign"), pk=snapshot_id)
    try:
        path = snapshot_file(snapshot=snapshot)
    except ApplicationError as exc:
        return _unavailable(request, exc.message, status=exc.status_code)
    stem = _name(snapshot.campaign.name, "snapshot", snapshot.method, snapshot.content_hash[:12])
    return _download(path, filename=stem + ".jsonl", content_type="application/jsonl",
                     zipped=False)
