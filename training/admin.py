"""Django admin for training: runs, sweeps, registered models and artifacts, and the actions
that start runs from a snapshot or a reward model.

A run's row is job state that only ``training.services.runs`` and its worker write (status,
step, heartbeat, result), so runs are view-only after creation, cancel aside: a hand save of a
stale form would overwrite a worker's progress. The add page and every action go through
``run_create`` / ``sweep_create``, which validate and queue; a row saved by a bare ModelForm
would stay "queued" forever with no message behind it. A ``RunConfigError`` becomes form field
errors and nothing is queued.
"""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html

from annotation.admin import SnapshotAdmin
from annotation.errors import ApplicationError
from annotation.models import Snapshot
from training.forms import (
    ActionSpec,
    TrainingActionForm,
    TrainingRunAddForm,
    method_config_help,
    run_errors_to_form,
)
from training.models import ModelKind, RegisteredModel, RunArtifact, Sweep, TrainingRun
from training.services.runs import (
    RunConfigError,
    model_register,
    run_cancel,
    run_create,
    sweep_create,
)

ACTION_TEMPLATE = "admin/training/action_form.html"


def _has_perm(request: HttpRequest, codename: str) -> bool:
    return request.user.has_perm(f"training.{codename}")


# --- Starting runs from selected rows ---------------------------------------------------------


def _start(request: HttpRequest, form: TrainingActionForm, *, snapshot: Snapshot | None,
           reward_models: list[RegisteredModel]) -> TrainingRun | Sweep:
    data = form.cleaned_data
    kwargs = dict(method=form.spec.method, config=data.get("config") or {},
                  snapshot=data.get("snapshot") or snapshot, campaign=data.get("campaign"),
                  base_model=data.get("base_model"),
                  reference_model=data.get("reference_model"), reward_models=reward_models,
                  seed=data.get("seed") or 0, name=data.get("name") or "",
                  requested_by=request.user)
    grid = form.grid()
    if grid is None:
        return run_create(**kwargs)
    return sweep_create(grid=grid, **kwargs)


