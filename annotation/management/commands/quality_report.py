"""``manage.py quality_report --campaign NAME``: a campaign's stored quality, ending in one JSON
line (``selectors.quality.campaign_quality_report``) that scripts and validation runs parse.

Every line before the last is for people; the last line is the whole report as JSON. Onsets and
alarms of drift alerts are the annotator's own judgment numbers (1 = their first judgment in the
campaign), as on the dashboards.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Campaign
from annotation.selectors.quality import campaign_quality_report


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


class Command(BaseCommand):
    help = (
        "Print a campaign's quality: each annotator's gold accuracy with its interval, "
        "competence, biases, status, accuracy level and drift alerts (onset and alarm in the "
        "annotator's judgment numbers), and the campaign's noise epsilon and fit diagnostics. "
        "The last line is the report as one JSON object."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name (slug).")
        parser.add_argument("--recompute", action="store_true",
                            help="Run the full quality recompute first (in this process).")

    def handle(self, *args, **o) -> None:
        campaign = Campaign.objects.filter(name=o["campaign"]).first()
        if campaign is None:
            raise CommandError(f"No campaign named {o['campaign']!r}.")
        if o["recompute"]:
            from annotation.services.quality import campaign_quality_recompute

            campaign_quality_recompute(campaign=campaign)
        report = campaign_quality_report(campaign=campaign)
        quality = report["campaign"]["quality"]
        if quality is None:
            self.stdout.write(f"{campaign.name}: quality not computed yet (use --recompute).")
        else:
            fits = ", ".join(
                f"{name}: {fit.get('iterations', '?')} iterations, "
                f"{'converged' if fit.get('converged') else 'NOT converged'}"
                for name, fit in sorted(quality["fits"].items()) if isinstance(fit, dict)
            )
            self.stdout.write(
                f"{campaign.name}: {quality['n_judgments']} judgments, noise epsilon "
                f"{_num(quality['noise_epsilon'], 3)}" + (f"; fits: {fits}" if fits else "")
            )
        for a in report["annotators"]:
            gold = a["gold"]
            alerts = "; ".join(
                f"{al['stream']} onset #{al['onset_judgment']} alarm #{al['alarm_judgment']}"
                for al in a["alerts"]
            )
            self.stdout.write(
                f"  {a['username']:<18} {a['n_judgments']:>6}  gold {_num(gold['accuracy'])} "
                f"[{_num(gold['ci_low'])}, {_num(gold['ci_high'])}] n={gold['n']}  "
                f"competence {_num(a['competence'])}  {a['status'] or '—'}/{a['level']}"
                + (f"  alerts: {alerts}" if alerts else "")
                + "".join(f"  agreement with {src} labels {_num(sa['agreement'])} (n={sa['n']})"
                          for src, sa in sorted(a["source_agreement"].items()))
            )
        self.stdout.write(json.dumps(report, sort_keys=True, allow_nan=False))
