"""Fixtures for delivery tests: a webhook receiver, an SMTP server, a site on the time machine."""

from __future__ import annotations

import pytest

from tests.support.delivery import GENESIS, receiver, silent, smtp  # noqa: F401 (fixtures)


@pytest.fixture
def tm_site(site):
    """A test site whose clock is frozen at GENESIS (moved only by travel())."""
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


@pytest.fixture
def short_lease(app):
    """Claims expire right after the site's webhook timeout (crash tests)."""
    old = app.config.delivery_lease_grace
    app.config.delivery_lease_grace = 0
    yield
    app.config.delivery_lease_grace = old
