"""The session's billhive of one test worker and one backend (the ``app`` and ``server`` fixtures): a
database, the ``App`` on it and a ``LiveServer`` in front, changed for new ones between test modules
once the database holds ``SITES_PER_DATABASE`` sites.

Why: the server's background loops go over every site of its database each pass (the scheduler
every 0.2 s, payment recovery every 30 s), and every test makes sites of its own. In one database
for the whole run a worker gathered ~900 sites per backend; beside 1,000 sites a scheduler pass took
~0.3 s (SQLite) to ~1.2 s (PostgreSQL) while it opened a write transaction per site (it now reads
which sites have a job due first), and the median HTTP test ran twice as long as beside a few. A test sees the same
billhive it always saw: one server for its module's tests, other tests' sites beside its own, the
same intervals and settings; only the number of those other sites stays small.

Site pks go on across the databases of a worker (SQLite from 1, PostgreSQL from ``PG_FIRST_SITE_PK``):
a site's pk never names another site of the same worker, in any database, so fakes shared by the
whole worker (localstripe tags each PaymentIntent with the site's pk) tell every site apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy

from billhive.runtime import App, Config
from tests.support.server import LiveServer

SITES_PER_DATABASE = 100
# The PostgreSQL databases' sites are numbered from here, the SQLite databases' from 1
PG_FIRST_SITE_PK = 1_000_000


def sites_from(database_url: str, first: int) -> None:
    """The next site made in this (migrated, empty or not) database gets pk ``first`` or more."""
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as conn:
        if database_url.startswith("postgresql"):
            conn.execute(sqlalchemy.text(
                "SELECT setval(pg_get_serial_sequence('sites', 'pk'), :first, false)"
                " WHERE (SELECT coalesce(max(pk), 0) FROM sites) < :first"), {"first": first})
        elif first > 1 and conn.scalar(sqlalchemy.text("SELECT coalesce(max(pk), 0) FROM sites")) < first - 1:
            # SQLite numbers a row one past the largest pk: a site at first - 1, with no keys (no request
            # can name it) and no settings, holds the numbering up
            conn.execute(sqlalchemy.text(
                "INSERT INTO sites (pk, name, is_test, currency_code, settings, invoice_next_number, created_at)"
                " VALUES (:pk, 'site-pk-floor', 0, 'USD', '{}', 1, :now)"), {"pk": first - 1, "now": int(time.time())})
    engine.dispose()


class SessionStores:
    """``new_database()`` makes a migrated database and returns its URL; ``drop_database(url)`` gets
    rid of one no test uses any more."""

    def __init__(self, new_database: Callable[[], str], drop_database: Callable[[str], None], first_pk: int):
        self._new_database = new_database
        self._drop_database = drop_database
        self._next_pk = first_pk
        self._server: LiveServer | None = None

    def server(self) -> LiveServer:
        """The server for the test module about to start (a new one when the last database is full).
        Called between modules only: no fixture of an earlier module still uses a retired server."""
        if self._server is not None and self._sites() >= SITES_PER_DATABASE:
            self._retire()
        if self._server is None:
            url = self._new_database()
            sites_from(url, self._next_pk)
            app = App.open(Config(database_url=url, scheduler_interval=0.2, delivery_interval=0.1))
            self._server = LiveServer(app)
        return self._server

    def _sites(self) -> int:
        assert self._server is not None
        return self._server.app.db.read_sync(lambda tx: tx.scalar(sqlalchemy.text("SELECT count(*) FROM sites")))

    def _retire(self) -> None:
        assert self._server is not None
        server, self._server = self._server, None
        app = server.app
        last = app.db.read_sync(lambda tx: tx.scalar(sqlalchemy.text("SELECT coalesce(max(pk), 0) FROM sites")))
        self._next_pk = max(self._next_pk, last + 1)
        server.stop()
        app.close()
        self._drop_database(app.config.database_url)

    def close(self) -> None:
        if self._server is not None:
            self._retire()
