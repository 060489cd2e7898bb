"""Server-side charts of the gap (matplotlib, Agg): what the gap pages offer as downloads and
what ``manage.py gap_report`` puts inline.

A chart is data first (:class:`Chart`: panels and :class:`Series`), then rendered: SVG and PNG
from matplotlib, CSV from the same series, so the CSV holds exactly the plotted numbers (one row
per drawn point: panel, series, x with its interval, y with its interval). matplotlib is
imported inside the render functions: the web process pays for it only when it draws.

**Gold fit bands.** An experiment stores each gold fit's bootstrap band
(``fits[method]["gold_band"]``) and a fit on the low-d points only (d ≤ 0.6·d_max, ``gold_low``)
with its band over the whole range (``gold_low_band``): the extrapolation check of PREDICTIONS
P3, drawn dashed where it extrapolates, so the points beyond the split show whether they fall
inside. Results stored before those keys existed keep α, β but not the replicates; for them the
band is ``fits.gold_band`` of the stored centre with the covariance of a weighted least-squares
refit of the plotted gold points (SE = interval width / 2z; narrower than the bootstrap band,
since the points share their prompts), and the low-d fit a refit on d ≤ ``LOW_D_SHARE``·d_max.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from evaluation import selectors as sel

FORMATS = ("png", "svg", "csv")
CHART_NAMES = ("noise_vs_gap", "maps", "gap_curves", "murphy")
NEEDS_EXPERIMENT = frozenset({"gap_curves", "murphy"})
LOW_D_SHARE = 0.6
PALETTE = ("#3454d1", "#e07a1f", "#067647", "#b42318", "#7a2fb4", "#0e7090", "#667085",
           "#c11574", "#4e5ba6", "#b54708")
METHOD_COLORS = {"tilting": "#3454d1", "best_of_n": "#e07a1f", "dpo": "#067647"}
NOT_MEASURED = "not measured"


@dataclass
class Series:
    """One drawn thing: a line, points, a band, or points with error bars.

    ``kind``: "line" (y with a shaded lo-hi band when given), "dashed" (same, dashed),
    "points" (markers with error bars when lo/hi are given), "open" (hollow markers),
    "band" (only the shaded lo-hi band), "bars" (categorical x, markers with error bars).
    """

    label: str
    x: list[Any]
    y: list[float | None]
    y_lo: list[float | None] | None = None
    y_hi: list[float | None] | None = None
    x_lo: list[float | None] | None = None
    x_hi: list[float | None] | None = None
    kind: str = "line"
    panel: int = 0
    color_key: str = ""
    legend: bool = True
    name: str = ""  # the CSV's series name when the legend's label is shared
    names: list[str] | None = None  # per point, when one drawn series holds several (CSV)



@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    zero_line: bool = False


@dataclass
class Chart:
    name: str
    title: str
    panels: list[Panel]
    series: list[Series] = field(default_factory=list)
    ncols: int = 1
    note: str = ""

    def rows(self) -> list[list[Any]]:
        """The plotted numbers: one row per drawn point (a point with no x or y is not drawn)."""
        out = []
        for s in self.series:
            for i, (x, y) in enumerate(zip(s.x, s.y, strict=True)):
                lo = s.y_lo[i] if s.y_lo else None
                hi = s.y_hi[i] if s.y_hi else None
                if x is None or (y is None and (lo is None or hi is None)):
                    continue
                out.append([self.panels[s.panel].title,
                            s.names[i] if s.names else (s.name or s.label), x,
                            s.x_lo[i] if s.x_lo else None, s.x_hi[i] if s.x_hi else None,
                            y, lo, hi])
        return out

    @property
    def empty(self) -> bool:
        return not self.rows()

    def csv(self) -> bytes:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["panel", "series", "x", "x_lo", "x_hi", "y", "y_lo", "y_hi"])
        for row in self.rows():
            writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                             for v in row])
        return buf.getvalue().encode()

    def svg(self) -> bytes:
        return _render(self, "svg")

    def png(self) -> bytes:
        return _render(self, "png")

    def render(self, fmt: str) -> bytes:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        return getattr(self, fmt)()


# --- Rendering ------------------------------------------------------------------------------------


def _nan(values: Sequence[Any] | None, n: int) -> list[float]:
    if values is None:
        return [math.nan] * n
    return [math.nan if v is None else float(v) for v in values]


def _render(chart: Chart, fmt: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = max(len(chart.panels), 1)
    ncols = max(1, min(chart.ncols, n))
    nrows = math.ceil(n / ncols)
    with matplotlib.rc_context({"svg.hashsalt": f"gaplab-{chart.name}", "svg.fonttype": "none",
                                "font.size": 9, "axes.titlesize": 10}):
        # Fixed margins: a constrained or tight layout draws the figure several times over.
        width, height = 5.2 * ncols, 3.4 * nrows + 0.5
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(left=0.8 / width, right=1 - 0.25 / width, bottom=1.1 / height,
                            top=1 - 0.65 / height, wspace=0.3, hspace=0.5)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        colors: dict[str, str] = {}

        def color(key: str) -> str:
            if key in METHOD_COLORS and key not in colors:
                colors[key] = METHOD_COLORS[key]
            if key not in colors:
                used = set(colors.values())
                colors[key] = next((c for c in PALETTE if c not in used),
                                   PALETTE[len(colors) % len(PALETTE)])
            return colors[key]

        categories: dict[int, list[str]] = {}
        for s in chart.series:
            if s.kind == "bars":
                cats = categories.setdefault(s.panel, [])
                cats.extend(str(x) for x in s.x if x is not None and str(x) not in cats)
        seen_labels: set[tuple[int, str]] = set()
        for s in chart.series:
            ax = axes[s.panel]
            c = color(s.color_key or s.label)
            label = s.label if s.legend and (s.panel, s.label) not in seen_labels else None
            seen_labels.add((s.panel, s.label))
            n_pts = len(s.y)
            if s.kind == "bars":
                cats = categories[s.panel]
                xs = [cats.index(str(x)) if x is not None else math.nan for x in s.x]
            else:
                xs = _nan(s.x, n_pts)
            ys, lo, hi = _nan(s.y, n_pts), _nan(s.y_lo, n_pts), _nan(s.y_hi, n_pts)
            if s.kind in ("line", "dashed", "band"):
                if s.y_lo is not None and s.y_hi is not None:
                    ax.fill_between(xs, lo, hi, color=c, alpha=0.15 if s.kind != "band" else 0.2,
                                    linewidth=0, label=label if s.kind == "band" else None)
                if s.kind != "band":
                    ax.plot(xs, ys, color=c, linestyle="--" if s.kind == "dashed" else "-",
                            linewidth=1.6, marker="o" if n_pts <= 40 else None, markersize=2.5,
                            label=label)
            else:
                yerr = xerr = None
                if s.y_lo is not None and s.y_hi is not None:
                    yerr = [[max(y - a, 0) if not (math.isnan(y) or math.isnan(a)) else 0
                             for y, a in zip(ys, lo, strict=True)],
                            [max(b - y, 0) if not (math.isnan(y) or math.isnan(b)) else 0
                             for y, b in zip(ys, hi, strict=True)]]
                if s.x_lo is not None and s.x_hi is not None and any(
                        v is not None for v in s.x_lo):
                    xl, xh = _nan(s.x_lo, n_pts), _nan(s.x_hi, n_pts)
                    xerr = [[max(x - a, 0) if not (math.isnan(x) or math.isnan(a)) else 0
                             for x, a in zip(xs, xl, strict=True)],
                            [max(b - x, 0) if not (math.isnan(x) or math.isnan(b)) else 0
                             for x, b in zip(xs, xh, strict=True)]]
                ax.errorbar(xs, ys, yerr=yerr, xerr=xerr, color=c, capsize=3,
                            fmt="o" if s.kind != "open" else "o",
                            markerfacecolor="none" if s.kind == "open" else c,
                            linestyle="-" if s.kind == "points" and n_pts > 1 else "none",
                            linewidth=1.2, markersize=5, label=label)
        for i, ax in enumerate(axes):
            if i >= len(chart.panels):
                ax.set_visible(False)
                continue
            p = chart.panels[i]
            ax.set_title(p.title)
            ax.set_xlabel(p.xlabel)
            ax.set_ylabel(p.ylabel)
            ax.grid(True, linewidth=0.4, alpha=0.5)
            if i in categories:
                ax.set_xticks(range(len(categories[i])), categories[i], rotation=30, ha="right")
            if not ax.has_data():
                ax.text(0.5, 0.5, NOT_MEASURED, ha="center", va="center",
                        transform=ax.transAxes, color="#667085")
            elif ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")  # "best" searches: slow
            if p.zero_line:
                ax.axhline(0.0, color="#667085", linewidth=0.8, linestyle=":")
        fig.suptitle(chart.title, fontsize=11)
        buf = io.BytesIO()
        if fmt == "svg":
            fig.savefig(buf, format="svg", metadata={"Date": None})
        else:
            fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    return buf.getvalue()


# --- Builders ----------------------------------------------------------------------------


def noise_vs_gap(points: list[sel.NoisePoint], *, title: str = "") -> Chart:
    """Gap slope in d against measured ε, one line per (method, experiment, variant), coloured
    by method, with the slope's interval (and ε's, when stored); hollow markers at the same
    slope against the true ε of the arm's training rows."""
    chart = Chart(name="noise_vs_gap", title=title or "Noise vs gap growth",
                  panels=[Panel("gap slope vs label noise", "ε (measured; hollow: true)",
                                "gap slope in d (standardized)", zero_line=True)])
    groups: dict[tuple[str, int, str], list[sel.NoisePoint]] = {}
    for p in points:
        if p.plotted:
            groups.setdefault((p.method, p.experiment, p.variant), []).append(p)
    # One drawn series per method (runs of one experiment and variant split by a gap), so a
    # hundred experiments cost four matplotlib calls, not eight hundred; the CSV names each run.
    measured: dict[str, Series] = {}
    truth: dict[str, Series] = {}
    for (method, exp, variant), group in groups.items():
        group = sorted(group, key=lambda q: q.x)
        name = f"{method} #{exp}" + ("" if variant == sel.BASELINE else f" {variant}")
        line = measured.setdefault(method, Series(
            label=method, x=[], y=[], y_lo=[], y_hi=[], x_lo=[], x_hi=[], kind="points",
            color_key=method, names=[]))
        if line.x:
            for column in (line.x, line.y, line.y_lo, line.y_hi, line.x_lo, line.x_hi,
                           line.names):
                column.append(None)
        line.x += [p.x for p in group]
        line.y += [p.y for p in group]
        line.y_lo += [p.y_lo for p in group]
        line.y_hi += [p.y_hi for p in group]
        line.x_lo += [p.x_lo for p in group]
        line.x_hi += [p.x_hi for p in group]
        line.names += [name] * len(group)
        true_pts = [p for p in group if p.epsilon_true is not None]
        if true_pts:
            dots = truth.setdefault(method, Series(
                label=f"{method} at true ε", x=[], y=[], kind="open", color_key=method,
                names=[]))
            dots.x += [p.epsilon_true for p in true_pts]
            dots.y += [p.y for p in true_pts]
            dots.names += [f"{name} at true ε"] * len(true_pts)
    for method in measured:
        chart.series.append(measured[method])
        if method in truth:
            chart.series.append(truth[method])
    return chart


