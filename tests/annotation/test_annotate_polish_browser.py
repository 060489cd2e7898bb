"""The annotator page in a real browser (issue 10, points 6 to 8): with a long conversation and
long responses it fits at 1440, 1366 and 390 px and Submit is on screen as soon as an item
appears; `s` opens a skip box whose reasons are picked by key and whose skip can be undone; a
paused annotator sees the pause message alone. Screenshots go to tests/artifacts/screens/.

One browser for the module (pages reused), pytest-django's live_server on a transactional
database, as in test_browser.py.
"""

from __future__ import annotations

import pytest

from annotation.models import AnnotatorProfile, Assignment, Comparison
from tests.browser_support import (
    VIEWPORTS,
    artifacts_dir,
    assert_fits,
    chromium_browser,
    log_in,
    require_chromium,
    screenshot,
)
from tests.factories import (
    CampaignFactory,
    ComparisonFactory,
    PromptFactory,
    ResponseFactory,
    make_users,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-12345678"  # make_users' password
TOKEN = "#judgment-form input[name=token]"
SENTENCE = ("The harbor keeps a ledger of every ship that calls, its cargo, its crew and the "
            "weather on the day it sailed, and the ledger is read aloud each spring. ")


def _long_text(label: str, paragraphs: int) -> str:
    body = "\n\n".join(f"{label} paragraph {i}. " + SENTENCE * 4 for i in range(paragraphs))
    # A code block and an unbroken token: neither may widen the page.
    return (body + "\n\n```\n" + "x = " + "1 + " * 60 + "1\n```\n\n"
            + "averyveryverylongunbrokenidentifier" * 6)


def _seed_long_campaign(n: int = 4):
    campaign = CampaignFactory(name="long-items", title="Long items", overlap=1,
                               instructions="Pick the **more helpful** reply.")
    turns = [{"role": "user" if i % 2 == 0 else "assistant",
              "content": _long_text(f"Turn {i}", 3)} for i in range(8)]
    for i in range(n):
        prompt = PromptFactory(campaign=campaign, turns=turns)
        ComparisonFactory(
            campaign=campaign, prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, text=_long_text(f"Reply {i} A", 10)),
            response_b=ResponseFactory(prompt=prompt, text=_long_text(f"Reply {i} B", 10)),
        )
    return campaign


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with chromium_browser() as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORTS["1366"])
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 500 else None)
    page.errors = errors
    yield page
    context.close()
    assert not errors, errors


