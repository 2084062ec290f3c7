"""Database access: one transaction per unit of work, on SQLite or PostgreSQL.

Statements are SQLAlchemy Core constructs, compiled once per dialect (``Q``) and run on
the driver connection directly: the hot path (collect) pays the driver's cost, not an
ORM's.

SQLite: one writer thread owns the only write connection. Units of work queue up; the
writer runs each in its own SAVEPOINT inside one transaction and commits the batch with
one fsync (group commit). A unit's caller is answered only after its batch is durable;
a unit that fails is rolled back to its savepoint and leaves no trace. Readers use their
own connections (WAL: readers never block the writer).

PostgreSQL: a pool of threads, each with its own psycopg connection; a unit of work is
one transaction on one of them. Concurrency control is the database's (row locks,
``FOR UPDATE``, ``SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from sqlalchemy.dialects import postgresql as pg_dialects
from sqlalchemy.dialects import sqlite as sqlite_dialects
from sqlalchemy.engine import make_url

from billhive.util import failpoints

log = logging.getLogger("billhive.db")
T = TypeVar("T")

_DIALECTS = {
    "sqlite": sqlite_dialects.dialect(paramstyle="named"),
    "postgresql": pg_dialects.psycopg.dialect(),
}


class Q:
    """A statement compiled once per dialect. Literal values become default params."""

    __slots__ = ("stmt", "_compiled")

    def __init__(self, stmt: Any):
        self.stmt = stmt
        self._compiled: dict[str, tuple[str, dict]] = {}

    def sql(self, dialect: str) -> tuple[str, dict]:
        c = self._compiled.get(dialect)
        if c is None:
            c = compile_stmt(self.stmt, dialect)
            self._compiled[dialect] = c
        return c


def compile_stmt(stmt: Any, dialect: str) -> tuple[str, dict]:
    compiled = stmt.compile(dialect=_DIALECTS[dialect], compile_kwargs={"render_postcompile": True})
    return compiled.string, dict(compiled.params)


class Tx:
    """One unit of work's view of its connection."""

    __slots__ = ("conn", "dialect", "cur")

    def __init__(self, conn: Any, dialect: str):
        self.conn = conn
        self.dialect = dialect
        self.cur = conn.cursor()

    def execute(self, stmt: Any, params: dict | None = None) -> Any:
        if isinstance(stmt, Q):
            sql, defaults = stmt.sql(self.dialect)
        else:
            sql, defaults = compile_stmt(stmt, self.dialect)
        if params:
            defaults = {**defaults, **params} if defaults else params
        cur = self.cur
        cur.execute(sql, defaults)
        return cur

    def executemany(self, stmt: Any, rows: list[dict]) -> None:
        """One statement over many parameter sets (bulk loads: psycopg pipelines them)."""
        if not rows:
            return
        sql, defaults = stmt.sql(self.dialect) if isinstance(stmt, Q) else compile_stmt(stmt, self.dialect)
        if not defaults.keys() <= rows[0].keys():  # values the statement carries itself (literals)
            rows = [{**defaults, **r} for r in rows]
        self.cur.executemany(sql, rows)

    def one(self, stmt: Any, params: dict | None = None) -> tuple | None:
        return self.execute(stmt, params).fetchone()

    def all(self, stmt: Any, params: dict | None = None) -> list[tuple]:
        return self.execute(stmt, params).fetchall()

    def scalar(self, stmt: Any, params: dict | None = None) -> Any:
        row = self.execute(stmt, params).fetchone()
        return row[0] if row else None

    def rowcount(self, stmt: Any, params: dict | None = None) -> int:
        return self.execute(stmt, params).rowcount

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def savepoint(self) -> "_Savepoint":
        """``with tx.savepoint():`` - a failure inside rolls back only what the block did."""
        return _Savepoint(self)


class _Savepoint:
    _n = 0

    def __init__(self, tx: Tx):
        self.tx = tx
        _Savepoint._n += 1
        self.name = f"sp{_Savepoint._n}"

    def __enter__(self) -> "_Savepoint":
        self.tx.cur.execute(f"SAVEPOINT {self.name}")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.tx.cur.execute(f"RELEASE SAVEPOINT {self.name}")
        else:
            self.tx.cur.execute(f"ROLLBACK TO SAVEPOINT {self.name}")
            self.tx.cur.execute(f"RELEASE SAVEPOINT {self.name}")
        return False


@dataclass
class _Job:
    fn: Callable[[Tx], Any]
    future: concurrent.futures.Future