def maps_chart(rows: list[dict[str, Any]], *, title: str = "") -> Chart:
    """MAPS levers: change of the gap's slope and intercept against the baseline at the same ε,
    with intervals (error bars), one marker per (variant, ε) and colour per method."""
    chart = Chart(name="maps", title=title or "MAPS: change of the gap against the baseline",
                  panels=[Panel("slope change", "lever (variant, ε)", "Δ gap slope",
                                zero_line=True),
                          Panel("intercept change", "lever (variant, ε)", "Δ gap intercept",
                                zero_line=True)], ncols=2)
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    for method, items in by_method.items():
        for panel, key in ((0, "slope_change"), (1, "intercept_change")):
            xs, ys, lo, hi = [], [], [], []
            for r in items:
                est = r.get(key)
                if not est:
                    continue
                eps = r["epsilon_injected"]
                xs.append(f"#{r['experiment']} {r['variant']}"
                          + (f" ({r['lever']})" if r["lever"] else "")
                          + ("" if eps is None else f" ε={eps:g}"))
                ys.append(est["value"])
                lo.append(est["lo"])
                hi.append(est["hi"])
            if xs:
                chart.series.append(Series(label=method, x=xs, y=ys, y_lo=lo, y_hi=hi,
                                           kind="bars", panel=panel, color_key=method))
    return chart


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf((1 + level) / 2)


