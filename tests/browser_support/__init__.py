"""Helpers for browser tests: Playwright driving Debian's chromium (no `playwright install`).

See WEB-STACK.md, "Browser tests". Tests that use these are marked ``browser`` and skip when
``/usr/bin/chromium`` is missing (CI installs it: ``apt-get install -y chromium``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def require_chromium() -> None:
    """Skip the calling test when Debian's chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium "
                    "(apt-get install -y chromium) to run browser tests")


@contextmanager
def chromium_browser() -> Iterator[object]:
    """A headless Chromium (playwright.sync_api.Browser), closed on exit.

    Inside ``sync_playwright`` the test's code runs in another context, where Django opens a
    database connection of its own: it is closed on exit (left open, it kept the test database
    from being dropped at the end of the run).
    """
    require_chromium()
    from django.db import connections
    from playwright.sync_api import sync_playwright

    outer = connections["default"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
            if connections["default"] is not outer:
                connections.close_all()


def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def log_in(page, base_url: str, username: str, password: str) -> None:
    """Log in through the real login form and wait for the redirect away from it."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    assert "/accounts/login/" not in page.url, f"login as {username} failed: {page.url}"


# The widths every page is checked at (issue 10): a desktop, a 1366x900 laptop and a phone.
VIEWPORTS = {"1440": {"width": 1440, "height": 900}, "1366": {"width": 1366, "height": 900},
             "390": {"width": 390, "height": 844}}

# Every visible element must lie inside the viewport's width and inside its nearest card
# (``.card``, ``.panel``, or the page's ``main``), counting what a sideways scroll hides as
# outside: a table cut off behind a scroll bar is the defect this catches. Code blocks
# (``pre``) scroll by design and are left out, as is anything inside ``[data-scroll-ok]``.
_LAYOUT_JS = """
() => {
  const out = [];
  const vw = document.documentElement.clientWidth;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' && el.className.trim()
      ? '.' + el.className.trim().split(/\\s+/).join('.') : '') +
    (el.textContent ? ' "' + el.textContent.trim().slice(0, 30) + '"' : '');
  if (document.documentElement.scrollWidth > vw + 1) {
    out.push('page is ' + document.documentElement.scrollWidth + 'px wide in a ' + vw +
             'px viewport');
  }
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('pre, [data-scroll-ok], head, script, style, template, option')) continue;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden' ||
        style.opacity === '0') continue;
    if (el.closest('details:not([open])') && !el.closest('summary') &&
        el.closest('details:not([open])') !== el) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (r.right > vw + 1 || r.left < -1) {
      out.push(name(el) + ' spans ' + Math.round(r.left) + '..' + Math.round(r.right) +
               'px, outside the ' + vw + 'px viewport');
      continue;
    }
    const card = el.parentElement && el.parentElement.closest('.card, .panel, main');
    if (!card) continue;
    const c = card.getBoundingClientRect();
    if (r.right > c.right + 1 || r.left < c.left - 1) {
      out.push(name(el) + ' spans ' + Math.round(r.left) + '..' + Math.round(r.right) +
               'px, outside its ' + name(card).slice(0, 40) + ' (' + Math.round(c.left) + '..' +
               Math.round(c.right) + 'px)');
    }
  }
  return out.slice(0, 20);
}
"""


def layout_problems(page) -> list[str]:
    """What on the page overflows the viewport or its card (empty when the page fits)."""
    return page.evaluate(_LAYOUT_JS)


def screenshot(page, name: str, width: str) -> Path:
    """Save a full-page screenshot as ``tests/artifacts/screens/<name>-<width>.png``."""
    path = artifacts_dir() / "screens" / f"{name}-{width}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_fits(page, name: str, width: str) -> None:
    """Screenshot the page, then fail naming every element that overflows."""
    screenshot(page, name, width)
    problems = layout_problems(page)
    assert not problems, f"{name} at {width}px overflows:\n" + "\n".join(problems)
