"""Database access: one transaction per unit of work, on SQLite or PostgreSQL.

``Database(url, ...)`` opens the store the URL names; everything else in billhive sees it
through the ``Database`` interface (``write``/``read`` and their ``*_sync`` forms, ``health``,
``dead``, ``close``...) and gives it units of work: functions of a ``Tx`` (``billhive.store.tx``,
with ``Q`` for statements compiled once). Where things are:

- ``billhive.store.tx``: ``Tx``, ``Q`` - what a unit of work sees;
- ``billhive.store.units``: ``Store``, what both stores share - deadlines, answers, the group
  commit batch runner, health probes, a thread's death;
- ``billhive.store.sqlite``: ``SqliteStore`` - writer thread (group commit), read threads,
  inline reads, WAL checkpointer, mmap;
- ``billhive.store.postgres``: ``PostgresStore`` - thread pool, the lane, reconnecting.

Failure safety - every unit of work, on both stores:

- **Deadline.** A unit has ``unit_timeout`` seconds from submission. One still queued at its
  deadline never runs: it is dropped and its caller gets ``StoreTimeout`` (nothing was done).
  Once started, its statements are bounded by ``statement_timeout`` (SQLite: a progress handler
  stops the unit once it has run that long inside SQLite; PostgreSQL: the session's
  ``statement_timeout``); its commit is never interrupted. A caller waits at most the deadline
  plus the statement timeout plus ``commit_grace``: a store that has still not answered by then
  (a hung disk or network) gets the caller ``StoreTimeout(committed=None)`` - the unit may yet
  commit; the answer says so.
- **Errors.** Driver errors that are the store's condition, not the request's, become
  ``billhive.errors.StoreError``s (HTTP 503): ``StoreUnavailable`` (connection lost or refused),
  ``StoreNotWritable`` (disk full, read-only), ``StoreTimeout`` (deadline, statement timeout,
  lock conflicts). Each carries ``committed``: False when the unit certainly left nothing behind,
  None when the connection was lost during its commit (or the unit did not answer in time).
- **Threads survive.** Every thread (SQLite writer, checkpointer and readers; PostgreSQL lane
  and pool) contains its errors per unit or batch, reopens a broken connection (with back-off
  while the server refuses) and goes on; units in flight on a lost connection fail with an
  error (or, when they certainly did not commit, run once more on a fresh connection). A thread
  that dies all the same marks the store dead: every waiting and later unit fails at once, and
  ``on_fatal`` is called (the server then exits non-zero, for its supervisor to restart it).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import make_url

from billhive.store import postgres, sqlite
from billhive.store.tx import Q, Tx, compile_stmt
from billhive.store.units import Store, StoreLimits

__all__ = ["Database", "Q", "StoreLimits", "Tx", "check_writable", "compile_stmt", "is_unique_violation",
           "wall_clock"]


class Database(Store):
    """A store: ``Database(url, pool_size=16, synchronous=None, limits=None)`` is a
    ``SqliteDatabase`` or a ``PostgresDatabase``, as the URL says.

    - ``await write(fn, lane=False)`` / ``write_sync(fn)`` / ``submit_write(fn)``: run ``fn(tx)``
      in one durable write transaction (``lane``: PostgreSQL's group commit for units that lock
      a site's invoice number sequence; True or the site's pk, which picks one of its lanes);
    - ``await read(fn)`` / ``read_sync(fn)``: run ``fn(tx)`` on a consistent snapshot;
    - ``await health()``, ``dead``, ``on_fatal``, ``stats``, ``close()``, ``raw_connection()``;
    - ``dialect`` ("sqlite" or "postgresql"), ``url``, ``limits``, ``synchronous``.
    """

    def __new__(cls, url: str, **options: Any) -> Database:
        if cls is Database:
            cls = SqliteDatabase if make_url(url).get_backend_name() == "sqlite" else PostgresDatabase
        return object.__new__(cls)


class SqliteDatabase(sqlite.SqliteStore, Database):
    """A SQLite file (``billhive.store.sqlite``)."""


class PostgresDatabase(postgres.PostgresStore, Database):
    """A PostgreSQL database (``billhive.store.postgres``)."""


def check_writable(url: str) -> None:
    """Raise StoreNotWritable / StoreUnavailable, naming the file (or database), unless the
    database can take a write now. For ``billhive serve`` and ``worker`` before they start."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        postgres.check_writable(u)
    elif u.database and u.database != ":memory:":  # (Database refuses :memory:, with its own message)
        sqlite.check_writable(u.database)


def is_unique_violation(exc: BaseException) -> bool:
    """Did a UNIQUE (or primary key) constraint fail? Two requests creating the same id at once."""
    return sqlite.is_unique_violation(exc) or postgres.is_unique_violation(exc)


def wall_clock() -> int:
    """Real time, for leases and expiries that are not part of the billing domain."""
    return int(time.time())