def _gold_fit_lines(item: sel.CurveItem, level: float) -> list[tuple[str, str, dict]]:
    """(label, kind, band dict) for the stored fit's line and band, and the low-d fit's."""
    import numpy as np

    from evaluation import fits

    d = sel.band(item.curve.get("d"))
    gold = sel.band(item.curve.get("true"))
    stored = item.fit_gold or {}
    alpha, beta = sel.estimate(stored.get("alpha")), sel.estimate(stored.get("beta"))
    form = stored.get("form") if stored.get("form") in fits.FORMS else "bon"
    if not d or not gold:
        return []
    pts = [(a, g, lo, hi) for a, g, lo, hi in zip(d["value"], gold["value"], gold["lo"],
                                                   gold["hi"], strict=False)
           if a is not None and g is not None and a > 0]
    if len(pts) < 3:
        return []
    dd = np.array([p[0] for p in pts])
    yy = np.array([p[1] for p in pts])
    widths = np.array([(p[3] - p[2]) if p[2] is not None and p[3] is not None else np.nan
                       for p in pts])
    se = widths / (2 * _z(level))
    floor = np.nanmedian(se) if np.isfinite(se).any() else 1.0
    se = np.where(np.isfinite(se) & (se > 0), se, max(float(floor) * 0.1, 1e-6))
    grid = np.linspace(0.0, float(dd.max()), 60)
    out = []

    def drawn(fit: Any, center: tuple[float, float] | None, label: str, kind: str) -> None:
        if center is not None:
            fit = replace(fit, alpha=fits.Estimate(center[0], 0, 0),
                          beta=fits.Estimate(center[1], 0, 0))
        b = fits.gold_band(fit=fit, d=grid)
        out.append((label, kind, {"d": b.d.tolist(), "value": b.value.tolist(),
                                  "lo": b.lo.tolist(), "hi": b.hi.tolist(),
                                  "extrapolated": b.extrapolated.tolist()}))

    stored = item.fit_extra.get("gold_band")
    if isinstance(stored, dict) and stored.get("d"):
        # The experiment stored the fit's bootstrap bands: draw them as they are.
        out.append((f"{item.label} gold fit", "line", stored))
        low_band = item.fit_extra.get("gold_low_band")
        low = item.fit_extra.get("gold_low") or {}
        if isinstance(low_band, dict) and low_band.get("d") and low.get("d_range"):
            out.append((f"{item.label} fit on d ≤ {float(low['d_range'][-1]):.2f} "
                        "(extrapolated)", "dashed", low_band))
        return out
    try:
        refit = fits.gold_fit(d=dd, gold=yy, form=form, se=se, level=level)
    except (ValueError, np.linalg.LinAlgError):
        return []
    center = (alpha["value"], beta["value"]) if alpha and beta else None
    drawn(refit, center, f"{item.label} gold fit", "line")
    low = item.fit_extra.get("gold_low")
    split = None
    if isinstance(low, dict) and isinstance(low.get("d_range"), list):
        split = sel.num(low["d_range"][-1])
    if split is None:
        split = LOW_D_SHARE * float(dd.max())
    if (dd <= split).sum() >= 3 and (dd > split).any():
        try:
            low_fit = fits.gold_fit(d=dd, gold=yy, form=form, se=se, d_max=split, level=level)
        except (ValueError, np.linalg.LinAlgError):
            return out
        drawn(low_fit, None, f"{item.label} fit on d ≤ {split:.2f} (extrapolated)", "dashed")
    return out


