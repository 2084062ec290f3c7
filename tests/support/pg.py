"""PostgreSQL databases of a test's own (``fresh_pg_url`` and the tests that need a database no other
test's sites are in), made fast: one test worker's ``OwnDatabases``.

- Each is a copy (``CREATE DATABASE ... TEMPLATE``) of a template this worker migrated once, not a new
  database migrated again: ~0.4 s instead of ~1.5 s of Alembic per database. A test that migrates its
  database itself (``migrate.upgrade``) finds it at the head revision, as after its own migration.
- The next one is copied in the background while the test that took the last one runs.
- Dropping one happens in the background too: ``DROP DATABASE`` waits for a checkpoint (~1 s).

The background thread's statements count as a test's for ``@pytest.mark.alone`` (``guard``): an
``alone`` test measuring latency never shares the server with a copy or a checkpoint of theirs.

The template is made in the caller's thread (Alembic keeps its context in module globals: it must
not run in two threads at once); only CREATE and DROP statements run in the background thread, on
a connection of its own to the server's maintenance database.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
from sqlalchemy.engine import URL, make_url

from billhive.store import migrate


def connect(u: URL, dbname: str | None = None) -> psycopg.Connection:
    """An autocommit connection to the server of ``u`` (to ``dbname``, default ``u``'s database)."""
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                           dbname=dbname or u.database, autocommit=True, connect_timeout=5)


class OwnDatabases:
    def __init__(self, admin_url: str,
                 guard: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext):
        self._url = make_url(admin_url)
        self._guard = guard
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-own-databases")
        self._local = threading.local()
        self._template: str | None = None
        self._spare: Future[str] | None = None
        self._lock = threading.Lock()

    def url(self, name: str) -> str:
        return self._url.set(database=name).render_as_string(hide_password=False)

    def _admin(self) -> psycopg.Connection:
        if getattr(self._local, "conn", None) is None:
            self._local.conn = connect(self._url)
        return self._local.conn

    def _copy(self) -> str:
        name = f"billhive_own_{uuid.uuid4().hex[:8]}"
        with self._guard():
            self._admin().execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        return name

    def _drop(self, name: str) -> None:
        with self._guard():
            self._admin().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def take(self) -> str:
        """The URL of a new database at the head revision, no rows but Alembic's."""
        with self._lock:
            if self._template is None:
                name = f"billhive_template_{uuid.uuid4().hex[:8]}"
                with connect(self._url) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                migrate.upgrade(self.url(name))  # its engine is gone afterwards: no session left on it
                self._template = name
            spare, self._spare = self._spare or self._pool.submit(self._copy), None
            name = spare.result()
            self._spare = self._pool.submit(self._copy)
        return self.url(name)

    def give_back(self, url: str) -> None:
        """Drop the database (in the background; ``close`` waits for it)."""
        self._pool.submit(self._drop, make_url(url).database)

    def close(self) -> None:
        with self._lock:
            if self._spare is not None:
                self._pool.submit(self._drop, self._spare.result())
            if self._template is not None:
                self._pool.submit(self._drop, self._template)

            def close_connection() -> None:
                if getattr(self._local, "conn", None) is not None:
                    self._local.conn.close()
            self._pool.submit(close_connection)
            self._pool.shutdown(wait=True)
