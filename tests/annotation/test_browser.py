"""The annotator page in a real browser: keyboard-only rating, htmx swaps, layout; and every
kind of page (annotator, quality chart, admin, API docs) working under the site's
Content-Security-Policy with no violation.

Drives Debian's chromium through Playwright against pytest-django's live_server (a
transactional database: the server thread sees what the test commits).
"""

from __future__ import annotations

import pytest

from annotation.models import Assignment, Judgment
from tests.browser_support import artifacts_dir, chromium_browser, log_in, require_chromium
from tests.factories import (
    CalibrationFactory,
    CampaignFactory,
    ComparisonFactory,
    PromptFactory,
    ResponseFactory,
    make_users,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-12345678"  # make_users' password
TOPICS = ["apples", "rivers", "violins", "glaciers", "lanterns", "comets", "harbors",
          "meadows", "teapots", "bridges", "orchids", "canyons", "pebbles", "kites"]

# One step per item: the keys pressed before Enter, then the expected screen choice and strength.
# "2!" presses 2 and then Enter before any strength: the page must refuse and ask for one.
STEPS = [
    (["1", "q"], "left", 1),
    (["ArrowRight", "e"], "right", 3),
    (["t"], "tie", None),
    (["2!", "w"], "right", 2),               # missing strength is flagged, nothing is sent
    (["x"], "both_bad", None),
    (["e", "ArrowLeft"], "left", 3),         # strength first
    (["1", "2", "w"], "right", 2),           # change of mind
    (["t", "w"], "tie", None),               # a tie carries no strength
    (["ArrowLeft", "q", "e"], "left", 3),    # strength changed
    (["x", "2", "q"], "right", 1),
]

TOKEN = "#judgment-form input[name=token]"


def _seed_campaign():
    campaign = CampaignFactory(
        name="browser-campaign", title="Browser campaign", overlap=2, calibration_rate=0.2,
        instructions="Pick the **more helpful** reply.",
    )
    texts: dict[str, tuple[int, str]] = {}  # response text -> (comparison id, "A" or "B")

    def add(factory, i: int):
        topic = TOPICS[i]
        prompt = PromptFactory(
            campaign=campaign, turns=[{"role": "user", "content": f"Tell me about {topic}."}]
        )
        a = ResponseFactory(prompt=prompt, text=f"Reply {i} alpha says {topic} are lovely.")
        b = ResponseFactory(prompt=prompt, text=f"Reply {i} beta says {topic} are dull.")
        comparison = factory(campaign=campaign, prompt=prompt, response_a=a, response_b=b)
        texts[a.text] = (comparison.pk, "A")
        texts[b.text] = (comparison.pk, "B")

    for i in range(12):
        add(ComparisonFactory, i)
    for i in range(12, 14):
        add(CalibrationFactory, i)
    return campaign, texts


def _expected_canonical(screen: str, left: str, right: str, texts) -> str:
    if screen == "left":
        return texts[left][1]
    if screen == "right":
        return texts[right][1]
    return screen  # "tie" / "both_bad" are the same in both orders


def _shown_item(page) -> tuple[str, str, str]:
    token = page.locator(TOKEN).input_value()
    left = page.get_by_test_id("left-text").inner_text().strip()
    right = page.get_by_test_id("right-text").inner_text().strip()
    return token, left, right


def _wait_for_next_item(page, token: str) -> None:
    """Wait until the panel shows an assignment other than ``token`` (an htmx swap)."""
    page.wait_for_function(
        "prev => { const t = document.querySelector('#judgment-form input[name=token]');"
        " return t !== null && t.value !== prev; }",
        arg=token,
        # A submit answers in about 0.1 s; 30 s (not Playwright's 15) leaves room for a
        # 2-core machine busy with a training test's torch threads.
        timeout=30_000,
    )


def _box(page, side: str) -> dict:
    box = page.locator(f".response[data-side={side}]").bounding_box()
    assert box is not None, f"the {side} response is not rendered"
    return box


def test_keyboard_only_rating_records_what_was_on_screen(live_server):
    require_chromium()
    campaign, texts = _seed_campaign()
    (annotator,) = make_users(1, prefix="kbd-annotator")
    base = live_server.url
    out = artifacts_dir()

    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        # Failed loads are checked by status below (the browser's own /favicon.ico 404 is fine).
        page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None)
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        navigations: list[str] = []
        page.on("framenavigated",
                lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
        submits: list[dict] = []
        posts: list[str] = []
        page.on("request", lambda req: posts.append(req.url) if req.method == "POST" else None)
        page.on("request", lambda req: submits.append(req.headers)
                if req.method == "POST" and req.url.endswith("/submit/") else None)

        log_in(page, base, annotator.username, PASSWORD)
        page.goto(f"{base}/annotate/")
        page.get_by_role("link", name="Browser campaign").click()
        page.wait_for_url(f"**/annotate/{campaign.pk}/")
        # Opening the page claims nothing; Enter presses Start, whose POST claims the first item.
        page.locator("#start-form button[type=submit]").wait_for()
        assert page.locator(TOKEN).count() == 0
        with page.expect_response(lambda r: r.url.endswith("/start/")) as info:
            page.keyboard.press("Enter")
        assert info.value.status == 200 and info.value.request.method == "POST"
        page.locator(TOKEN).wait_for(state="attached")

        # The shortcuts are shown: next to each control, and in the instructions list ("?").
        panel_keys = page.locator("#annotation-panel kbd:visible").all_inner_texts()
        for key in ["1", "2", "t", "x", "q", "w", "e", "Enter", "s", "r"]:
            assert key in panel_keys, f"shortcut {key!r} not shown in the panel: {panel_keys}"
        keys_list = page.locator("#instructions ul.keys")
        assert not keys_list.is_visible()
        page.keyboard.press("?")
        assert keys_list.is_visible()
        listed = keys_list.inner_text()
        for phrase in ["left is better", "right is better", "tie", "both bad", "strength",
                       "submit", "skip"]:
            assert phrase in listed, f"{phrase!r} missing from the keyboard help: {listed!r}"
        page.keyboard.press("?")
        assert not keys_list.is_visible()

        # A marker that survives only if the page is never reloaded.
        page.evaluate("window.__gaplabNoReload = 'still here'")
        navigations_before = len(navigations)

        seen: list[dict] = []
        for keys, screen, strength in STEPS:
            token, left, right = _shown_item(page)
            assert left in texts and right in texts, (left, right)
            assert texts[left][0] == texts[right][0] and left != right
            assert token not in {s["token"] for s in seen}
            for key in keys:
                if key.endswith("!"):
                    page.keyboard.press(key[:-1])
                    sent = len(submits)
                    page.keyboard.press("Enter")
                    legend = page.locator("#strength legend")
                    assert legend.inner_text() == "Strength: press q, w or e"
                    assert "missing" in (page.locator("#strength").get_attribute("class") or "")
                    page.wait_for_timeout(300)
                    assert len(submits) == sent, "a left/right choice without strength was sent"
                    assert page.locator(TOKEN).input_value() == token
                else:
                    page.keyboard.press(key)
            checked = page.locator("#judgment-form input[name=choice]:checked").get_attribute(
                "value")
            assert checked == screen
            if strength is not None:
                picked = page.locator("#judgment-form input[name=strength]:checked")
                assert picked.get_attribute("value") == str(strength)
            with page.expect_response(lambda r: r.url.endswith("/submit/")) as response_info:
                page.keyboard.press("Enter")
            response = response_info.value
            assert response.status == 200
            assert response.request.headers.get("hx-request") == "true"
            _wait_for_next_item(page, token)
            assert page.evaluate("window.__gaplabNoReload") == "still here"
            assert page.locator("#annotation-panel .error").count() == 0
            seen.append({"token": token, "left": left, "right": right, "screen": screen,
                         "strength": strength})

        assert len(navigations) == navigations_before, f"page navigated: {navigations}"
        assert len(submits) == len(STEPS)
        assert page.locator(".progress-label").inner_text().startswith(f"{len(STEPS)} done")

        # `s` opens the skip box and sends nothing (a mis-press between `w` and `x` is harmless);
        # Enter in the box skips with the reason picked (the first, by default).
        skipped_token = page.locator(TOKEN).input_value()
        posts_before = len(posts)
        page.keyboard.press("s")
        assert page.locator("#skip-box").evaluate("d => d.open") is True
        page.wait_for_timeout(200)
        assert page.locator(TOKEN).input_value() == skipped_token
        assert len(posts) == posts_before, "s sent a request"
        with page.expect_response(lambda r: r.url.endswith("/skip/")) as response_info:
            page.keyboard.press("Enter")
        assert response_info.value.status == 200
        _wait_for_next_item(page, skipped_token)
        assert page.evaluate("window.__gaplabNoReload") == "still here"
        assert "Skipped (I cannot judge this)" in page.locator("#skip-notice").inner_text()

        # Enter on a focused button does what the button says: here Undo, even with a choice made.
        button_token = page.locator(TOKEN).input_value()
        page.keyboard.press("1")
        page.keyboard.press("q")
        page.locator("#skip-notice button[type=submit]").focus()
        with page.expect_response(lambda r: r.url.endswith(("/undo/", "/submit/"))) as info:
            page.keyboard.press("Enter")
        assert info.value.url.endswith("/skip/undo/"), "Enter on Undo submitted a judgment"
        _wait_for_next_item(page, button_token)
        assert page.locator(TOKEN).input_value() == skipped_token  # the skipped item is back

        # Skipped again with another reason, picked by its key in the box.
        page.keyboard.press("s")
        page.keyboard.press("2")
        with page.expect_response(lambda r: r.url.endswith("/skip/")):
            page.keyboard.press("Enter")
        _wait_for_next_item(page, skipped_token)

        # Wide: the two responses side by side. Narrow (phone): stacked, no sideways scrolling.
        page.screenshot(path=str(out / "annotate.png"), full_page=True)
        left_box, right_box = _box(page, "left"), _box(page, "right")
        assert abs(left_box["y"] - right_box["y"]) < 2
        assert right_box["x"] >= left_box["x"] + left_box["width"]
        page.set_viewport_size({"width": 420, "height": 900})
        page.screenshot(path=str(out / "annotate-narrow.png"), full_page=True)
        left_box, right_box = _box(page, "left"), _box(page, "right")
        assert abs(left_box["x"] - right_box["x"]) < 2
        assert right_box["y"] >= left_box["y"] + left_box["height"]
        assert right_box["x"] + right_box["width"] <= 420
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= 420, f"the narrow page scrolls sideways ({scroll_width}px)"
        assert not problems, problems

    # What was stored is what was on screen, in canonical order.
    assert Judgment.objects.filter(annotator=annotator).count() == len(STEPS)
    for step in seen:
        assignment = Assignment.objects.select_related(
            "comparison__response_a", "comparison__response_b"
        ).get(token=step["token"])
        comparison = assignment.comparison
        shown_a_left = step["left"] == comparison.response_a.text
        assert shown_a_left == assignment.a_on_left
        assert {step["left"], step["right"]} == {comparison.response_a.text,
                                                 comparison.response_b.text}
        judgment = Judgment.objects.get(assignment=assignment)
        assert assignment.status == Assignment.Status.COMPLETED
        assert judgment.annotator_id == annotator.pk
        assert judgment.choice == _expected_canonical(
            step["screen"], step["left"], step["right"], texts
        ), step
        assert judgment.strength == step["strength"], step
        assert judgment.a_on_left == assignment.a_on_left
        assert judgment.seconds_spent > 0
    skipped = Assignment.objects.get(token=skipped_token)
    assert skipped.status == Assignment.Status.SKIPPED
    assert skipped.skip_reason == "offensive content"
    assert not Judgment.objects.filter(assignment=skipped).exists()
    # The item shown in its place, before the undo, went back to the pool unanswered.
    assert not Assignment.objects.filter(token=button_token).exists()
    assert (out / "annotate.png").stat().st_size > 0
    assert (out / "annotate-narrow.png").stat().st_size > 0


# Records every CSP violation the page reports, before any page script runs (an init script is
# injected by the browser, so the page's own policy does not apply to it).
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(
  e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') + ' at ' + e.sourceFile + ':'
  + e.lineNumber));
