"""manage.py gap_report: one self-contained HTML file (inline SVG and style, no script, no URL)
of an experiment whose result comes from a real small sweep (tests/evaluation/test_dashboard)."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.evaluation.test_dashboard import experiment_from, sweep_rows


@pytest.fixture(scope="module")
def stored(django_db_setup, django_db_blocker, tmp_path_factory):
    return sweep_rows(django_db_blocker, tmp_path_factory)


@pytest.mark.django_db
def test_report_is_one_self_contained_file_with_the_numbers(stored, tmp_path):
    experiment = experiment_from(stored, name="report sweep")
    out = tmp_path / "deep" / "report.html"
    stdout = StringIO()
    call_command("gap_report", "--experiment", str(experiment.pk), "--out", str(out),
                 stdout=stdout)
    assert f"wrote {out}" in stdout.getvalue()
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    # Nothing to fetch: no URL of any scheme, no script, no external style or image.
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|link|img|iframe)\b", html, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", html, re.I)
    assert html.count("<svg") == 4  # noise vs gap, curves, MAPS, Murphy
    assert "<style>" in html
    # The experiment's numbers: spec, noise coordinates, slopes, fits.
    for entry in stored["result"]:  # every (variant, ε)
        s = entry["summary"]
        assert f"{s['epsilon_measured']:.3f}" in html
        assert f"{s['tilting']['gap_slope_median']:.3f}" in html
        fit = entry["arms"][0]["fits"]["best_of_n"]["gold"]
        assert f"{fit['alpha']['value']:.3f}" in html
    assert "utility_noise" in html and "expert:3" in html
    lever = stored["result"][-1]["summary"]["maps"]["tilting"]["slope_change"]
    interval = f"[{lever['lo']:.3f}, {lever['hi']:.3f}]"
    assert f'{lever["value"]:.3f} <span class="muted">{interval}' in html
    assert "kl1 (P)" in html
    assert 'id="gap-curves"' in html and 'id="murphy"' in html


@pytest.mark.django_db
def test_missing_experiment_is_a_clear_command_error(tmp_path):
    with pytest.raises(CommandError, match="No experiment with id 987654"):
        call_command("gap_report", "--experiment", "987654", "--out", str(tmp_path / "x.html"))
    assert not (tmp_path / "x.html").exists()