class Database:
    """Runs units of work. ``write``/``read`` for async callers, ``*_sync`` for threads."""

    MAX_BATCH = 128

    def __init__(self, url: str, *, pool_size: int = 16, synchronous: str | None = None):
        self.url = url
        u = make_url(url)
        self.sa_url = u
        self.dialect = "sqlite" if u.get_backend_name() == "sqlite" else "postgresql"
        self._local = threading.local()
        self._closed = False
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        if self.dialect == "sqlite":
            self.path = u.database or ":memory:"
            if self.path == ":memory:":
                raise ValueError("billhive needs a file-backed SQLite database (WAL, several connections)")
            q = dict(u.query)
            self.synchronous = (synchronous or q.get("synchronous") or "FULL").upper()
            self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
            self._writer = threading.Thread(target=self._writer_loop, name="billhive-sqlite-writer", daemon=True)
            self._writer_ready = threading.Event()
            self._writer_error: BaseException | None = None
            self._writer.start()
            self._writer_ready.wait()
            if self._writer_error:
                raise self._writer_error
        else:
            self.conninfo = _pg_conninfo(u)
            self.synchronous = synchronous
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="billhive-pg")

    # ---- connections -------------------------------------------------------------------

    def _sqlite_connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA foreign_keys=OFF")
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _pg_connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.conninfo, autocommit=False)
        if self.synchronous:
            conn.execute(f"SET synchronous_commit = {self.synchronous}")
            conn.commit()
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _thread_conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._sqlite_connect() if self.dialect == "sqlite" else self._pg_connect()
            self._local.conn = conn
        return conn

    def _drop_thread_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - best effort
                pass

    # ---- SQLite writer (group commit) ----------------------------------------------------

    def _writer_loop(self) -> None:
        try:
            conn = self._sqlite_connect()
        except BaseException as exc:  # pragma: no cover - reported to the constructor
            self._writer_error = exc
            self._writer_ready.set()
            return
        self._writer_ready.set()
        q = self._queue
        while True:
            job = q.get()
            if job is None:
                break
            batch = [job]
            stop = False
            while len(batch) < self.MAX_BATCH:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
            if stop:
                break
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for j in live:
                j.future.set_exception(exc)
            return
        tx = Tx(conn, "sqlite")
        single = len(live) == 1
        for j in live:
            if not single:
                conn.execute("SAVEPOINT unit")
            try:
                result = j.fn(tx)
            except BaseException as exc:  # the unit fails alone
                if single:
                    conn.execute("ROLLBACK")
                    j.future.set_exception(exc)
                    return
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                outcomes.append((False, exc))
            else:
                if not single:
                    conn.execute("RELEASE unit")
                outcomes.append((True, result))
        failpoints.hit("db.before_commit")
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for j in live:
                j.future.set_exception(exc)
            return
        for j, (ok, value) in zip(live, outcomes):
            if ok:
                j.future.set_result(value)
            else:
                j.future.set_exception(value)

    # ---- public API -----------------------------------------------------------------------

    def submit_write(self, fn: Callable[[Tx], T]) -> concurrent.futures.Future:
        if self._closed:
            raise RuntimeError("database is closed")
        if self.dialect == "sqlite":
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._queue.put(_Job(fn, fut))
            return fut
        return self._pool.submit(self._pg_unit, fn, False)

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Run fn(tx) in one write transaction and return its result once durable."""
        return self.submit_write(fn).result()

    async def write(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.wrap_future(self.submit_write(fn))

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        """Run fn(tx) on a consistent snapshot (no writes)."""
        if self.dialect == "sqlite":
            conn = self._thread_conn()
            conn.execute("BEGIN")
            try:
                return fn(Tx(conn, "sqlite"))
            finally:
                conn.execute("COMMIT")
        return self._pg_unit(fn, True)

    async def read(self, fn: Callable[[Tx], T]) -> T:
        if self.dialect == "sqlite":
            # Indexed SQLite reads take microseconds: run them inline rather than pay a
            # thread hand-off. The event loop thread keeps its own read connection.
            return self.read_sync(fn)
        return await asyncio.wrap_future(self._pool.submit(self._pg_unit, fn, True))

    def _pg_unit(self, fn: Callable[[Tx], T], read_only: bool) -> T:
        conn = self._thread_conn()
        if conn.closed or conn.broken:
            # the server went away since this thread last ran: start over on a new one
            self._drop_thread_conn()
            conn = self._thread_conn()
        try:
            result = fn(Tx(conn, "postgresql"))
            if not read_only:
                failpoints.hit("db.before_commit")
            conn.commit()
            return result
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                self._drop_thread_conn()
            raise

    def raw_connection(self) -> Any:
        """A fresh autocommit driver connection (for migrations' helpers and tests)."""
        if self.dialect == "sqlite":
            return self._sqlite_connect()
        import psycopg

        return psycopg.connect(self.conninfo, autocommit=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.dialect == "sqlite":
            self._queue.put(None)
            self._writer.join(timeout=10)
        else:
            self._pool.shutdown(wait=True)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except Exception:  # pragma: no cover
                pass


def _pg_conninfo(u: Any) -> str:
    parts = []
    if u.host:
        parts.append(f"host={u.host}")
    if u.port:
        parts.append(f"port={u.port}")
    if u.username:
        parts.append(f"user={u.username}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.database:
        parts.append(f"dbname={u.database}")
    for k, v in u.query.items():
        if k != "synchronous":
            parts.append(f"{k}={v}")
    return " ".join(parts)


def wall_clock() -> int:
    """Real time, for leases and expiries that are not part of the billing domain."""
    return int(time.time())
