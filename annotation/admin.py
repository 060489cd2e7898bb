"""Django admin for every annotation model, with filters, search and an import upload.

Claim state (assignments, a comparison's claimed_count / is_full and what they are counted
against) and judgments change only through the annotation services, so their admins are
read-only where a hand edit would leave the counters or the one-current-judgment rule wrong.
User accounts are administered in ``annotation.admin_accounts``.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html

from annotation import admin_accounts, importers
from annotation.errors import ApplicationError
from annotation.forms import ImportUploadForm
from annotation.models import (
    AnnotatorProfile,
    AnnotatorQuality,
    Assignment,
    Campaign,
    CampaignQuality,
    Comparison,
    DriftAlert,
    Judgment,
    PreferenceExport,
    Prompt,
    Response,
    Snapshot,
)
from annotation.services import preference_export_create
from annotation.services.imports import comparisons_import_file

admin_accounts.register(admin.site)


class SnapshotCreateForm(forms.Form):
    """The campaign list's "Create snapshot": the aggregation method and whose judgments."""

    method = forms.ChoiceField(choices=Snapshot.Method.choices)
    sources = forms.ChoiceField(choices=PreferenceExport.Sources.choices, initial="all")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "title", "overlap", "calibration_rate", "accuracy_threshold",
                    "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "title"]
    actions = ["export_preferences", "create_snapshot"]
    change_list_template = "admin/annotation/campaign/change_list.html"

    def get_readonly_fields(self, request, obj=None):
        # Each comparison's is_full was computed against this overlap when it was claimed;
        # changing it by hand would strand full rows or over-issue open ones.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "overlap"] if obj is not None else fields

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view),
                 name="annotation_campaign_import"),
            *super().get_urls(),
        ]

    def import_view(self, request):
        form = ImportUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = comparisons_import_file(
                    campaign=form.cleaned_data["campaign"], source=form.cleaned_data["file"],
                    skip_invalid=form.cleaned_data.get("skip_invalid", False),
                    allow_duplicates=form.cleaned_data.get("allow_duplicates", False))
            except importers.ImportFileError as exc:
                for error in exc.errors[: importers.MAX_ERRORS_REPORTED]:
                    form.add_error("file", error)
            else:
                self.message_user(
                    request,
                    f"Imported {result.comparisons} comparisons ({result.calibration} "
                    f"calibration) from {result.prompts} prompts; {result.labels} source "
                    f"labels kept.",
                    messages.SUCCESS,
                )
                for warning in result.warnings:
                    self.message_user(request, warning, messages.WARNING)
                for reject in result.rejects[: importers.MAX_ERRORS_REPORTED]:
                    self.message_user(request, f"Skipped line {reject.line}, field "
                                      f"'{reject.field}': {reject.message}", messages.WARNING)
                return redirect("admin:annotation_campaign_changelist")
        context = {**self.admin_site.each_context(request), "form": form,
                   "title": "Import comparisons", "opts": self.model._meta}
        # A refused upload is a client error: 400, with the form naming each line and field.
        return render(request, "admin/annotation/campaign/import.html", context,
                      status=400 if form.errors else 200)

    @admin.action(description="Export preferences (TRL JSONL)")
    def export_preferences(self, request, queryset):
        queued = 0
        for campaign in queryset:
            try:
                preference_export_create(campaign=campaign, fmt=PreferenceExport.Format.JSONL,
                                         requested_by=request.user)
            except ApplicationError as exc:  # the requester's export limits (429)
                self.message_user(request, f"{campaign}: {exc.message}", messages.ERROR)
            else:
                queued += 1
        if queued:
            self.message_user(request, format_html(
                'Queued {} export(s); they are listed, and download, on the <a href="{}">data '
                "page</a>.", queued, reverse("data-home")), messages.SUCCESS)

    @admin.action(description="Create snapshot", permissions=["add_snapshot"])
    def create_snapshot(self, request, queryset):
        """Aggregate each selected campaign into a snapshot (``snapshot_create``), after a page
        that picks the aggregation method and whose judgments count."""
        from annotation.services.snapshots import snapshot_create

        form = SnapshotCreateForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            for campaign in queryset:
                try:
                    snapshot = snapshot_create(campaign=campaign, method=data["method"],
                                               sources=data["sources"], created_by=request.user)
                except ApplicationError as exc:
                    self.message_user(request, f"{campaign}: {exc.message}", messages.ERROR)
                else:
                    self.message_user(request, f"{campaign}: snapshot #{snapshot.pk} "
                                      f"({snapshot.row_count} rows).", messages.SUCCESS)
            return None
        return render(request, "admin/annotation/campaign/snapshot.html", {
            **self.admin_site.each_context(request), "title": "Create snapshot", "form": form,
            "campaigns": queryset, "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME})

    def has_add_snapshot_permission(self, request) -> bool:
        return request.user.has_perm("annotation.add_snapshot")


class ResponseInline(admin.TabularInline):
    model = Response
    extra = 0
    fields = ["text", "source_model", "source_version", "source_run"]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "campaign", "category", "external_id"]
    list_filter = ["campaign", "category"]
    search_fields = ["external_id", "source", "turns"]
    inlines = [ResponseInline]


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "source_model", "source_version"]
    list_filter = ["source_model"]
    search_fields = ["text", "source_model", "source_run"]
    raw_id_fields = ["prompt"]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "kind", "calibration_type", "gold_choice", "priority",
                    "claimed_count", "target_overlap", "is_full", "created_at"]
    list_filter = ["campaign", "kind", "calibration_type", "is_full", "gold_choice"]
    search_fields = ["id", "prompt__external_id", "response_a__text", "response_b__text"]
    raw_id_fields = ["prompt", "response_a", "response_b", "for_annotator",
                     "source_comparison", "source_comparison_2"]
    readonly_fields = ["claimed_count", "is_full"]
    # Fixed once a comparison exists: its claims and judgments were counted against them.
    # target_overlap moves only through comparison_redundancy_adapt, which keeps is_full right.
    claim_fields = ["campaign", "kind", "prompt", "response_a", "response_b", "for_annotator",
                    "source_comparison", "source_comparison_2", "target_overlap"]
    actions = ["degrade_truncate", "degrade_wrong_number", "degrade_unrelated"]

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, *self.claim_fields] if obj is not None else fields

    def _degrade(self, request, queryset, transform: str) -> None:
        from annotation.services.calibration import calibration_degraded_create

        made, skipped = 0, []
        for comparison in queryset.select_related("response_a"):
            try:
                calibration_degraded_create(comparison=comparison, transform=transform)
                made += 1
            except ApplicationError as exc:
                skipped.append(f"#{comparison.pk}: {exc.message}")
        self.message_user(request, f"Made {made} degraded calibration pair(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, "Skipped " + "; ".join(skipped[:10]), messages.WARNING)

    @admin.action(description="Make degraded calibration pairs: truncated")
    def degrade_truncate(self, request, queryset):
        self._degrade(request, queryset, "truncate")

    @admin.action(description="Make degraded calibration pairs: wrong number")
    def degrade_wrong_number(self, request, queryset):
        self._degrade(request, queryset, "wrong_number")

    @admin.action(description="Make degraded calibration pairs: unrelated answer")
    def degrade_unrelated(self, request, queryset):
        self._degrade(request, queryset, "unrelated")


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Computed or immutable rows: shown, never edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class _RecordAdmin(_ReadOnlyAdmin):
    """The record of what annotators did (assignments, judgments): view only, for superusers
    too. Reopening an assignment or editing a judgment would rewrite history and break the
    claim counts; corrections are superseding judgments (``judgment_supersede``)."""

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Assignment)
class AssignmentAdmin(_RecordAdmin):
    """View-only: an assignment's status is claim state that only the assignment services keep
    consistent with claimed_count and the annotator's judgments (reopening a completed one gave
    an annotator two current judgments on one comparison)."""

    list_display = ["id", "annotator", "campaign", "comparison", "a_on_left", "status",
                    "issued_at", "expires_at"]
    list_filter = ["campaign", "status", "a_on_left"]
    search_fields = ["annotator__username", "token", "comparison__id"]
    raw_id_fields = ["comparison", "annotator"]
    readonly_fields = ["token"]


