"""Gap pages (DESIGN section 7, issue 9): the researchers' home (noise vs gap, experiments,
MAPS), one experiment's page (noise coordinates, per-arm headline, curves with fits, Murphy
panels, trilemma) and chart downloads (PNG, SVG, CSV of exactly the plotted numbers).

Thin function views over ``evaluation.selectors`` (reads) and ``evaluation.charts`` (drawing).
The home reads only small columns (never an experiment's ``result``) and aggregates no
judgments, so it stays fast with many experiments; the experiment page's curves are images
drawn on request by the chart endpoint. Researchers and admins only; anonymous users go to the
login page, other roles get 403.
"""

from __future__ import annotations

from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from annotation.permissions import role_required
from annotation.services import Role
from evaluation import selectors as sel

STAFF = (Role.ADMIN, Role.RESEARCHER)
CHART_CACHE_SECONDS = 24 * 3600
HOME_EXPERIMENTS = 100  # newest first: the list and the noise-vs-gap chart
HOME_MAPS_EXPERIMENTS = 5  # newest experiments with levers in the home's MAPS table
CONTENT_TYPES = {"png": "image/png", "svg": "image/svg+xml", "csv": "text/csv; charset=utf-8"}


def _int_param(request: HttpRequest, name: str) -> int | None:
    """A non-negative integer query parameter, None when absent; 404 when malformed (a chart of
    a thing that cannot exist)."""
    raw = request.GET.get(name, "")
    if raw == "":
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise Http404(f"{name} must be an id (a whole number).")
    return int(raw)


@require_GET
@role_required(*STAFF)
def gap_home(request: HttpRequest) -> HttpResponse:
    rows = sel.experiment_rows(limit=HOME_EXPERIMENTS)
    points = sel.noise_points(rows)
    levers = [r for r in rows if sel.has_levers(r)]
    return render(request, "evaluation/home.html", {
        "experiments": rows,
        "chart_data": sel.noise_chart_data(points),
        "maps": sel.maps_rows(levers[:HOME_MAPS_EXPERIMENTS]),
        "maps_experiments": HOME_MAPS_EXPERIMENTS,
        "maps_more": max(len(levers) - HOME_MAPS_EXPERIMENTS, 0),
        # One reverse for the list's links, not one per row.
        "experiment_prefix": reverse("evaluation:experiment", args=[0]).removesuffix("0/"),
        "policies": sel.policy_points(limit=20),
    })


@require_GET
@role_required(*STAFF)
def experiment_detail(request: HttpRequest, experiment_id: int) -> HttpResponse:
    """The experiment page; an htmx poll (while it runs) gets only ``#experiment-status``,
    read without the result, and once the experiment has ended an ``HX-Refresh`` that reloads
    the page with its result."""
    if request.htmx:
        experiment = sel.experiment_status_get(experiment_id=experiment_id)
        if experiment is None:
            raise Http404("No such experiment.")
        terminal = experiment.status in experiment.TERMINAL
        response = render(request, "evaluation/experiment.html#experiment-status",
                          {"experiment": experiment, "terminal": terminal})
        if terminal:
            response["HX-Refresh"] = "true"
        return response
    experiment = sel.experiment_get(experiment_id=experiment_id)
    if experiment is None:
        raise Http404("No such experiment.")
    items = sel.experiment_curves(experiment)
    summaries = sel.experiment_summaries(experiment)
    murphy = sel.murphy_data(items)
    return render(request, "evaluation/experiment.html", {
        "experiment": experiment,
        "terminal": experiment.status in experiment.TERMINAL,
        "summaries": summaries,
        "arms": sel.experiment_arms(experiment),
        "maps": sel.experiment_maps(experiment),
        "trilemma": sel.trilemma_rows(items),
        "murphy_measured": {k: bool(v) for k, v in murphy.items()},
        "fits": [{"label": i.label, "method": i.method, "seed": i.seed,
                  "gold": i.fit_gold or {}, "gap": i.fit_gap or {}} for i in items],
        "entry_indices": sorted({i.index for i in items}),
        "methods": list(dict.fromkeys(i.method for i in items)),
    })


def _chart_bytes(name: str, fmt: str, experiment, index: int | None) -> bytes:
    """Draw a chart; one of an ended experiment's own charts is cached (its result no longer
    changes, and matplotlib takes a second or more for a many-panel figure)."""
    from evaluation import charts

    key = None
    if experiment is not None and name in charts.NEEDS_EXPERIMENT and (
            experiment.status in experiment.TERMINAL):
        stamp = experiment.finished_at.timestamp() if experiment.finished_at else 0
        key = f"gap-chart:{experiment.pk}:{stamp}:{name}:{index}:{fmt}"
        hit = cache.get(key)
        if hit is not None:
            return hit
    data = charts.chart_for(name, experiment=experiment, index=index).render(fmt)
    if key is not None:
        cache.set(key, data, CHART_CACHE_SECONDS)
    return data


@require_GET
@role_required(*STAFF)
def chart(request: HttpRequest, name: str, fmt: str) -> HttpResponse:
    """``/gap/charts/<name>.<fmt>?experiment=ID[&arm=INDEX]``: unknown name or format, a
    malformed or unknown experiment, or a chart that needs an experiment without one: 404."""
    from evaluation import charts

    if name not in charts.CHART_NAMES or fmt not in charts.FORMATS:
        raise Http404("No such chart or format.")
    experiment_id = _int_param(request, "experiment")
    index = _int_param(request, "arm")
    experiment = None
    if experiment_id is not None:
        experiment = sel.experiment_get(experiment_id=experiment_id)
        if experiment is None:
            raise Http404("No such experiment.")
    elif name in charts.NEEDS_EXPERIMENT:
        raise Http404(f"The {name} chart needs ?experiment=ID.")
    if index is not None and (experiment is None or index >= len(sel.entries(experiment))):
        raise Http404("No such arm.")
    response = HttpResponse(_chart_bytes(name, fmt, experiment, index),
                            content_type=CONTENT_TYPES[fmt])
    stem = name + (f"-experiment{experiment.pk}" if experiment else "") + (
        f"-arm{index}" if index is not None else "")
    if fmt != "png" or request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="{stem}.{fmt}"'
    return response
