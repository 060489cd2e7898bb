"""Django admin for experiments: the list with status, progress and headline, a view-only
detail, an add page that goes through ``experiment_create`` and a "Cancel" action. Eval rounds
(``evaluation.eval_rounds``): the list with the win rate and its interval, an add page that goes
through ``eval_round_create`` and a "Compute win rate" action.

An experiment's row is job state that only ``evaluation.experiment_jobs`` and its worker write,
so it is view-only after creation (a saved stale form would overwrite the worker's progress),
and a row saved by a bare ModelForm would stay "queued" forever with no message behind it. An
``ExperimentConfigError`` becomes form field errors and nothing is queued.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template import engines
from django.urls import reverse
from django.utils.html import format_html

from annotation.errors import ApplicationError
from evaluation.eval_rounds import EvalRoundError, eval_round_create, eval_round_result
from evaluation.experiment_jobs import (
    INPUT_FIELDS,
    ExperimentConfigError,
    experiment_cancel,
    experiment_create,
)
from evaluation.experiments import ExperimentSpec
from evaluation.models import EvalRound, Experiment
from training.methods.base import config_help
from training.models import TrainingRun


class ExperimentAddForm(forms.Form):
    name = forms.CharField(required=False, max_length=200)
    spec = forms.JSONField(
        required=False, initial=dict, widget=forms.Textarea(attrs={"rows": 12, "cols": 80}),
        help_text="A JSON object of ExperimentSpec fields (listed below); missing fields take "
                  "their defaults.")
    epsilons = forms.CharField(
        required=False, help_text="Injected flip rates ε, comma-separated, one arm each "
                                  "(e.g. 0, 0.1, 0.2, 0.3); empty = the spec's flip_rate.")

    def clean_spec(self) -> dict[str, Any]:
        spec = self.cleaned_data.get("spec")
        if spec in (None, ""):
            return {}
        if not isinstance(spec, dict):
            raise forms.ValidationError("A JSON object of ExperimentSpec fields.")
        return spec

    def clean_epsilons(self) -> list[float] | None:
        text = self.cleaned_data.get("epsilons", "").strip()
        if not text:
            return None
        try:
            return [float(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise forms.ValidationError("Numbers separated by commas.") from exc


def _errors_to_form(form: forms.Form, errors: dict[str, list[str]]) -> None:
    """Inputs on their own field, spec fields on ``spec`` prefixed with their name."""
    for name, messages_ in errors.items():
        if name in INPUT_FIELDS:
            form.add_error(name, list(messages_))
        else:
            form.add_error("spec", [f"{name}: {m}" for m in messages_])


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "status", "progress_percent", "stage", "arms",
                    "headline_slopes", "requested_by", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["name", "id"]
    actions = ["cancel_experiments"]
    add_form_template = "admin/evaluation/experiment/add.html"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="Progress")
    def progress_percent(self, obj: Experiment) -> str:
        return f"{obj.progress:.0%}"

    @admin.display(description="ε arms")
    def arms(self, obj: Experiment) -> str:
        return ", ".join(f"{e:g}" for e in obj.epsilons or [])

    @admin.display(description="Gap slope per ε")
    def headline_slopes(self, obj: Experiment) -> str:
        parts = []
        for arm in (obj.headline or {}).get("arms", []):
            slopes = ", ".join(f"{m} {v['gap_slope']['value']:.3f}" for m, v in arm.items()
                               if isinstance(v, dict) and "gap_slope" in v
                               and v["gap_slope"].get("value") is not None)
            parts.append(f"ε={arm.get('epsilon_injected', 0):g}: {slopes}")
        return "; ".join(parts) or "—"

    def has_change_permission(self, request, obj=None):
        # The change list (actions) may act; one experiment's form is view-only.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("evaluation.change_experiment")

    @admin.action(description="Cancel selected experiments", permissions=["cancel"])
    def cancel_experiments(self, request, queryset):
        done, skipped = 0, []
        for experiment in queryset:
            try:
                experiment_cancel(experiment=experiment)
                done += 1
            except ApplicationError as exc:
                skipped.append(exc.message)
        self.message_user(request, f"Cancel requested for {done} experiment(s).",
                          messages.SUCCESS)
        if skipped:
            self.message_user(request, " ".join(skipped[:10]), messages.WARNING)

    def add_view(self, request, form_url="", extra_context=None):
        """Validate and queue through ``experiment_create``; never a bare save."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ExperimentAddForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                experiment = experiment_create(spec=data["spec"], epsilons=data["epsilons"],
                                               name=data["name"], requested_by=request.user)
            except ExperimentConfigError as exc:
                _errors_to_form(form, exc.errors)
            else:
                self.log_addition(request, experiment, [{"added": {}}])
                self.message_user(request, f"Queued experiment #{experiment.pk} on the gpu "
                                           "queue.", messages.SUCCESS)
                return redirect(reverse("admin:evaluation_experiment_change",
                                        args=[experiment.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Add experiment",
            "form": form,
            "opts": self.model._meta,
            "method": "ExperimentSpec",
            "config_help": config_help(ExperimentSpec),
            **(extra_context or {}),
        }
        return render(request, self.add_form_template, context,
                      status=400 if form.errors else 200)


# --- Eval rounds ------------------------------------------------------------------------------


class EvalRoundAddForm(forms.Form):
    run = forms.ModelChoiceField(
        queryset=TrainingRun.objects.order_by("-created_at"),
        help_text="A succeeded policy run (sft, dpo, rlhf, best_of_n): its samples.jsonl.")
    pool = forms.CharField(
        required=False, max_length=200,
        help_text="A simulated pool that judges at once, e.g. crowd:5 (needs a run on a "
                  "world's snapshot); empty = the campaign opens for people.")
    n_items = forms.IntegerField(required=False,
                                 help_text="Prompts, one comparison each; empty = all.")
    overlap = forms.IntegerField(initial=3, help_text="Judgments per comparison (1-50).")
    seed = forms.IntegerField(initial=0, help_text="Picks the prompts and the sides.")
    name = forms.CharField(required=False, max_length=100,
                           help_text="The campaign's name (a slug); empty = "
                                     "eval-run-<run>-seed-<seed>.")


_EVAL_ROUND_ADD = engines["django"].from_string("""{% extends "admin/base_site.html" %}
{% block content %}
<h1>Add eval round</h1>
<p>The run's measured replies against its reference's, one comparison per prompt, sides
randomized. With a pool the simulated annotators judge at once and the win rate is computed;
otherwise the campaign opens for people and "Compute win rate" reads their judgments.</p>
<form method="post" id="evalround-add-form">
  {% csrf_token %}
  {% include "admin/_form_rows.html" %}
  <input type="submit" value="Create round">
</form>
{% endblock content %}""")


@admin.register(EvalRound)
class EvalRoundAdmin(admin.ModelAdmin):
    list_display = ["id", "run_link", "campaign_link", "pool_or_people", "win_rate_interval",
                    "n_judgments", "n_items", "computed_at", "created_at"]
    list_select_related = ["run", "campaign"]
    search_fields = ["id", "run__id", "campaign__name"]
    actions = ["compute_win_rate"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="Run", ordering="run")
    def run_link(self, obj: EvalRound):
        return format_html('<a href="{}">{}</a>', reverse(
            "admin:training_trainingrun_change", args=[obj.run_id]), obj.run)

    @admin.display(description="Campaign", ordering="campaign__name")
    def campaign_link(self, obj: EvalRound):
        return format_html('<a href="{}">{}</a>', reverse(
            "admin:annotation_campaign_change", args=[obj.campaign_id]), obj.campaign.name)

    @admin.display(description="Pool", ordering="pool")
    def pool_or_people(self, obj: EvalRound) -> str:
        return obj.pool or "people"

    @admin.display(description="Win rate [90% interval]", ordering="win_rate")
    def win_rate_interval(self, obj: EvalRound) -> str:
        if obj.win_rate is None:
            return "—"
        return f"{obj.win_rate:.3f} [{obj.lo:.3f}, {obj.hi:.3f}]"

    def has_change_permission(self, request, obj=None):
        # The change list (actions) may act; one round's page is view-only.
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Compute win rate", permissions=["change"])
    def compute_win_rate(self, request, queryset):
        done, skipped = [], []
        for eval_round in queryset.select_related("campaign"):
            try:
                eval_round_result(eval_round)
                done.append(f"#{eval_round.pk}: {eval_round.win_rate:.3f} "
                            f"[{eval_round.lo:.3f}, {eval_round.hi:.3f}], "
                            f"n={eval_round.n_judgments}")
            except ApplicationError as exc:
                skipped.append(exc.message)
        if done:
            self.message_user(request, "Win rate of round " + "; ".join(done),
                              messages.SUCCESS)
        if skipped:
            self.message_user(request, " ".join(skipped[:10]), messages.WARNING)

    def add_view(self, request, form_url="", extra_context=None):
        """Create through ``eval_round_create``; its field errors land on the form."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = EvalRoundAddForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                eval_round = eval_round_create(
                    run=data["run"], pool=data["pool"].strip() or None,
                    n_items=data["n_items"], overlap=data["overlap"], seed=data["seed"],
                    name=data["name"].strip(), requested_by=request.user)
            except EvalRoundError as exc:
                for name, messages_ in exc.errors.items():
                    form.add_error(name if name in form.fields else None, list(messages_))
            except ApplicationError as exc:  # the simulation refused (the round exists)
                form.add_error(None, exc.message)
            else:
                self.log_addition(request, eval_round, [{"added": {}}])
                self.message_user(request, f"Created {eval_round}: campaign "
                                           f"{eval_round.campaign.name}.", messages.SUCCESS)
                return redirect(reverse("admin:evaluation_evalround_changelist"))
        context = {**self.admin_site.each_context(request), "title": "Add eval round",
                   "form": form, "opts": self.model._meta, **(extra_context or {})}
        return HttpResponse(_EVAL_ROUND_ADD.render(context, request))