"""


def _csp_problems(page) -> list[str]:
    return page.evaluate("window.__cspViolations || []")


def test_pages_work_under_the_content_security_policy(live_server):
    """The annotator page (rate one item by keyboard), a quality page with a chart, the admin and
    the Swagger page all work with script-src and style-src 'self', and the browser reports no
    Content Security Policy violation on any of them."""
    require_chromium()
    from annotation.services import Role, user_create_with_role

    campaign, _ = _seed_campaign()
    (annotator,) = make_users(1, prefix="csp-annotator")
    admin = user_create_with_role(username="csp-admin", password=PASSWORD, role=Role.ADMIN)
    base = live_server.url

    with chromium_browser() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(CSP_RECORDER)
        page = context.new_page()
        page.set_default_timeout(15_000)
        console: list[str] = []
        page.on("console", lambda msg: console.append(
            f"{msg.type}: {msg.text} ({msg.location.get('url')}:{msg.location.get('lineNumber')})"))
        page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
        violations: list[str] = []

        def visit_done(name: str) -> None:
            violations.extend(f"{name}: {v}" for v in _csp_problems(page))

        # The header is on the page itself, as sent.
        response = page.goto(f"{base}/accounts/login/")
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert "camera=()" in response.headers["permissions-policy"]
        log_in(page, base, annotator.username, PASSWORD)

        # Annotator page: Start, then rate one item by keyboard through htmx.
        page.goto(f"{base}/annotate/{campaign.pk}/")
        page.keyboard.press("Enter")
        page.locator(TOKEN).wait_for(state="attached")
        assert page.evaluate("window.htmx && htmx.config.includeIndicatorStyles") is False
        token = page.locator(TOKEN).input_value()
        page.keyboard.press("1")
        page.keyboard.press("w")
        with page.expect_response(lambda r: r.url.endswith("/submit/")) as info:
            page.keyboard.press("Enter")
        assert info.value.status == 200
        _wait_for_next_item(page, token)
        # The progress bar is a <progress> element now (a style attribute would be refused).
        assert page.locator("progress.progress-bar").get_attribute("value") == "1"
        visit_done("annotate")
        page.locator("form[action='/accounts/logout/'] button").click()
        page.wait_for_url("**/accounts/login/")

        # A quality page with Chart.js charts, as an admin.
        log_in(page, base, admin.username, PASSWORD)
        page.goto(f"{base}/quality/campaigns/{campaign.pk}/")
        for chart_id in ("label-mix-chart", "position-chart"):
            page.locator(f"#{chart_id}[data-drawn=true]").wait_for()
        # The dashboard stylesheet applied: chart boxes get their fixed height from quality.css.
        height = page.locator(".chart-box").first.evaluate(
            "el => getComputedStyle(el).height")
        assert height == "260px", height
        visit_done("quality")

        # The Django admin: index, a change list and the import form.
        page.goto(f"{base}/admin/")
        page.get_by_role("link", name="Campaigns").first.click()
        page.wait_for_url("**/admin/annotation/campaign/")
        page.goto(f"{base}/admin/annotation/campaign/import/")
        page.locator("input[type=file]").wait_for(state="attached")
        visit_done("admin")

        # Swagger UI: its init script comes from /api/docs/?script, and it renders the schema.
        page.goto(f"{base}/api/docs/")
        page.locator(".swagger-ui .opblock").first.wait_for()
        assert page.locator(".swagger-ui .opblock").count() > 5
        visit_done("api-docs")

        context.close()

    csp_console = [m for m in console if "Content Security Policy" in m]
    assert not csp_console, csp_console
    assert not violations, violations
    errors = [m for m in console if m.startswith(("error:", "page error:"))
              and "Failed to load resource" not in m]
    assert not errors, errors
