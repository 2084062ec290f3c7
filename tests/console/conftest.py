"""Fixtures for the admin console: the shared server with admin tokens set (for this test only)
and an HTTP client signed in with one of them."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

from tests.support.delivery import receiver  # noqa: F401 (fixture)

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
VIEWER_TOKEN = "viewer-token-for-tests-0123456789"


@pytest.fixture
def console_on(app, monkeypatch):
    monkeypatch.setattr(app.config, "admin_token", ADMIN_TOKEN)
    monkeypatch.setattr(app.config, "admin_readonly_token", VIEWER_TOKEN)


def signed_in(server, token: str) -> httpx.Client:
    client = httpx.Client(base_url=server.base_url, follow_redirects=False, timeout=30)
    r = client.post("/admin/signin", data={"token": token})
    assert r.status_code == 303, r.text
    return client


@pytest.fixture
def admin(server, console_on):
    c = signed_in(server, ADMIN_TOKEN)
    yield c
    c.close()


@pytest.fixture
def viewer(server, console_on):
    c = signed_in(server, VIEWER_TOKEN)
    yield c
    c.close()


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


CHROMIUM = os.environ.get("BILLHIVE_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Chromium from Debian's package, driven by Playwright (once per module: Playwright's sync API
    keeps an event loop running in the test thread while it lives, which would break every later
    test of the worker that calls asyncio.run). Missing: the
    browser tests skip - unless BILLHIVE_REQUIRE_BROWSER=1 (.ci/run), then they fail."""
    if not Path(CHROMIUM).exists() or sync_playwright is None:
        if os.environ.get("BILLHIVE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser tests need Chromium at {CHROMIUM} and the playwright package")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium) or no playwright")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def browser_page(request, browser, tmp_path):
    """A fresh browser context and page; when the test fails, a screenshot of the page is kept
    (tmp_path/failure.png, and under $BILLHIVE_SCREENSHOT_DIR when set) and named in the report."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            keep = os.environ.get("BILLHIVE_SCREENSHOT_DIR")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(keep) / f"{request.node.name}.png")
            report.sections.append(("screenshot", f"{shot} (page {page.url})"))
        except Exception as exc:  # the page may be gone: the failure itself is what matters
            report.sections.append(("screenshot", f"none: {exc}"))
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.report_call = report
    return report
