"""Training pages (DESIGN section 6): the run list, a run's live page, its chart data, cancel,
artifact downloads, and a sweep's table. htmx function views; reads through
``training.selectors.runs``, the one state change (cancel) through ``training.services.runs``.

Researchers and admins see and act; annotators and accounts without a role get 403. No view
imports a method's heavy libraries: the web process only reads rows (``tests/test_layers.py``).
"""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.errors import ApplicationError
from annotation.models import JobStatus
from annotation.permissions import role_required
from annotation.services import Role
from training.models import Method, RunArtifact, TrainingRun
from training.selectors import runs as sr
from training.services.runs import run_cancel as run_cancel_service

STAFF = (Role.ADMIN, Role.RESEARCHER)
RUN_PAGE = "training/run.html"


class RunFilterForm(forms.Form):
    """The run list's filters; an invalid value falls back to "all"."""

    method = forms.ChoiceField(choices=[("", "all"), *Method.choices], required=False)
    status = forms.ChoiceField(choices=[("", "all"), *JobStatus.choices], required=False)

    def params(self) -> dict[str, str]:
        self.is_valid()
        return {"method": self.cleaned_data.get("method") or "",
                "status": self.cleaned_data.get("status") or ""}


def _run_or_404(run_id: int) -> TrainingRun:
    run = sr.run_get(run_id=run_id)
    if run is None:
        raise Http404("No such run.")
    return run


def _run_context(run: TrainingRun, *, error: str = "") -> dict:
    return {
        "run": run,
        "progress": sr.run_progress(run),
        "terminal": sr.run_is_terminal(run),
        "final_metrics": sr.run_final_metrics(run),
        "error": error,
    }


@require_GET
@role_required(*STAFF)
def run_list(request: HttpRequest) -> HttpResponse:
    params = RunFilterForm(request.GET).params()
    template = "training/run_list.html"
    if request.htmx:
        template += "#run-table"
    return render(request, template, {
        "runs": sr.run_list(**params)[:200],
        "sweeps": sr.sweep_list()[:20],
        "params": params,
        "methods": Method.choices,
        "statuses": JobStatus.choices,
    })


@require_GET
@role_required(*STAFF)
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run page; an htmx poll gets only ``#run-status``, which stops polling (it carries no
    ``hx-trigger``) once the run has ended."""
    run = _run_or_404(run_id)
    if request.htmx:
        return render(request, RUN_PAGE + "#run-status", _run_context(run))
    return render(request, RUN_PAGE, {
        **_run_context(run),
        "reward_models": list(run.reward_models.all()),
        "artifacts": list(run.artifacts.order_by("name")),
        "produced": sr.run_registered_models(run),
    })


@require_GET
@role_required(*STAFF)
def run_metrics(request: HttpRequest, run_id: int) -> JsonResponse:
    """Chart data: every metric as [step, value] pairs after ``?after_step=`` (all without)."""
    run = get_object_or_404(TrainingRun, pk=run_id)
    raw = request.GET.get("after_step", "")
    after = None
    if raw:
        if not raw.isdigit() or len(raw) > 12:
            return JsonResponse({"detail": "after_step is a step number.",
                                 "field": "after_step"}, status=400)
        after = int(raw)
    return JsonResponse(sr.run_chart_data(run=run, after_step=after))


@require_POST
@role_required(*STAFF)
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, pk=run_id)
    error = ""
    try:
        run_cancel_service(run=run)
    except ApplicationError as exc:
        error = exc.message
    if not request.htmx:
        if error:
            return HttpResponse(error, status=409, content_type="text/plain")
        return redirect("training-run", run.pk)
    # htmx swaps only 2xx, so a refused cancel is said inside the swapped status.
    return render(request, RUN_PAGE + "#run-status", _run_context(_run_or_404(run.pk),
                                                                   error=error))


@require_GET
@role_required(*STAFF)
def artifact_download(request: HttpRequest, run_id: int, artifact_id: int) -> FileResponse:
    """A run's file, only from inside ``GAPLAB_ARTIFACT_ROOT`` (``selectors.artifact_file``)."""
    artifact = get_object_or_404(RunArtifact, pk=artifact_id, run_id=run_id)
    path = sr.artifact_file(artifact=artifact)
    if path is None:
        raise Http404("This artifact's file is gone or outside the artifact folder.")
    return FileResponse(path.open("rb"), as_attachment=True, filename=Path(artifact.name).name)


@require_GET
@role_required(*STAFF)
def sweep_detail(request: HttpRequest, sweep_id: int) -> HttpResponse:
    """One line per child run; polls ``#sweep-table`` while any child is still going."""
    sweep = sr.sweep_get(sweep_id=sweep_id)
    if sweep is None:
        raise Http404("No such sweep.")
    rows = sr.sweep_rows(sweep=sweep)
    template = "training/sweep.html"
    if request.htmx:
        template += "#sweep-table"
    return render(request, template, {
        "sweep": sweep,
        "rows": rows,
        "keys": sorted(sweep.grid or {}),
        "active": any(not sr.run_is_terminal(r.run) for r in rows),
    })
