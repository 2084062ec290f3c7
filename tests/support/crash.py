"""What the crash tests (tests/crash/) share: a site on a database of the test's own, opened beside
the billhive processes the test starts and kills (``Handle``, ``open_site``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from billhive import sites
from billhive.runtime import App, Config
from billhive.store import migrate
from billhive.work.context import Ctx, Origin


@dataclass
class Handle:
    """A site and an ``App`` of the test's own on the database the server processes share."""
    name: str
    pk: int
    key: str
    app: App

    def ctx(self) -> Ctx:
        return Ctx(self.app, self.pk, Origin(user="crash-test"))


def open_site(url: str, prefix: str = "crash", settings: Mapping[str, str] | None = None) -> Handle:
    """Migrate ``url``, open an ``App`` on it and create a test site (with ``settings``)."""
    migrate.upgrade(url)
    app = App.open(Config(database_url=url))
    name = f"{prefix}{uuid.uuid4().hex[:8]}-test"
    key = "test_" + uuid.uuid4().hex
    site, _ = app.db.write_sync(lambda tx: sites.create(tx, name, now=int(time.time()), api_key=key))
    if settings:
        app.db.write_sync(lambda tx: sites.set_settings(tx, name, dict(settings), int(time.time())))
    return Handle(name, site.pk, key, app)
