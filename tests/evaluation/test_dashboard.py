"""The gap pages, their selectors and chart downloads, on an Experiment row whose result comes
from a real small noise sweep (evaluation.experiments: a simulated pool through the annotation
services, r̂ = r* + noise, tilting and best-of-n curves with fits), stored as the gpu worker
stores it (experiment_jobs: result = as_dict per ε, headline = result_headline per ε)."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from evaluation import charts
from evaluation import selectors as sel
from evaluation.experiments import ExperimentSpec, experiment_noise_sweep, result_headline
from evaluation.models import Experiment

EPSILONS = (0.0, 0.2)
# A baseline and one MAPS lever (P: a KL limit, early stopping on the same curves: no extra
# campaign or training), so MAPS rows are real fits.trend_change numbers.
SPEC = ExperimentSpec(pool="expert:3", n_prompts=8, reward="utility_noise", n_eval_prompts=60,
                      n_boot=50, seeds=(3,),
                      variants=({"name": "kl1", "lever": "P", "overrides": {"kl_limit": 1.0}},))
ENTRIES = [("baseline", e) for e in EPSILONS] + [("kl1", e) for e in EPSILONS]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_CACHE: dict[str, Any] = {}


def _rolled_back(django_db_blocker, tmp_path_factory, run):
    """Run ``run()`` against the test database, then roll its rows back."""
    with django_db_blocker.unblock(), override_settings(
            GAPLAB_ARTIFACT_ROOT=tmp_path_factory.mktemp("experiments")):
        with transaction.atomic():
            out = run()
            transaction.set_rollback(True)
    return out


def sweep_rows(django_db_blocker, tmp_path_factory) -> dict[str, Any]:
    """The sweep as an Experiment row stores it, run once per test session (plain JSON; the
    campaign rows it made are rolled back). Shared with the report and browser tests."""
    if "rows" not in _CACHE:
        results = _rolled_back(django_db_blocker, tmp_path_factory,
                               lambda: experiment_noise_sweep(spec=SPEC, epsilons=EPSILONS))
        _CACHE["rows"] = {
            "result": json.loads(json.dumps([r.as_dict() for r in results])),
            "headline": json.loads(json.dumps({
                "spec_key": SPEC.key(), "seconds": round(sum(r.seconds for r in results), 3),
                "arms": [result_headline(r) for r in results]})),
        }
    return _CACHE["rows"]


def experiment_from(rows: dict[str, Any], **extra) -> Experiment:
    from evaluation.experiment_jobs import spec_as_json

    return Experiment.objects.create(
        name=extra.pop("name", "noise sweep"), spec=spec_as_json(SPEC), epsilons=list(EPSILONS),
        status=Experiment.Status.SUCCEEDED, progress=1.0, stage="done",
        result=rows["result"], headline=rows["headline"], **extra)


@pytest.fixture(scope="module")
def stored(django_db_setup, django_db_blocker, tmp_path_factory):
    return sweep_rows(django_db_blocker, tmp_path_factory)


@pytest.fixture
def experiment(db, stored):
    return experiment_from(stored)


# --- Selectors ----------------------------------------------------------------------------------


def test_noise_points_come_from_the_headline_and_match_the_summary(experiment, stored):
    rows = sel.experiment_rows()
    assert [r["pk"] for r in rows] == [experiment.pk] and "result" not in rows[0]
    points = sel.noise_points(rows)
    assert len(points) == len(ENTRIES) * 2
    for p in points:
        entry = stored["result"][ENTRIES.index((p.variant, p.epsilon_injected))]
        assert p.plotted and p.lever == ("" if p.variant == "baseline" else "P")
        assert p.x == pytest.approx(entry["summary"]["epsilon_measured"])
        assert p.epsilon_true == pytest.approx(entry["summary"]["epsilon_true"])
        assert p.y == pytest.approx(entry["summary"][p.method]["gap_slope_median"])
        assert p.y_lo <= p.y <= p.y_hi
    data = sel.noise_chart_data(points)
    assert data["n_points"] == 8
    assert [d["method"] for d in data["datasets"]] == ["tilting", "best_of_n"]


def test_experiment_reads_flatten_arms_curves_and_trilemma(experiment, stored):
    arms = sel.experiment_arms(experiment)
    assert [(a["variant"], a["epsilon"]["injected"]) for a in arms] == ENTRIES
    assert {m["method"] for m in arms[0]["methods"]} == {"tilting", "best_of_n"}
    items = sel.experiment_curves(experiment)
    assert len(items) == 8
    trilemma = sel.trilemma_rows(items)
    first = stored["result"][0]["arms"][0]["curves"]["tilting"]
    row = next(t for t in trilemma if t["index"] == 0 and t["method"] == "tilting")
    assert row["pressure"] == pytest.approx(max(first["d"]["value"]))
    assert row["value_capture"] == pytest.approx(max(first["true"]["value"]))
    # Generalization: held-out gold minus in-distribution gold at the largest d (mirage split).
    split = stored["result"][0]["arms"][0]["splits"]["tilting"]
    held, ins = split["held_out"], split["in_distribution"]
    top_held = held["true"]["value"][max(range(len(held["d"]["value"])),
                                          key=held["d"]["value"].__getitem__)]
    top_in = ins["true"]["value"][max(range(len(ins["d"]["value"])),
                                      key=ins["d"]["value"].__getitem__)]
    assert row["generalization"] == pytest.approx(top_held - top_in)
    murphy = sel.murphy_data(items)
    assert murphy["drift"] == []  # no drift variant in this sweep
    assert {m["split"] for m in murphy["mirage"]} == {"in_distribution", "held_out"}
    lengths = murphy["features"]["length"]
    assert len(lengths) == 8 and lengths[0]["band"]["value"] == pytest.approx(
        first["features"]["length"]["value"])


def test_maps_rows_read_the_headline_or_only_the_maps_path_of_the_result(client_for, stored):
    """The lever's change against the baseline (fits.trend_change, stored by the sweep) comes
    from the headline in one query; a headline without it costs one more query that reads only
    result -> i -> summary -> maps (never the whole result)."""
    experiment = experiment_from(stored, name="levers")
    with CaptureQueriesContext(connection) as queries:
        rows = sel.maps_rows(sel.experiment_rows())
    assert len(queries) == 1
    assert [(r["variant"], r["epsilon_injected"], r["method"]) for r in rows] == [
        ("kl1", e, m) for e in EPSILONS for m in ("tilting", "best_of_n")]
    for r in rows:
        stored_change = stored["result"][ENTRIES.index(("kl1", r["epsilon_injected"]))][
            "summary"]["maps"][r["method"]]
        assert r["slope_change"] == pytest.approx(stored_change["slope_change"])
        assert r["intercept_change"] == pytest.approx(stored_change["intercept_change"])
        assert r["lever"] == "P" and r["experiment"] == experiment.pk
    assert [r["slope_change"] for r in sel.experiment_maps(experiment)] == [
        r["slope_change"] for r in rows]

    bare_arms = [{k: ({kk: vv for kk, vv in v.items()
                       if kk not in ("slope_change", "intercept_change")}
                      if isinstance(v, dict) else v) for k, v in arm.items()}
                 for arm in stored["headline"]["arms"]]
    Experiment.objects.filter(pk=experiment.pk).update(headline={"arms": bare_arms})
    with CaptureQueriesContext(connection) as queries:
        fallback = sel.maps_rows(sel.experiment_rows())
    assert len(queries) == 2
    # The database extracts the maps path (PostgreSQL's #>, SQLite's JSON_EXTRACT): the
    # results' curves never reach Python.
    sql = queries[1]["sql"]
    assert ("#>" in sql or "JSON_EXTRACT" in sql) and "summary" in sql, sql
    assert [r["slope_change"] for r in fallback] == [r["slope_change"] for r in rows]

    want = rows[0]["slope_change"]["value"]
    client = client_for("researcher")
    html = client.get(reverse("evaluation:gap_home")).content.decode()
    assert f"{want:.3f} <span" in html and "kl1 (P)" in html
    csv_rows = _csv_rows(client.get(reverse("evaluation:chart", args=["maps", "csv"])))
    hit = [r for r in csv_rows if r["panel"] == "slope change" and r["series"] == "tilting"]
    assert [r["x"] for r in hit] == [f"#{experiment.pk} kl1 (P) ε={e:g}" for e in EPSILONS]
    assert float(hit[0]["y"]) == pytest.approx(want, rel=1e-5)
    assert float(hit[0]["y_lo"]) == pytest.approx(rows[0]["slope_change"]["lo"], rel=1e-5)


# --- Pages --------------------------------------------------------------------------------------


def test_home_embeds_the_chart_data_and_never_reads_a_result(client_for, experiment, stored):
    client = client_for("researcher")
    with CaptureQueriesContext(connection) as queries:
        resp = client.get(reverse("evaluation:gap_home"))
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'id="noise-gap-chart"' in html and 'id="noise-gap-data"' in html
    data = resp.context["chart_data"]
    slope = stored["headline"]["arms"][1]["tilting"]["gap_slope"]["value"]
    assert any(p.get("y") == pytest.approx(slope, rel=1e-4)
               for p in data["datasets"][0]["points"])
    embedded = re.search(r'<script id="noise-gap-data"[^>]*>(.*?)</script>', html, re.S)[1]
    assert json.loads(embedded) == json.loads(json.dumps(data))
    assert experiment.name in html and "/gap/charts/noise_vs_gap.csv" in html
    assert not any('"evaluation_experiment"."result"' in q["sql"] for q in queries)
    assert len(queries) <= 8, "\n".join(q["sql"][:150] for q in queries)


def test_experiment_page_shows_coordinates_curves_and_not_measured_parts(client_for,
                                                                         experiment, stored):
    resp = client_for("admin").get(reverse("evaluation:experiment", args=[experiment.pk]))
    assert resp.status_code == 200
    html = resp.content.decode()
    summary = stored["result"][1]["summary"]
    assert f"{summary['epsilon_measured']:.3f}" in html
    assert f"{summary['best_of_n']['gap_slope_median']:.3f}" in html
    assert f'src="/gap/charts/gap_curves.png?experiment={experiment.pk}"' in html
    for i in range(len(ENTRIES)):
        assert f"gap_curves.svg?experiment={experiment.pk}&amp;arm={i}" in html
    assert "features measured" in html and "mirage measured" in html
    assert "drift not measured" in html  # no drift variant in this sweep
    assert "no peak" in html or "d* " in html


def test_a_running_experiment_polls_its_status_without_its_result(client_for, db):
    running = Experiment.objects.create(name="running", status=Experiment.Status.RUNNING,
                                        progress=0.25, stage="arm eps=0.2 seed=3")
    client = client_for("researcher")
    url = reverse("evaluation:experiment", args=[running.pk])
    page = client.get(url).content.decode()
    assert 'hx-trigger="every 3s"' in page and "25%: arm eps=0.2 seed=3" in page
    with CaptureQueriesContext(connection) as queries:
        poll = client.get(url, headers={"HX-Request": "true"})
    assert poll.status_code == 200 and "HX-Refresh" not in poll
    html = poll.content.decode()
    assert html.lstrip().startswith('<section class="card" id="experiment-status"')
    experiment_sql = [q["sql"] for q in queries if "evaluation_experiment" in q["sql"]]
    assert experiment_sql and not any('"evaluation_experiment"."result"' in q
                                      for q in experiment_sql)
    Experiment.objects.filter(pk=running.pk).update(status=Experiment.Status.SUCCEEDED,
                                                    progress=1.0, stage="done")
    ended = client.get(url, headers={"HX-Request": "true"})
    assert ended["HX-Refresh"] == "true" and "hx-trigger" not in ended.content.decode()


def test_missing_keys_render_not_measured(client_for, db):
    bare = Experiment.objects.create(name="bare", result=[{"epsilon_injected": 0.1,
                                                           "arms": [{"seed": 0}]}],
                                     headline={"arms": [{"epsilon_injected": 0.1}]})
    client = client_for("researcher")
    assert client.get(reverse("evaluation:gap_home")).status_code == 200
    resp = client.get(reverse("evaluation:experiment", args=[bare.pk]))
    assert resp.status_code == 200 and "not measured" in resp.content.decode()
    for name in charts.CHART_NAMES:
        resp = client.get(reverse("evaluation:chart", args=[name, "csv"]),
                          {"experiment": bare.pk})
        assert resp.status_code == 200, name
        assert resp.content.decode().splitlines() == [
            "panel,series,x,x_lo,x_hi,y,y_lo,y_hi"]


@pytest.mark.parametrize(("role", "status"), [("annotator", 403), ("outsider", 403),
                                              ("admin", 200), ("researcher", 200)])
def test_only_researchers_and_admins(client_for, experiment, role, status):
    client = client_for(role)
    for url in (reverse("evaluation:gap_home"),
                reverse("evaluation:experiment", args=[experiment.pk]),
                reverse("evaluation:chart", args=["noise_vs_gap", "csv"])):
        assert client.get(url).status_code == status, url


def test_anonymous_goes_to_login(client_for, experiment):
    resp = client_for(None).get(reverse("evaluation:gap_home"))
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")


# --- Downloads ----------------------------------------------------------------------------------


def _csv_rows(resp) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(resp.content.decode())))


def test_downloads_are_valid_png_svg_and_csv_of_the_plotted_numbers(client_for, experiment,
                                                                    stored):
    client = client_for("researcher")
    url = reverse("evaluation:chart", args=["gap_curves", "png"])
    png = client.get(url, {"experiment": experiment.pk, "arm": 1})
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert png.content.startswith(PNG_MAGIC)
    svg = client.get(reverse("evaluation:chart", args=["noise_vs_gap", "svg"]),
                     {"experiment": experiment.pk})
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert ET.fromstring(svg.content).tag.endswith("svg")
    assert svg["Content-Disposition"] == (
        f'attachment; filename="noise_vs_gap-experiment{experiment.pk}.svg"')

    # Murphy panels of the stored features: the length band of arm 0's tilting curve.
    rows = _csv_rows(client.get(reverse("evaluation:chart", args=["murphy", "csv"]),
                                {"experiment": experiment.pk}))
    feature = stored["result"][0]["arms"][0]["curves"]["tilting"]["features"]["length"]
    length = [r for r in rows if r["panel"] == "reward hacking: length"
              and r["series"] == "ε=0 tilting"]
    assert [float(r["y"]) for r in length] == pytest.approx(feature["value"], rel=1e-5)
    mirage = {r["series"] for r in rows if r["panel"].startswith("alignment mirage")}
    assert "ε=0 tilting held-out" in mirage and "ε=0 tilting in-distribution" in mirage

    # Noise vs gap: every plotted point, at measured ε and at true ε, with the slope's interval.
    rows = _csv_rows(client.get(reverse("evaluation:chart", args=["noise_vs_gap", "csv"])))
    measured = [r for r in rows if "true" not in r["series"]]
    assert len(measured) == 8 and len(rows) == 16
    for entry in stored["result"][:len(EPSILONS)]:  # the baseline's arms
        s = entry["summary"]
        hit = [r for r in measured if r["series"] == f"tilting #{experiment.pk}"
               and float(r["x"]) == pytest.approx(s["epsilon_measured"], rel=1e-5)]
        assert len(hit) == 1
        assert float(hit[0]["y"]) == pytest.approx(s["tilting"]["gap_slope_median"], rel=1e-5)
        assert float(hit[0]["y_lo"]) == pytest.approx(s["tilting"]["gap_slope_lo"], rel=1e-5)

    # Gap curves of arm 0: the stored gold points are in the CSV, plus a fit line and its band.
    rows = _csv_rows(client.get(reverse("evaluation:chart", args=["gap_curves", "csv"]),
                                {"experiment": experiment.pk, "arm": 0}))
    curve = stored["result"][0]["arms"][0]["curves"]["best_of_n"]
    gold = [r for r in rows if r["panel"] == "best_of_n: gold r* (fit, band)"
            and r["series"] == "ε=0"]
    assert [float(r["y"]) for r in gold] == pytest.approx(curve["true"]["value"], rel=1e-5)
    assert [float(r["x"]) for r in gold] == pytest.approx(curve["d"]["value"], rel=1e-5, abs=1e-9)
    fit = [r for r in rows if r["series"] == "ε=0 gold fit" and "best_of_n" in r["panel"]]
    # The experiment's stored bootstrap band, drawn as it is, and the low-d fit's band.
    stored_fits = stored["result"][0]["arms"][0]["fits"]["best_of_n"]
    assert [float(r["y_lo"]) for r in fit] == pytest.approx(stored_fits["gold_band"]["lo"],
                                                             rel=1e-5, abs=1e-9)
    assert all(float(r["y_lo"]) <= float(r["y"]) <= float(r["y_hi"]) for r in fit)
    low = [r for r in rows if "(extrapolated)" in r["series"] and "best_of_n" in r["panel"]]
    assert len(low) == len(stored_fits["gold_low_band"]["d"])
    stored_fit = stored_fits["gold"]
    top = fit[-1]  # the fit's centre is the stored α, β: gold(d) = d(α − βd)
    d = float(top["x"])
    assert float(top["y"]) == pytest.approx(
        d * (stored_fit["alpha"]["value"] - stored_fit["beta"]["value"] * d), rel=1e-4)


def test_unknown_chart_format_or_experiment_is_404(client_for, experiment):
    client = client_for("researcher")
    chart = "evaluation:chart"
    assert client.get(reverse(chart, args=["nope", "png"])).status_code == 404
    assert client.get(reverse(chart, args=["noise_vs_gap", "gif"])).status_code == 404
    assert client.get(reverse(chart, args=["gap_curves", "png"])).status_code == 404
    for bad in ("abc", "-1", "99999999", "1e3"):
        resp = client.get(reverse(chart, args=["noise_vs_gap", "csv"]), {"experiment": bad})
        assert resp.status_code == 404, bad
    resp = client.get(reverse(chart, args=["gap_curves", "csv"]),
                      {"experiment": experiment.pk, "arm": 7})
    assert resp.status_code == 404
    assert client.get("/gap/charts/noise_vs_gap.png.svg").status_code == 404
    assert client.get(reverse("evaluation:experiment", args=[99999999])).status_code == 404