@admin.register(Judgment)
class JudgmentAdmin(_RecordAdmin):
    """Read-only: judgments are append-only (a correction is a superseding judgment)."""

    list_display = ["id", "annotator", "campaign", "comparison", "choice", "strength",
                    "seconds_spent", "created_at"]
    list_filter = ["campaign", "choice", "strength", "comparison__kind"]
    search_fields = ["annotator__username", "rationale", "idempotency_key"]
    date_hierarchy = "created_at"


@admin.register(AnnotatorProfile)
class AnnotatorProfileAdmin(_ReadOnlyAdmin):
    """View-only: pausing is the quality services' call and un-pausing goes through
    ``annotator_unpause`` (the quality pages), which records since when gold counts again."""

    list_display = ["user", "kind", "status", "paused_reason", "unpaused_at", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["user__username"]


@admin.register(AnnotatorQuality)
class AnnotatorQualityAdmin(_ReadOnlyAdmin):
    list_display = ["annotator", "campaign", "n_judgments", "n_gold", "gold_accuracy",
                    "gold_ci_low", "gold_ci_high", "competence", "position_bias",
                    "length_bias", "updated_at"]
    list_filter = ["campaign"]
    search_fields = ["annotator__username"]


@admin.register(CampaignQuality)
class CampaignQualityAdmin(_ReadOnlyAdmin):
    list_display = ["campaign", "n_judgments", "alpha_nominal", "alpha_ordinal",
                    "noise_epsilon", "updated_at"]


@admin.register(DriftAlert)
class DriftAlertAdmin(_ReadOnlyAdmin):
    list_display = ["annotator", "campaign", "stream", "onset_index", "detected_index",
                    "onset_at", "detected_at", "acknowledged_at", "created_at"]
    list_filter = ["campaign", "stream", ("acknowledged_at", admin.EmptyFieldListFilter)]
    search_fields = ["annotator__username"]


def _size(n: int | None) -> str:
    return "—" if n is None else filesizeformat(n)


def _hash(value: str) -> str:
    """12 characters shown, the full hash in the title and selectable in the page's text."""
    if not value:
        return "—"
    return format_html('<code title="{}">{}</code>', value, value[:12])


@admin.register(Snapshot)
class SnapshotAdmin(_ReadOnlyAdmin):
    list_display = ["short_hash", "campaign", "method", "row_count", "size", "created_by",
                    "created_at", "download"]
    list_select_related = ["campaign", "created_by"]
    list_filter = ["campaign", "method"]
    search_fields = ["content_hash"]
    fields = ["campaign", "method", "row_count", "size", "content_hash", "download", "params",
              "fits", "path", "created_by", "created_at"]
    readonly_fields = ["size", "download", "created_at"]

    @admin.display(description="Hash", ordering="content_hash")
    def short_hash(self, obj: Snapshot) -> str:
        return _hash(obj.content_hash)

    @admin.display(description="Size", ordering="size_bytes")
    def size(self, obj: Snapshot) -> str:
        return _size(obj.size_bytes)

    @admin.display(description="Download")
    def download(self, obj: Snapshot) -> str:
        return format_html('<a href="{}">download .jsonl</a>',
                           reverse("data-snapshot-download", args=[obj.pk]))


class PreferenceExportAddForm(forms.Form):
    """What an export needs; ``preference_export_create`` queues it (never a bare save)."""

    campaign = forms.ModelChoiceField(queryset=Campaign.objects.order_by("name"))
    format = forms.ChoiceField(choices=PreferenceExport.Format.choices,
                               initial=PreferenceExport.Format.JSONL)
    sources = forms.ChoiceField(choices=PreferenceExport.Sources.choices,
                                initial=PreferenceExport.Sources.ALL)


@admin.register(PreferenceExport)
class PreferenceExportAdmin(admin.ModelAdmin):
    """Exports are jobs: added through ``preference_export_create`` (queued with their outbox
    message, so they run), cancelled through ``preference_export_cancel``, and otherwise
    view-only: the worker owns a job's row, and a finished export is a record."""

    list_display = ["id", "campaign", "format", "sources", "status", "row_count", "size",
                    "short_hash", "created_at", "finished_at", "download"]
    list_select_related = ["campaign"]
    list_filter = ["status", "format", "campaign"]
    actions = ["cancel_exports"]
    add_form_template = "admin/annotation/preferenceexport/add.html"
    change_form_template = "admin/annotation/preferenceexport/change_form.html"
    fields = ["campaign", "format", "sources", "status", "error", "row_count", "size",
              "content_hash", "download", "path", "purged_at", "requested_by", "created_at",
              "queued_at", "started_at", "finished_at", "attempts", "worker",
              "cancel_requested"]
    readonly_fields = fields

    @admin.display(description="Hash", ordering="content_hash")
    def short_hash(self, obj: PreferenceExport) -> str:
        return _hash(obj.content_hash)

    @admin.display(description="Size", ordering="size_bytes")
    def size(self, obj: PreferenceExport) -> str:
        return _size(obj.size_bytes)

    @admin.display(description="Download")
    def download(self, obj: PreferenceExport) -> str:
        if obj.status != PreferenceExport.Status.SUCCEEDED:
            return "—"
        if obj.purged_at is not None:
            return "purged (retention)"
        kind = "zip" if obj.format == PreferenceExport.Format.DATASET else "jsonl"
        return format_html('<a href="{}">download .{}</a>',
                           reverse("data-export-download", args=[obj.pk]), kind)

    def has_change_permission(self, request, obj=None):
        # One export's page is view-only (no field, no Save): a saved stale form would
        # overwrite the worker's status, and a finished export is a record.
        return obj is None and super().has_change_permission(request, obj)

    def has_cancel_permission(self, request) -> bool:
        # Whoever may start an export may stop one.
        return request.user.has_perm("annotation.add_preferenceexport")

    def get_urls(self):
        return [
            path("<int:export_id>/cancel/", self.admin_site.admin_view(self.cancel_view),
                 name="annotation_preferenceexport_cancel"),
            *super().get_urls(),
        ]

    def _cancel(self, request, export: PreferenceExport) -> bool:
        from annotation.services.exports import preference_export_cancel

        try:
            export = preference_export_cancel(export=export)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.WARNING)
            return False
        done = "cancelled" if export.status == PreferenceExport.Status.CANCELLED else \
            "asked to stop (it ends cancelled within moments)"
        self.message_user(request, f"Export #{export.pk} {done}.", messages.SUCCESS)
        return True

    @admin.action(description="Cancel selected exports", permissions=["cancel"])
    def cancel_exports(self, request, queryset):
        for export in queryset:
            self._cancel(request, export)

    def cancel_view(self, request, export_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        export = get_object_or_404(PreferenceExport, pk=export_id)
        self._cancel(request, export)
        return redirect("admin:annotation_preferenceexport_change", export.pk)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        export = PreferenceExport.objects.filter(pk=object_id).only("status").first()
        extra_context = {
            **(extra_context or {}),
            "can_cancel": export is not None and export.status not in PreferenceExport.TERMINAL
            and self.has_cancel_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def add_view(self, request, form_url="", extra_context=None):
        """Validate and queue through ``preference_export_create``; never a bare save."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PreferenceExportAddForm(request.POST or None)
        status = 200
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                # One transaction with its log entry, as Django's own add view: an error after
                # the export was queued must not leave it queued behind a 500.
                with transaction.atomic():
                    export = preference_export_create(
                        campaign=data["campaign"], fmt=data["format"], sources=data["sources"],
                        requested_by=request.user)
                    self.log_addition(request, export, [{"added": {}}])
            except ApplicationError as exc:
                form.add_error(None, exc.message)
                status = exc.status_code
            else:
                self.message_user(request, f"Queued export #{export.pk}; its page shows the "
                                  "status, and the download once it has succeeded.",
                                  messages.SUCCESS)
                return redirect("admin:annotation_preferenceexport_change", export.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": "Add preference export",
            "form": form,
            "opts": self.model._meta,
            **(extra_context or {}),
        }
        return render(request, self.add_form_template, context,
                      status=400 if form.errors and status == 200 else status)
