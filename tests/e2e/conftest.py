"""Fixtures of the browser tier: Debian's Chromium driven by Playwright, a worker and a gateway.

Chromium comes from Debian's packages (``infra.local.browser.ensure_chromium`` installs it when
missing and we are root); Playwright's own browser download is never used. Without a browser the
tier is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO

if TYPE_CHECKING:
    from playwright.async_api import Page

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install -e '.[dev]')"
)

ARTIFACTS = REPO / ".chatbus" / "artifacts"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed on first use; skips the tier when it cannot be had."""
    from infra.local.browser import BrowserUnavailable, ensure_chromium

    try:
        return ensure_chromium()
    except BrowserUnavailable as exc:
        pytest.skip(f"no browser for the e2e tests: {exc}")


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def page(chromium: Path) -> AsyncIterator[Page]:
    """A fresh page in a fresh headless Chromium (Playwright gives it a new profile dir).

    Script errors and console errors (a Content-Security-Policy refusal, say) fail the test;
    failed HTTP answers (a 404 from an endpoint not there yet) do not.
    """
    from infra.local.browser import CHROMIUM_ARGS

    errors: list[str] = []
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(chromium), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 800}, color_scheme="light"
            )
            opened = await context.new_page()
            opened.on("pageerror", lambda exc: errors.append(str(exc)))
            opened.on(
                "console",
                lambda msg: (
                    errors.append(msg.text)
                    if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                    else None
                ),
            )
            yield opened
            await context.close()
        finally:
            await browser.close()
    assert not errors, f"script errors on the page: {errors}"