def gap_curves(experiment: Any, *, index: int | None = None) -> Chart:
    """Per method: gold with its fit, band and low-d extrapolation; the gap; the proxy; each
    against d = √KL, one colour per (variant, ε) entry (first seed). ``index``: one entry;
    without it the baseline's ε entries (all entries when there is no baseline)."""
    items = sel.experiment_curves(experiment)
    if index is not None:
        items = [i for i in items if i.index == index]
    elif any(i.variant == sel.BASELINE for i in items):
        items = [i for i in items if i.variant == sel.BASELINE]
    methods = list(dict.fromkeys(i.method for i in items)) or ["tilting"]
    chart = Chart(name="gap_curves", title=f"Gap curves: {experiment}", panels=[], ncols=3)
    for method in methods:
        chart.panels += [Panel(f"{method}: gold r* (fit, band)", "d = √KL", "gold (std.)",
                               zero_line=True),
                         Panel(f"{method}: gap r̂ − r*", "d = √KL", "gap (std.)", zero_line=True),
                         Panel(f"{method}: proxy r̂", "d = √KL", "proxy (std.)")]
    for item in items:
        base = methods.index(item.method) * 3
        d = sel.band(item.curve["d"])["value"]
        level = sel.num(item.curve.get("level")) or 0.9
        for offset, key in ((0, "true"), (1, "gap"), (2, "proxy")):
            b = sel.band(item.curve.get(key))
            if b:
                chart.series.append(Series(label=item.label, x=d, y=b["value"], y_lo=b["lo"],
                                           y_hi=b["hi"], kind="line", panel=base + offset,
                                           color_key=item.label))
        for label, kind, fb in _gold_fit_lines(item, level):
            color = item.label if kind == "line" else item.label + " low"
            if kind == "dashed":
                chart.series.append(Series(label=label, x=fb["d"], y=fb["value"], y_lo=fb["lo"],
                                           y_hi=fb["hi"], kind="dashed", panel=base,
                                           color_key=color))
            else:
                chart.series.append(Series(label=label, x=fb["d"], y=fb["value"], y_lo=fb["lo"],
                                           y_hi=fb["hi"], kind="band", panel=base,
                                           color_key=color))
    return chart


