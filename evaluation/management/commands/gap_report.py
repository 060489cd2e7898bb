"""Write one experiment's gap report as a single self-contained HTML file."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import mark_safe

from evaluation import selectors as sel

# Inline SVG in HTML needs no XML prolog, DOCTYPE, metadata or namespace declarations (the HTML
# parser puts <svg> in the SVG namespace); dropping them leaves no URL of any kind in the file.
_PROLOG = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<metadata>.*?</metadata>", re.S)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


def inline_svg(svg: bytes) -> str:
    """matplotlib's SVG made fit to sit inside an HTML page."""
    return _XMLNS.sub("", _PROLOG.sub("", svg.decode())).strip()


def report_html(experiment) -> str:
    """The report of one (full) experiment row: spec, noise coordinates, headline, curves with
    fits, MAPS, Murphy panels and trilemma; charts inline as SVG, style inline, no script."""
    from evaluation import charts

    items = sel.experiment_curves(experiment)
    rows = sel.experiment_rows(experiment_id=experiment.pk)
    maps = sel.experiment_maps(experiment)
    figures = {
        "noise": charts.noise_vs_gap(sel.noise_points(rows)),
        "curves": charts.gap_curves(experiment),
        "murphy": charts.murphy(experiment),
        "maps": charts.maps_chart(maps),
    }
    svgs = {k: mark_safe(inline_svg(c.svg())) for k, c in figures.items()}  # noqa: S308
    fits = [{"label": i.label, "method": i.method, "seed": i.seed, "gold": i.fit_gold or {},
             "gap": i.fit_gap or {}} for i in items]
    spec = experiment.spec if isinstance(experiment.spec, dict) else {}
    return render_to_string("evaluation/report.html", {
        "experiment": experiment,
        "spec": sorted(spec.items()),
        "summaries": sel.experiment_summaries(experiment),
        "arms": sel.experiment_arms(experiment),
        "fits": fits,
        "maps": maps,
        "trilemma": sel.trilemma_rows(items),
        "murphy": {k: bool(v) for k, v in sel.murphy_data(items).items()},
        "svgs": svgs,
        "maps_measured": not figures["maps"].empty,
        "generated": timezone.now(),
    })


class Command(BaseCommand):
    help = ("Write one experiment's gap report as ONE self-contained HTML file (charts inline "
            "as SVG, style inline, no script, no external URL): spec, noise coordinates, "
            "headline per arm, gap and gold curves with fits, MAPS, Murphy panels, trilemma.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--experiment", type=int, required=True, help="Experiment id.")
        parser.add_argument("--out", default="",
                            help="Output file (default: gap-report-<id>.html here).")

    def handle(self, *args, **options) -> None:
        experiment = sel.experiment_get(experiment_id=options["experiment"])
        if experiment is None:
            raise CommandError(f"No experiment with id {options['experiment']}: see "
                               "/gap/ or the admin for the ids.")
        out = Path(options["out"] or f"gap-report-{experiment.pk}.html")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report_html(experiment), encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot write {out}: {exc}") from exc
        self.stdout.write(f"wrote {out} ({out.stat().st_size} bytes)")
