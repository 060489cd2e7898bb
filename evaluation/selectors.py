"""Reads of experiments for the gap pages, the chart downloads and ``manage.py gap_report``.

What an experiment stores is the issue 9 result contract (``evaluation.experiments``):
``Experiment.result`` is one ``ExperimentResult.as_dict()`` per (variant, ε), and
``Experiment.headline["arms"]`` one ``result_headline`` per entry. Every read here tolerates a
missing key: what an older (or still running) experiment did not measure comes back as None,
and the templates say "not measured".

**Lean home page.** ``Experiment.result`` can be megabytes (every curve of every seed), so the
list, the noise-vs-gap points and the MAPS table read only the small columns (``values()``:
name, status, progress, stage, epsilons, headline), never ``result``. The MAPS numbers
(``summary["maps"]``) are read from ``headline["arms"][i]["maps"]`` when the headline carries
them; for a non-baseline arm whose headline lacks them, only that JSON path is fetched
(``values("result__<i>__summary__maps")``, extracted by PostgreSQL), one small query per such
experiment, and never for a headline that names no variant (such an experiment is all
baseline, which has no MAPS). Nothing here aggregates judgments.

State changes live in ``evaluation.experiment_jobs``; nothing here writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from annotation.models import JobStatus
from evaluation.models import Experiment

METHOD_ORDER = ("tilting", "best_of_n", "dpo")
FEATURES = ("length", "padding", "agrees_with_user", "correct")
DRIFT_VARIANTS = ("drift_early", "drift_late")
BASELINE = "baseline"
LIST_FIELDS = ("pk", "name", "status", "progress", "stage", "created_at", "finished_at",
               "epsilons", "headline")


# --- Small readers of stored JSON ---------------------------------------------------------------


def num(value: Any) -> float | None:
    """A finite number, or None (stored JSON writes non-finite floats as null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def estimate(value: Any) -> dict[str, float | None] | None:
    """A ``{value, lo, hi}`` estimate with numbers or None; None when there is no value."""
    if not isinstance(value, dict) or num(value.get("value")) is None:
        return None
    return {"value": num(value["value"]), "lo": num(value.get("lo")), "hi": num(value.get("hi"))}


def band(value: Any) -> dict[str, list[float | None]] | None:
    """A Band dict ``{value, lo, hi}`` as lists of numbers or None (lo/hi default to value)."""
    if not isinstance(value, dict) or not isinstance(value.get("value"), list):
        return None
    vals = [num(v) for v in value["value"]]
    out = {"value": vals}
    for key in ("lo", "hi"):
        side = value.get(key)
        out[key] = ([num(v) for v in side] if isinstance(side, list) and len(side) == len(vals)
                    else list(vals))
    return out


def methods_of(mapping: Any) -> list[str]:
    """Pressure methods among a mapping's keys: the known ones in order, then any other."""
    if not isinstance(mapping, dict):
        return []
    known = [m for m in METHOD_ORDER if isinstance(mapping.get(m), dict)]
    other = sorted(k for k, v in mapping.items()
                   if k not in METHOD_ORDER and isinstance(v, dict)
                   and ("gap_slope" in v or "gap" in v or "d" in v))
    return known + other


# --- The list and the home page -------------------------------------------------------------------


def experiment_rows(*, limit: int = 200, experiment_id: int | None = None
                    ) -> list[dict[str, Any]]:
    """Experiments newest first (or the one ``experiment_id``) as dicts of the small columns
    (never ``result``)."""
    qs = Experiment.objects.order_by("-created_at", "-pk")
    if experiment_id is not None:
        qs = qs.filter(pk=experiment_id)
    rows = list(qs.values(*LIST_FIELDS)[:limit])
    for row in rows:
        headline = row["headline"] if isinstance(row["headline"], dict) else {}
        arms = [a for a in headline.get("arms") or [] if isinstance(a, dict)]
        row["arms"] = arms
        row["n_arms"] = len(arms) or len(row["epsilons"] or [])
        row["variants"] = sorted({a.get("variant") or BASELINE for a in arms})
        row["seconds"] = num(headline.get("seconds"))
        row["terminal"] = row["status"] in Experiment.TERMINAL
        # Texts for the list (a template filter per cell costs more than the query).
        row["progress_text"] = f"{row['progress'] or 0:.3f}"
        row["seconds_text"] = "—" if row["seconds"] is None else f"{row['seconds']:.0f}"
        row["created_text"] = row["created_at"].strftime("%Y-%m-%d %H:%M")
    return rows


@dataclass(frozen=True)
class NoisePoint:
    """One point of the noise-vs-gap chart: (experiment, variant, ε arm, pressure method)."""

    experiment: int
    experiment_name: str
    variant: str
    lever: str
    method: str
    epsilon_injected: float | None
    x: float | None  # measured ε (the quality layer's, composed with the injection)
    x_lo: float | None
    x_hi: float | None
    epsilon_true: float | None  # the share of the arm's training rows that are wrong
    y: float | None  # gap slope in d (median over seeds)
    y_lo: float | None
    y_hi: float | None

    @property
    def plotted(self) -> bool:
        return self.x is not None and self.y is not None


def noise_points(rows: list[dict[str, Any]]) -> list[NoisePoint]:
    """Every (experiment, variant, ε, method) of ``experiment_rows`` with its noise coordinates
    and gap slope, read from the headline (``result_headline``: ``epsilon_measured``,
    ``epsilon_true``, ``<method>.gap_slope``; ``epsilon_measured_lo/hi`` when stored)."""
    points = []
    for row in rows:
        for arm in row["arms"]:
            for method in methods_of(arm):
                slope = estimate(arm[method].get("gap_slope")) or {}
                points.append(NoisePoint(
                    experiment=row["pk"], experiment_name=row["name"] or f"#{row['pk']}",
                    variant=arm.get("variant") or BASELINE, lever=arm.get("lever") or "",
                    method=method, epsilon_injected=num(arm.get("epsilon_injected")),
                    x=num(arm.get("epsilon_measured")), x_lo=num(arm.get("epsilon_measured_lo")),
                    x_hi=num(arm.get("epsilon_measured_hi")),
                    epsilon_true=num(arm.get("epsilon_true")),
                    y=slope.get("value"), y_lo=slope.get("lo"), y_hi=slope.get("hi")))
    return points


def _short(value: float | None) -> float | None:
    """5 significant digits: the page's chart data stays small (the CSV download has 6)."""
    return None if value is None else float(f"{value:.5g}")


def noise_chart_data(points: list[NoisePoint]) -> dict[str, Any]:
    """The home chart's JSON (``json_script``): one dataset per method; within it each
    (experiment, variant) is a run of points in ε order, runs separated by a null point. Numbers
    have 5 significant digits and absent keys are left out."""
    series: dict[str, list[dict[str, Any]]] = {}
    groups: dict[tuple[str, int, str], list[NoisePoint]] = {}
    for p in points:
        if p.plotted:
            groups.setdefault((p.method, p.experiment, p.variant), []).append(p)
    for (method, _exp, _variant), group in groups.items():
        data = series.setdefault(method, [])
        if data:
            data.append({"x": None, "y": None})
        for p in sorted(group, key=lambda q: q.x):
            point = {"x": _short(p.x), "y": _short(p.y), "lo": _short(p.y_lo),
                     "hi": _short(p.y_hi), "xlo": _short(p.x_lo), "xhi": _short(p.x_hi),
                     "eps_true": _short(p.epsilon_true), "exp": p.experiment,
                     "variant": p.variant}
            data.append({k: v for k, v in point.items() if v is not None})
    order = [m for m in METHOD_ORDER if m in series] + sorted(set(series) - set(METHOD_ORDER))
    return {"datasets": [{"method": m, "points": series[m]} for m in order],
            "n_points": sum(1 for p in points if p.plotted)}


def _maps_of(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        return {}
    out = {}
    for method, item in value.items():
        if isinstance(item, dict):
            out[method] = {"slope_change": estimate(item.get("slope_change")),
                           "intercept_change": estimate(item.get("intercept_change"))}
    return out


def _headline_maps(arm: dict[str, Any]) -> dict[str, Any] | None:
    """A headline arm's MAPS changes: ``<method>.slope_change/intercept_change`` (what
    ``result_headline`` writes for a variant), or a ``maps`` dict; None when it has neither."""
    if isinstance(arm.get("maps"), dict):
        return arm["maps"]
    found = {m: arm[m] for m in methods_of(arm)
             if "slope_change" in arm[m] or "intercept_change" in arm[m]}
    return found or None


def _maps_fetch(rows: list[dict[str, Any]]) -> dict[tuple[int, int], Any]:
    """``summary["maps"]`` of the non-baseline arms whose headline does not carry their
    changes, read as JSON paths (``result -> i -> summary -> maps``) in one query for all
    experiments: PostgreSQL extracts them, the result itself is not sent."""
    missing = {(row["pk"], i) for row in rows for i, a in enumerate(row["arms"])
               if (a.get("variant") or BASELINE) != BASELINE and _headline_maps(a) is None}
    if not missing:
        return {}
    paths = {i: f"result__{i}__summary__maps" for i in sorted({i for _pk, i in missing})}
    found = Experiment.objects.filter(pk__in={pk for pk, _i in missing}).values(
        "pk", *paths.values())
    return {(r["pk"], i): r[path] for r in found for i, path in paths.items()
            if (r["pk"], i) in missing}


def _texts(*estimates: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(value, "[lo, hi]") texts of estimates, ("", "") for one not measured: formatted here,
    not by a template filter per cell, so a long table renders fast."""
    out = []
    for est in estimates:
        if not est:
            out.append(("", ""))
            continue
        interval = (f"[{est['lo']:.3f}, {est['hi']:.3f}]"
                    if est.get("lo") is not None and est.get("hi") is not None else "")
        out.append((f"{est['value']:.3f}", interval))
    return out


def has_levers(row: dict[str, Any]) -> bool:
    """Whether an ``experiment_rows`` row has a non-baseline (MAPS) arm."""
    return any((a.get("variant") or BASELINE) != BASELINE for a in row["arms"])


def maps_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (experiment, non-baseline variant, ε, method): the change of the gap's slope
    and intercept against the baseline at the same ε (``summary["maps"]``), or None."""
    out = []
    fetched = _maps_fetch(rows)
    for row in rows:
        for i, arm in enumerate(row["arms"]):
            variant = arm.get("variant") or BASELINE
            if variant == BASELINE:
                continue
            maps = _maps_of(_headline_maps(arm) or fetched.get((row["pk"], i)))
            for method in methods_of(arm) or sorted(maps):
                item = maps.get(method, {})
                eps = num(arm.get("epsilon_injected"))
                out.append({"experiment": row["pk"], "experiment_name": row["name"],
                            "variant": variant, "lever": arm.get("lever") or "",
                            "epsilon_injected": eps,
                            "epsilon_text": "not measured" if eps is None else f"{eps:g}",
                            "method": method, "slope_change": item.get("slope_change"),
                            "intercept_change": item.get("intercept_change"),
                            "changes": _texts(item.get("slope_change"),
                                              item.get("intercept_change"))})
    return out


def policy_points(*, limit: int = 50) -> list[dict[str, Any]]:
    """Trained policies with a measured KL: points on a gap curve (d = √KL, raw r̂ and r*).

    Reads only the three result keys (PostgreSQL extracts them), never the whole result.
    """
    from training.methods.base import RESULT_KL, RESULT_REWARD_PROXY, RESULT_REWARD_TRUE
    from training.models import TrainingRun

    rows = (TrainingRun.objects.filter(status=JobStatus.SUCCEEDED, result__has_key=RESULT_KL)
            .order_by("-finished_at", "-pk")
            .values("pk", "name", "method", f"result__{RESULT_KL}",
                    f"result__{RESULT_REWARD_PROXY}", f"result__{RESULT_REWARD_TRUE}")[:limit])
    out = []
    for r in rows:
        kl = num(r[f"result__{RESULT_KL}"])
        out.append({"run": r["pk"], "name": r["name"] or f"run #{r['pk']}", "method": r["method"],
                    "kl": kl, "d": math.sqrt(kl) if kl is not None and kl >= 0 else None,
                    "proxy": num(r[f"result__{RESULT_REWARD_PROXY}"]),
                    "true": num(r[f"result__{RESULT_REWARD_TRUE}"])})
    return out


# --- One experiment -------------------------------------------------------------------------------


def experiment_get(*, experiment_id: int) -> Experiment | None:
    """One experiment with everything (its result included)."""
    return Experiment.objects.select_related("requested_by").filter(pk=experiment_id).first()


def experiment_status_get(*, experiment_id: int) -> Experiment | None:
    """One experiment without its result (what a progress poll shows)."""
    return (Experiment.objects.select_related("requested_by").defer("result")
            .filter(pk=experiment_id).first())


def entries(experiment: Experiment) -> list[dict[str, Any]]:
    """The stored result entries (one per (variant, ε)) that are dicts."""
    result = experiment.result if isinstance(experiment.result, list) else []
    return [r for r in result if isinstance(r, dict)]


def entry_label(entry: dict[str, Any]) -> str:
    variant = entry.get("variant") or BASELINE
    eps = num(entry.get("epsilon_injected"))
    eps_text = "ε ?" if eps is None else f"ε={eps:g}"
    return eps_text if variant == BASELINE else f"{variant} {eps_text}"


def _arms(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in entry.get("arms") or [] if isinstance(a, dict)]


def experiment_arms(experiment: Experiment) -> list[dict[str, Any]]:
    """One row per (variant, ε, seed): noise coordinates, reward model, per-method headline."""
    rows = []
    for index, entry in enumerate(entries(experiment)):
        for arm in _arms(entry):
            eps = arm.get("epsilon") if isinstance(arm.get("epsilon"), dict) else {}
            rm = arm.get("reward_model") if isinstance(arm.get("reward_model"), dict) else {}
            head = arm.get("headline") if isinstance(arm.get("headline"), dict) else {}
            methods = []
            for method in methods_of(head):
                h = head[method]
                peak = h.get("peak")
                methods.append({
                    "method": method, "gap_slope": estimate(h.get("gap_slope")),
                    "gap_intercept": estimate(h.get("gap_intercept")),
                    "peak": estimate(peak) if isinstance(peak, dict) else None,
                    "peak_text": peak if isinstance(peak, str) else "",
                    "d_star": num(h.get("d_star")), "d_max": num(h.get("d_max")),
                    "gold_at_max": num(h.get("gold_at_max")),
                    "proxy_at_max": num(h.get("proxy_at_max"))})
            rows.append({
                "index": index, "label": entry_label(entry),
                "variant": entry.get("variant") or BASELINE, "lever": entry.get("lever") or "",
                "seed": arm.get("seed"),
                "epsilon": {k: num(eps.get(k)) for k in ("injected", "measured",
                                                         "measured_campaign", "true",
                                                         "true_campaign")},
                "clean_accuracy": num(rm.get("clean_accuracy")),
                "eval_accuracy": num(rm.get("eval_accuracy")),
                "corr_proxy_true": num(rm.get("corr_proxy_true")),
                "probes": {k: num(v) for k, v in (arm.get("probes") or {}).items()
                           if isinstance(k, str) and k.startswith("corr_proxy_")},
                "methods": methods})
    return rows


def experiment_summaries(experiment: Experiment) -> list[dict[str, Any]]:
    """One row per entry: noise coordinates and per-method seed-median gap slope."""
    out = []
    for index, entry in enumerate(entries(experiment)):
        s = entry.get("summary") if isinstance(entry.get("summary"), dict) else {}
        methods = []
        for method in methods_of(s):
            m = s[method]
            methods.append({"method": method,
                            "gap_slope": estimate({"value": m.get("gap_slope_median"),
                                                   "lo": m.get("gap_slope_lo"),
                                                   "hi": m.get("gap_slope_hi")}),
                            "n_seeds": m.get("n_seeds"),
                            "peaks_reported": m.get("peaks_reported")})
        out.append({"index": index, "label": entry_label(entry),
                    "variant": entry.get("variant") or BASELINE, "lever": entry.get("lever") or "",
                    "epsilon_injected": num(entry.get("epsilon_injected")),
                    "epsilon_measured": num(s.get("epsilon_measured")),
                    "epsilon_true": num(s.get("epsilon_true")),
                    "rm_clean_accuracy": num(s.get("rm_clean_accuracy")),
                    "maps": _maps_of(s.get("maps")), "methods": methods,
                    "seconds": num(entry.get("seconds"))})
    return out


def experiment_maps(experiment: Experiment) -> list[dict[str, Any]]:
    """MAPS rows of one experiment, from its result (the full row is loaded anyway)."""
    rows = []
    for s in experiment_summaries(experiment):
        if s["variant"] == BASELINE:
            continue
        for method in [m["method"] for m in s["methods"]] or sorted(s["maps"]):
            item = s["maps"].get(method, {})
            eps = s["epsilon_injected"]
            rows.append({"experiment": experiment.pk, "experiment_name": experiment.name,
                         "variant": s["variant"], "lever": s["lever"],
                         "epsilon_injected": eps, "method": method,
                         "epsilon_text": "not measured" if eps is None else f"{eps:g}",
                         "slope_change": item.get("slope_change"),
                         "intercept_change": item.get("intercept_change"),
                         "changes": _texts(item.get("slope_change"),
                                           item.get("intercept_change"))})
    return rows


@dataclass(frozen=True)
class CurveItem:
    """One stored gap curve: the entry it belongs to, its seed, method, curve and fits."""

    index: int
    label: str
    variant: str
    lever: str
    seed: Any
    method: str
    curve: dict[str, Any]
    fit_gold: dict[str, Any] | None
    fit_gap: dict[str, Any] | None
    splits: dict[str, Any] | None
    fit_extra: dict[str, Any]  # the whole fits[method] (e.g. a low-d "gold_low" fit, if stored)


def experiment_curves(experiment: Experiment, *, first_seed_only: bool = True
                      ) -> list[CurveItem]:
    """Every stored curve with its fits; by default the first seed's arm of each entry (the
    seeds' spread is in the summary's interval)."""
    items = []
    for index, entry in enumerate(entries(experiment)):
        arms = _arms(entry)
        for arm in arms[:1] if first_seed_only else arms:
            curves = arm.get("curves") if isinstance(arm.get("curves"), dict) else {}
            fits = arm.get("fits") if isinstance(arm.get("fits"), dict) else {}
            splits = arm.get("splits") if isinstance(arm.get("splits"), dict) else {}
            for method in methods_of(curves):
                curve = curves[method]
                if band(curve.get("d")) is None:
                    continue
                fit = fits.get(method) if isinstance(fits.get(method), dict) else {}
                items.append(CurveItem(
                    index=index, label=entry_label(entry),
                    variant=entry.get("variant") or BASELINE, lever=entry.get("lever") or "",
                    seed=arm.get("seed"),
                    method=method, curve=curve,
                    fit_gold=fit.get("gold") if isinstance(fit.get("gold"), dict) else None,
                    fit_gap=fit.get("gap") if isinstance(fit.get("gap"), dict) else None,
                    splits=splits.get(method) if isinstance(splits.get(method), dict) else None,
                    fit_extra=fit))
    return items


def _at_max_d(d: list[float | None], y: list[float | None]) -> float | None:
    pairs = [(a, b) for a, b in zip(d, y, strict=False) if a is not None and b is not None]
    return max(pairs)[1] if pairs else None


def trilemma_rows(items: list[CurveItem]) -> list[dict[str, Any]]:
    """Per (entry, method): pressure = the largest d reached, value capture = the largest
    standardized gold gain over π₀, generalization = held-out gold minus in-distribution gold
    at the largest d (None without a held-out split)."""
    rows = []
    for item in items:
        d = band(item.curve.get("d"))
        gold = band(item.curve.get("true"))
        ds = [v for v in (d or {}).get("value", []) if v is not None]
        golds = [v for v in (gold or {}).get("value", []) if v is not None]
        general = None
        if item.splits:
            ins, held = item.splits.get("in_distribution"), item.splits.get("held_out")
            if isinstance(ins, dict) and isinstance(held, dict):
                gi = _at_max_d((band(ins.get("d")) or {}).get("value", []),
                               (band(ins.get("true")) or {}).get("value", []))
                gh = _at_max_d((band(held.get("d")) or {}).get("value", []),
                               (band(held.get("true")) or {}).get("value", []))
                if gi is not None and gh is not None:
                    general = gh - gi
        rows.append({"index": item.index, "label": item.label, "variant": item.variant,
                     "seed": item.seed, "method": item.method,
                     "pressure": max(ds) if ds else None,
                     "value_capture": max(golds) if golds else None,
                     "generalization": general})
    return rows


def murphy_data(items: list[CurveItem]) -> dict[str, Any]:
    """What the Murphy panels plot, each part empty when not measured:

    ``features``: per feature name, (label, method, d, band) of every curve that has it;
    ``drift``: gap curves of the drift variants (lever "drift", or named drift_early/late);
    ``mirage``: per curve with splits, the in-distribution and held-out gap against d.
    """
    features: dict[str, list[dict[str, Any]]] = {}
    drift, mirage = [], []
    for item in items:
        d = band(item.curve.get("d"))
        feats = item.curve.get("features")
        if d and isinstance(feats, dict):
            for name in [f for f in FEATURES if f in feats] + sorted(set(feats) - set(FEATURES)):
                b = band(feats[name])
                if b:
                    features.setdefault(name, []).append(
                        {"label": item.label, "method": item.method, "d": d["value"], "band": b})
        if (item.variant in DRIFT_VARIANTS or item.lever == "drift") and d:
            g = band(item.curve.get("gap"))
            if g:
                drift.append({"label": item.label, "variant": item.variant,
                              "method": item.method, "d": d["value"], "band": g})
        if item.splits:
            for split in ("in_distribution", "held_out"):
                part = item.splits.get(split)
                if not isinstance(part, dict):
                    continue
                sd, sg = band(part.get("d")), band(part.get("gap"))
                if sd and sg:
                    mirage.append({"label": item.label, "method": item.method, "split": split,
                                   "d": sd["value"], "band": sg})
    return {"features": features, "drift": drift, "mirage": mirage}


def experiment_list(*, status: str = "") -> QuerySet[Experiment]:
    """Experiments newest first without their result column (``defer``)."""
    qs = Experiment.objects.defer("result").order_by("-created_at", "-pk")
    return qs.filter(status=status) if status else qs