def _in_viewport(page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    assert box is not None, f"{selector} is not rendered"
    assert box["y"] >= 0 and box["y"] + box["height"] <= size["height"], (
        f"{selector} at y={box['y']:.0f}..{box['y'] + box['height']:.0f}, outside the "
        f"{size['height']}px high viewport")
    assert box["x"] >= 0 and box["x"] + box["width"] <= size["width"], (selector, box)


def _wait_for_next_item(page, token: str) -> None:
    page.wait_for_function(
        "prev => { const t = document.querySelector('#judgment-form input[name=token]');"
        " return t !== null && t.value !== prev; }", arg=token, timeout=30_000)


def test_long_item_fits_and_keeps_submit_in_view_at_every_width(live_server, page):
    campaign = _seed_long_campaign()
    (annotator,) = make_users(1, prefix="long-rater")
    log_in(page, live_server.url, annotator.username, PASSWORD)
    page.goto(f"{live_server.url}/annotate/{campaign.pk}/")
    page.keyboard.press("Enter")  # Start
    page.locator(TOKEN).wait_for(state="attached")
    _in_viewport(page, "#judgment-form button.primary")

    for width, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.reload()
        page.locator(TOKEN).wait_for(state="attached")
        # Right after the item appears, before any scrolling: the controls are on screen.
        assert page.evaluate("window.scrollY") == 0
        for selector in ("#judgment-form button.primary", "#skip-box summary",
                         "#strength", "#actionbar input[value=tie]"):
            _in_viewport(page, selector)
        # The responses begin on the first screen too (their ends scroll inside them).
        assert page.locator(".response[data-side=left]").bounding_box()["y"] < viewport["height"]
        assert_fits(page, "annotate", width)
        # What the annotator sees first (a full-page shot stretches the window, so the sticky
        # bar and the capped boxes look different there).
        page.screenshot(path=str(artifacts_dir() / "screens"
                                 / f"annotate-first-screen-{width}.png"))
        # The header: the brand and the nav do not run together ("GaplabRate").
        brand = page.locator(".topbar .brand").bounding_box()
        nav = page.locator(".topbar nav").bounding_box()
        assert (brand["x"] + brand["width"] <= nav["x"]
                or brand["y"] + brand["height"] <= nav["y"]), (brand, nav)
        # The skip box open still fits its card, and keeps Skip it on screen.
        page.keyboard.press("s")
        _in_viewport(page, "#skip-box button[type=submit]")
        assert_fits(page, "annotate-skip-box", width)
        page.keyboard.press("Escape")
        assert page.locator("#skip-box").evaluate("d => d.open") is False

    # After a submit (an htmx swap) the next item starts at the top with Submit in view.
    page.set_viewport_size(VIEWPORTS["1366"])
    page.reload()
    page.locator(TOKEN).wait_for(state="attached")
    page.mouse.wheel(0, 3000)
    token = page.locator(TOKEN).input_value()
    page.keyboard.press("t")
    page.keyboard.press("Enter")
    _wait_for_next_item(page, token)
    assert page.evaluate("window.scrollY") == 0
    _in_viewport(page, "#judgment-form button.primary")


def test_keyboard_skip_box_then_undo(live_server, page):
    campaign = _seed_long_campaign(3)
    (annotator,) = make_users(1, prefix="skip-rater")
    posts: list[str] = []
    page.on("request", lambda req: posts.append(req.url) if req.method == "POST" else None)
    log_in(page, live_server.url, annotator.username, PASSWORD)
    page.goto(f"{live_server.url}/annotate/{campaign.pk}/")
    page.keyboard.press("Enter")
    page.locator(TOKEN).wait_for(state="attached")
    token = page.locator(TOKEN).input_value()
    first = Assignment.objects.get(token=token).comparison_id

    # A mis-pressed s opens the box and nothing else; rating keys do nothing while it is open;
    # Esc closes it. Nothing was sent.
    sent = len(posts)
    page.keyboard.press("s")
    box = page.locator("#skip-box")
    assert box.evaluate("d => d.open") is True
    assert page.evaluate("document.activeElement.name") == "reason"
    page.keyboard.press("x")
    assert page.locator("#judgment-form input[name=choice]:checked").count() == 0
    page.keyboard.press("Escape")
    assert box.evaluate("d => d.open") is False
    page.wait_for_timeout(200)
    assert len(posts) == sent and page.locator(TOKEN).input_value() == token

    # s, then 3 picks the third reason, Enter skips: the next item comes with the notice.
    page.keyboard.press("s")
    page.keyboard.press("3")
    assert page.locator("#skip-box input[name=reason]:checked").get_attribute("value") \
        == "broken item"
    page.keyboard.press("ArrowUp")  # arrow keys move between reasons too
    assert page.locator("#skip-box input[name=reason]:checked").get_attribute("value") \
        == "offensive content"
    with page.expect_response(lambda r: r.url.endswith("/skip/")) as info:
        page.keyboard.press("Enter")
    assert info.value.status == 200
    _wait_for_next_item(page, token)
    notice = page.locator("#skip-notice")
    assert "Skipped (Offensive content)" in notice.inner_text() and "Undo" in notice.inner_text()
    replacement = page.locator(TOKEN).input_value()
    screenshot(page, "annotate-skipped", "1366")
    assert Assignment.objects.get(token=token).skip_reason == "offensive content"

    # u undoes it: the skipped item is back, the one shown instead is released.
    with page.expect_response(lambda r: r.url.endswith("/skip/undo/")) as info:
        page.keyboard.press("u")
    assert info.value.status == 200
    _wait_for_next_item(page, replacement)
    assert page.locator(TOKEN).input_value() == token
    assert page.locator("#skip-notice").count() == 0
    assert Assignment.objects.get(token=token).status == Assignment.Status.PENDING
    assert not Assignment.objects.filter(token=replacement).exists()
    assert Comparison.objects.get(pk=first).claimed_count == 1
    assert Comparison.objects.exclude(pk=first).filter(claimed_count__gt=0).count() == 0

    # The mouse does the same: Skip… opens the box, Skip it skips with the checked reason.
    page.locator("#skip-box summary").click()
    assert box.evaluate("d => d.open") is True
    page.locator("#skip-box input[value=other]").check()
    with page.expect_response(lambda r: r.url.endswith("/skip/")):
        page.locator("#skip-box button[type=submit]").click()
    _wait_for_next_item(page, token)
    assert "Skipped (Other)" in page.locator("#skip-notice").inner_text()


def test_paused_annotator_sees_only_the_pause(live_server, page):
    campaign = _seed_long_campaign(1)
    (annotator,) = make_users(1, prefix="paused-rater")
    AnnotatorProfile.objects.filter(user=annotator).update(
        status=AnnotatorProfile.Status.PAUSED,
        paused_reason="Gold accuracy in long-items is below 70% with 95% confidence.")
    log_in(page, live_server.url, annotator.username, PASSWORD)
    for width, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.goto(f"{live_server.url}/annotate/{campaign.pk}/")
        paused = page.locator("#paused")
        assert paused.is_visible()
        assert "below 70%" in paused.inner_text()
        main = page.locator("main").inner_text()
        for absent in ("No work left", "Thank you", "Start", "Instructions"):
            assert absent not in main, absent
        assert page.locator("#start-form, #judgment-form, progress").count() == 0
        assert_fits(page, "annotate-paused", width)
        page.keyboard.press("Enter")  # no Start to press: nothing is claimed
    assert not Assignment.objects.exists()
