"""Fixtures for the admin console: the shared server with admin tokens set (for this test only)
and an HTTP client signed in with one of them."""

from __future__ import annotations

import re

import httpx
import pytest

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
