"""The gap home in a real browser: a researcher logs in, the noise-vs-gap chart draws the
points of a stored real sweep (tests/evaluation/test_dashboard), the experiment page's
server-drawn curves load, and nothing breaks the page's CSP or logs an error.
Chromium via Playwright against pytest-django's live_server (a transactional database)."""

from __future__ import annotations

import pytest

from tests.browser_support import artifacts_dir, chromium_browser, log_in, require_chromium
from tests.conftest import PASSWORD
from tests.evaluation.test_dashboard import experiment_from, sweep_rows

pytestmark = [pytest.mark.browser]

INK = """id => {
  const c = document.getElementById(id);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n / (c.width * c.height);
}"""
# Registered before any page script: CSP violations (blocked inline script or style, a
# foreign URL) land in window.__csp.
CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


@pytest.fixture(scope="module")
def stored(django_db_setup, django_db_blocker, tmp_path_factory):
    return sweep_rows(django_db_blocker, tmp_path_factory)


@pytest.mark.django_db(transaction=True)
def test_gap_home_draws_noise_vs_gap_and_the_experiment_page_loads_its_curves(
        live_server, cast, stored):
    require_chromium()
    experiment = experiment_from(stored, name="browser sweep")
    n_points = 2 * len(stored["headline"]["arms"])  # two pressure methods per ε arm
    base = live_server.url
    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        page.add_init_script(CSP_WATCH)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        # A failed load is reported by the response handler (which excepts the favicon).
        page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None)
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        log_in(page, base, "researcher", PASSWORD)

        page.goto(f"{base}/gap/")
        page.locator("#noise-gap-chart[data-drawn=true]").wait_for()
        assert page.get_attribute("#noise-gap-chart", "data-points") == str(n_points)
        assert page.evaluate(INK, "noise-gap-chart") > 0.01
        datasets = page.evaluate(
            "() => Chart.getChart('noise-gap-chart').data.datasets.map(d => d.label)")
        assert datasets == ["tilting", "best_of_n"]
        assert page.locator(f'#experiment-table tr[data-experiment="{experiment.pk}"]').count()
        page.screenshot(path=str(artifacts_dir() / "gap_home.png"), full_page=True)

        page.get_by_role("link", name=f"#{experiment.pk} browser sweep").click()
        page.wait_for_url(f"**/gap/experiments/{experiment.pk}/")
        # The baseline's curves and the Murphy panels: PNGs drawn by the chart endpoint.
        page.wait_for_function(
            "() => ['gap-curves', 'murphy-chart'].every(id => {"
            " const i = document.getElementById(id);"
            " return i && i.complete && i.naturalWidth > 100; })", timeout=30_000)
        assert page.locator("#arm-charts li").count() == len(stored["result"])
        page.screenshot(path=str(artifacts_dir() / "gap_experiment.png"))
        csp = page.evaluate("() => window.__csp")
    assert csp == [], csp
    assert not problems, problems
