"""Fixtures of the console tests: headless Chromium (Debian's, driven by Playwright; nothing is
downloaded) and a screenshot of the page of each browser test that fails, in test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one module. Not the session: Playwright's sync API runs an event
    loop on this thread while it is open, and the tests after it call asyncio.run."""
    if not CHROMIUM.is_file():
        pytest.fail("Debian's chromium is missing (/usr/bin/chromium): apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context's page; its screenshot is saved when the test fails."""
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        opened.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    context.close()
