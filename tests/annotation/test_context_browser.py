"""The context panel in a real browser: an imported ``context`` is shown in a collapsible
<details>, reachable and opened from the keyboard, rendered as safe markdown, and the same on
calibration items as on regular ones (or absent on both).

Drives Debian's chromium through Playwright against pytest-django's live_server, as
``test_browser.py`` does.
"""

from __future__ import annotations

import json

import pytest

from annotation.models import Assignment, Comparison
from annotation.services.imports import comparisons_import_file
from tests.browser_support import chromium_browser, log_in, require_chromium
from tests.factories import CampaignFactory, make_users

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-12345678"  # make_users' password
TOKEN = "#judgment-form input[name=token]"
PASSAGES = ["Passage *one* about {t}.", "Passage two <script>window.pwned = 1</script> {t}."]
# The panel's shape without its text: tags, classes, attributes other than text, open state.
SKELETON_JS = """() => {
  const d = document.querySelector('#annotation-panel details.context');
  if (!d) return null;
  const walk = (el) => [el.tagName, el.className,
      [...el.attributes].map(a => a.name).filter(n => n !== 'class').sort().join(','),
      [...el.children].map(walk)];
  return JSON.stringify([d.open, walk(d)]);
}"""


def _seed(tmp_path):
    campaign = CampaignFactory(name="ctx-browser", title="Context campaign", overlap=1,
                               calibration_rate=1.0)
    rows = []
    for i, topic in enumerate(["tides", "ferns", "clocks", "moths"]):
        context = [p.format(t=topic) for p in PASSAGES] if i < 3 else None
        rows.append({"prompt": f"Tell me about {topic}.", "context": context,
                     "responses": [f"{topic} alpha reply", f"{topic} beta reply"]})
        rows.append({"prompt": f"Gold on {topic}?", "context": context, "gold": "A",
                     "responses": [f"{topic} right reply", f"{topic} wrong reply"]})
    path = tmp_path / "ctx.jsonl"
    path.write_text("\n".join(json.dumps({k: v for k, v in r.items() if v is not None})
                              for r in rows) + "\n")
    comparisons_import_file(campaign=campaign, source=path)
    return campaign


def test_context_panel_is_keyboard_reachable_and_alike_on_calibration_items(live_server,
                                                                             tmp_path):
    require_chromium()
    campaign = _seed(tmp_path)
    (annotator,) = make_users(1, prefix="ctx-annotator")
    base = live_server.url
    seen: list[tuple[str, bool, str | None]] = []  # (kind, prompt has context, skeleton)

    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        log_in(page, base, annotator.username, PASSWORD)
        page.goto(f"{base}/annotate/{campaign.pk}/")
        page.locator("#start-form button[type=submit]").click()
        while True:
            page.wait_for_selector(f"{TOKEN}, #no-work", state="attached")
            if page.locator("#no-work").count():
                break
            token = page.locator(TOKEN).input_value()
            comparison = Assignment.objects.select_related("comparison__prompt").get(
                token=token).comparison
            has_context = "context" in comparison.prompt.extra
            seen.append((comparison.kind, has_context, page.evaluate(SKELETON_JS)))
            if has_context:
                panel = page.locator("#annotation-panel details.context")
                assert not panel.evaluate("d => d.open")  # collapsed until asked for
                assert panel.locator("summary").inner_text() == "Context: 2 passages"
                assert not panel.locator(".passage").first.is_visible()
                # Keyboard only: Tab from the top of the page reaches the panel's summary...
                page.evaluate("document.activeElement && document.activeElement.blur()")
                for _ in range(30):
                    page.keyboard.press("Tab")
                    if page.evaluate("document.activeElement.tagName") == "SUMMARY" and \
                            page.evaluate("!!document.activeElement.closest('details.context')"):
                        break
                else:
                    pytest.fail("Tab never reached the context panel's summary")
                # ...and Enter opens it (and submits nothing: the form stays on this item).
                page.keyboard.press("Enter")
                assert panel.evaluate("d => d.open")
                assert page.locator(TOKEN).input_value() == token
                first = panel.locator(".passage").first
                assert first.is_visible()
                # Rendered as markdown, sanitised: *one* is emphasis, <script> is inert text.
                assert first.locator("em").inner_text() == "one"
                assert panel.locator("script").count() == 0
                assert page.evaluate("window.pwned === undefined")
                page.evaluate("document.activeElement.blur()")
            page.keyboard.press("t")
            page.keyboard.press("Enter")
            page.wait_for_function(
                "prev => { const t = document.querySelector('#judgment-form input[name=token]');"
                " return t === null || t.value !== prev; }", arg=token)
        assert problems == []

    kinds = {kind for kind, _, _ in seen}
    assert kinds == {Comparison.Kind.REGULAR, Comparison.Kind.CALIBRATION}
    for has_context in (True, False):
        shapes = {kind: {s for k, c, s in seen if k == kind and c == has_context}
                  for kind in kinds}
        # The same panel (or none) whatever the kind: nothing tells a calibration item apart.
        assert shapes[Comparison.Kind.REGULAR] == shapes[Comparison.Kind.CALIBRATION], shapes
        assert len(shapes[Comparison.Kind.REGULAR]) == 1
        (shape,) = shapes[Comparison.Kind.REGULAR]
        assert (shape is not None) == has_context