def training_action(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet,
                    *, spec: ActionSpec, source: str) -> HttpResponse | None:
    """An action's intermediate page, and its apply.

    ``source`` says what the selection is: ``snapshot`` (one run or sweep per selected
    snapshot) or ``reward_model`` (the selected reward models are the run's reward models,
    several an ensemble; the snapshot defaults to the one the first was trained on).
    """
    items = list(queryset)
    initial: dict = {}
    if source == "reward_model":
        if any(m.kind != ModelKind.REWARD for m in items):
            model_admin.message_user(request, "Select reward models only.", messages.ERROR)
            return None
        first = items[0].produced_by if items and items[0].produced_by_id else None
        if first is not None and first.snapshot_id:
            initial["snapshot"] = first.snapshot_id
    form = TrainingActionForm(request.POST if "apply" in request.POST else None,
                              spec=spec, initial=initial)
    if form.is_bound and form.is_valid():
        started = []
        try:
            if source == "snapshot":
                # All-or-nothing over the selection: one failing snapshot queues none.
                with transaction.atomic():
                    started = [_start(request, form, snapshot=s, reward_models=[])
                               for s in items]
            else:
                started = [_start(request, form, snapshot=None, reward_models=items)]
        except RunConfigError as exc:
            run_errors_to_form(form, exc.errors, aliases=form.error_aliases())
        else:
            names = ", ".join(f"{type(s).__name__} #{s.pk}" for s in started)
            model_admin.message_user(request, f"{spec.title}: queued {names}.", messages.SUCCESS)
            return None
    context = {
        **model_admin.admin_site.each_context(request),
        "title": spec.title,
        "spec": spec,
        "form": form,
        "items": items,
        "action": spec.name,
        "opts": model_admin.model._meta,
        "config_help": method_config_help(spec.method),
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return render(request, ACTION_TEMPLATE, context, status=400 if form.errors else 200)


def _action(spec: ActionSpec, source: str):
    def action(model_admin, request, queryset):
        return training_action(model_admin, request, queryset, spec=spec, source=source)

    action.__name__ = spec.name
    return admin.action(description=spec.title, permissions=["add_run"])(action)


SNAPSHOT_ACTIONS = [
    ActionSpec(name="train_reward_model", title="Train reward model", method="reward_model",
               inputs=("base_model",)),
    ActionSpec(name="train_reward_ensemble", title="Train reward-model ensemble (k seeds)",
               method="reward_model", seed_grid=True, inputs=("base_model",)),
]
REWARD_MODEL_ACTIONS = [
    ActionSpec(name="dpo_beta_sweep", title="DPO β sweep", method="dpo",
               grid_fields=("beta",), grid_values="0.02, 0.05, 0.1, 0.3, 1.0",
               inputs=("snapshot", "base_model", "reference_model")),
    ActionSpec(name="rlhf_kl_sweep", title="RLHF KL sweep", method="rlhf",
               grid_fields=("beta", "kl_coef", "init_kl_coef"),
               grid_values="0.01, 0.03, 0.1, 0.3",
               inputs=("snapshot", "base_model", "reference_model")),
    ActionSpec(name="best_of_n_sweep", title="Best-of-n sweep", method="best_of_n",
               grid_fields=("n", "best_of_n", "n_samples"), grid_values="1, 2, 4, 8, 16, 32",
               inputs=("snapshot", "base_model")),
    ActionSpec(name="rest_run", title="ReST", method="rest",
               inputs=("snapshot", "base_model", "reference_model")),
    ActionSpec(name="ai_judge_label", title="Label with AI judge", method="ai_judge",
               inputs=("campaign", "base_model")),
]


class _StartsRuns:
    def has_add_run_permission(self, request: HttpRequest) -> bool:
        return _has_perm(request, "add_trainingrun")


# The snapshot admin lives in annotation/ (which must not import training); its training
# actions are added here by re-registering a subclass.
admin.site.unregister(Snapshot)


@admin.register(Snapshot)
class SnapshotTrainingAdmin(_StartsRuns, SnapshotAdmin):
    actions = [*(SnapshotAdmin.actions or []), *(_action(s, "snapshot") for s in SNAPSHOT_ACTIONS)]


# --- The training models ----------------------------------------------------------------------


class ArtifactInline(admin.TabularInline):
    model = RunArtifact
    extra = 0
    can_delete = False
    fields = readonly_fields = ["name", "size", "sha256", "download"]

    @admin.display(description="Download")
    def download(self, obj: RunArtifact) -> str:
        url = reverse("training-artifact-download", args=[obj.run_id, obj.pk])
        return format_html('<a href="{}">download</a>', url)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_select_related = ["snapshot__campaign", "sweep"]
    list_display = ["id", "__str__", "method", "status", "step", "total_steps", "seed",
                    "snapshot", "sweep", "created_at", "finished_at"]
    list_filter = ["method", "status"]
    search_fields = ["name", "id"]
    raw_id_fields = ["sweep"]
    inlines = [ArtifactInline]
    actions = ["cancel_runs"]
    add_form_template = "admin/training/trainingrun/add.html"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] + ["reward_models", "run_page"]

    @admin.display(description="Run page")
    def run_page(self, obj: TrainingRun) -> str:
        return format_html('<a href="{}">progress, charts, log, cancel</a>',
                           reverse("training-run", args=[obj.pk]))

    def has_change_permission(self, request, obj=None):
        # The change list (actions) may act; one run's form is view-only: a saved stale form
        # would overwrite the worker's status and progress.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return _has_perm(request, "change_trainingrun")

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request, queryset):
        done, skipped = 0, []
        for run in queryset:
            try:
                run_cancel(run=run)
                done += 1
            except ApplicationError as exc:
                skipped.append(exc.message)
        self.message_user(request, f"Cancel requested for {done} run(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, " ".join(skipped[:10]), messages.WARNING)

    def add_view(self, request, form_url="", extra_context=None):
        """Validate and queue through ``run_create``; never a bare save."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = TrainingRunAddForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                run = run_create(method=data["method"], config=data["config"],
                                 snapshot=data["snapshot"], campaign=data["campaign"],
                                 base_model=data["base_model"],
                                 reference_model=data["reference_model"],
                                 reward_models=data["reward_models"], seed=data["seed"] or 0,
                                 name=data["name"], requested_by=request.user)
            except RunConfigError as exc:
                run_errors_to_form(form, exc.errors)
            else:
                self.log_addition(request, run, [{"added": {}}])
                self.message_user(request, f"Queued run #{run.pk}.", messages.SUCCESS)
                return redirect("training-run", run.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": "Add training run",
            "form": form,
            "opts": self.model._meta,
            "methods_help": {m: method_config_help(m) for m, _ in form.fields["method"].choices},
            **(extra_context or {}),
        }
        return render(request, self.add_form_template, context,
                      status=400 if form.errors else 200)


@admin.register(Sweep)
class SweepAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "method", "snapshot", "grid", "created_by", "created_at"]
    list_filter = ["method"]
    readonly_fields = ["name", "method", "snapshot", "config", "grid", "created_by",
                       "created_at", "sweep_page"]

    @admin.display(description="Sweep page")
    def sweep_page(self, obj: Sweep) -> str:
        return format_html('<a href="{}">one line per run</a>',
                           reverse("training-sweep", args=[obj.pk]))

    def has_add_permission(self, request):
        # A sweep starts from a snapshot's or a reward model's action (sweep_create queues
        # its runs); a row added here would have none.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(_StartsRuns, admin.ModelAdmin):
    list_display = ["id", "name", "kind", "architecture", "parameters", "produced_by",
                    "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "path"]
    raw_id_fields = ["produced_by", "tokenizer"]
    actions = [_action(s, "reward_model") for s in REWARD_MODEL_ACTIONS]

    def get_readonly_fields(self, request, obj=None):
        # Runs name models by id and load them from their path: only name and meta change.
        if obj is None:
            return ["produced_by", "architecture", "parameters"]
        return ["kind", "path", "produced_by", "tokenizer", "architecture", "parameters",
                "created_at"]

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name", "meta"])
            return
        try:
            created = model_register(name=obj.name, kind=obj.kind, path=obj.path,
                                     tokenizer=obj.tokenizer, meta=obj.meta)
        except ApplicationError as exc:
            # Checked in the form too (get_form); this is the race's backstop.
            raise ValueError(exc.message) from exc
        obj.pk, obj._state = created.pk, created._state
        obj.architecture, obj.parameters = created.architecture, created.parameters

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            return form

        class AddForm(form):
            def clean_path(self):
                path = self.cleaned_data["path"]
                if not Path(path).exists():
                    raise forms.ValidationError(f"No model at {path}.")
                return path

        return AddForm


@admin.register(RunArtifact)
class RunArtifactAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "name", "size", "created_at", "download"]
    search_fields = ["name", "run__id"]
    readonly_fields = ["run", "name", "path", "size", "sha256", "created_at", "download"]

    @admin.display(description="Download")
    def download(self, obj: RunArtifact) -> str:
        return format_html('<a href="{}">download</a>',
                           reverse("training-artifact-download", args=[obj.run_id, obj.pk]))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