def murphy(experiment: Any) -> Chart:
    """Murphy probes: features of the optimized policy against d (length, padding, agreement
    with a wrong belief), the drift variants' gaps, and the gap in-distribution vs held-out."""
    data = sel.murphy_data(sel.experiment_curves(experiment))
    names = [f for f in ("length", "padding", "agrees_with_user") if f in data["features"]]
    names += [f for f in data["features"] if f not in names and f != "correct"]
    titles = {"length": ("reward hacking: length", "chars / 100"),
              "padding": ("reward hacking: padding", "words beyond concise"),
              "agrees_with_user": ("sycophancy: agrees with a wrong belief", "share")}
    chart = Chart(name="murphy", title=f"Murphy probes: {experiment}", panels=[], ncols=3)
    for name in names or ["length", "padding", "agrees_with_user"]:
        title, unit = titles.get(name, (name, name))
        chart.panels.append(Panel(title, "d = √KL", unit))
        for f in data["features"].get(name, []):
            b = f["band"]
            chart.series.append(Series(label=f"{f['label']} {f['method']}", x=f["d"],
                                       y=b["value"], y_lo=b["lo"], y_hi=b["hi"],
                                       panel=len(chart.panels) - 1,
                                       color_key=f"{f['label']} {f['method']}"))
    chart.panels.append(Panel("annotator drift: early vs late labels", "d = √KL", "gap (std.)",
                              zero_line=True))
    for f in data["drift"]:
        b = f["band"]
        chart.series.append(Series(label=f"{f['label']} {f['method']}", x=f["d"], y=b["value"],
                                   y_lo=b["lo"], y_hi=b["hi"], panel=len(chart.panels) - 1,
                                   color_key=f"{f['variant']} {f['method']}"))
    chart.panels.append(Panel("alignment mirage: in-distribution vs held-out", "d = √KL",
                              "gap (std.)", zero_line=True))
    for f in data["mirage"]:
        b = f["band"]
        chart.series.append(Series(
            label=f"{f['label']} {f['method']} {f['split'].replace('_', '-')}", x=f["d"],
            y=b["value"], y_lo=b["lo"], y_hi=b["hi"], panel=len(chart.panels) - 1,
            kind="dashed" if f["split"] == "held_out" else "line",
            color_key=f"{f['label']} {f['method']}"))
    return chart


def chart_for(name: str, *, experiment: Any = None, index: int | None = None) -> Chart:
    """The named chart; ``experiment`` (a full row) restricts the home charts to one and is
    required by ``NEEDS_EXPERIMENT``. Raises KeyError for an unknown name."""
    if name not in CHART_NAMES:
        raise KeyError(name)
    if name in NEEDS_EXPERIMENT and experiment is None:
        raise ValueError(f"the {name} chart needs an experiment")
    if name == "gap_curves":
        return gap_curves(experiment, index=index)
    if name == "murphy":
        return murphy(experiment)
    rows = sel.experiment_rows(experiment_id=experiment.pk if experiment is not None else None)
    if name == "noise_vs_gap":
        return noise_vs_gap(sel.noise_points(rows))
    return maps_chart(sel.maps_rows(rows) if experiment is None
                      else sel.experiment_maps(experiment))
