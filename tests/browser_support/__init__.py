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
    """A headless Chromium (playwright.sync_api.Browser), closed on exit."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


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
