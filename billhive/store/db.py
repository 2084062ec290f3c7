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
import contextlib
import logging
import os
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

    __slots__ = ("conn", "dialect", "cur", "db_key")

    def __init__(self, conn: Any, dialect: str, db_key: str = ""):
        self.conn = conn
        self.dialect = dialect
        self.cur = conn.cursor()
        self.db_key = db_key  # which database (for per-process caches keyed by site)

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

    @property
    def pipelined(self) -> bool:
        """Inside ``pipeline()`` on PostgreSQL: results (rowcount) arrive only when it ends."""
        return self.dialect == "postgresql" and self.conn._pipeline is not None

    def pipeline(self) -> Any:
        """``with tx.pipeline():`` - on PostgreSQL, statements inside are sent without waiting
        for each answer (one round trip for the lot); errors surface when the block ends.
        Inside, do not rely on a statement's result (rowcount) before the block ends. On SQLite
        (in-process) there is nothing to save and the block runs as usual."""
        if self.dialect == "postgresql" and not self.conn._pipeline:
            return self.conn.pipeline()
        return contextlib.nullcontext()

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
    """A unit of work for the SQLite writer and how to answer it: a concurrent future (sync
    callers), or an asyncio future of a loop (answered in one hop per batch and loop)."""

    fn: Callable[[Tx], Any]
    future: concurrent.futures.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    afut: asyncio.Future | None = None

    def start(self) -> bool:
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        return not self.afut.cancelled()  # type: ignore[union-attr]


def _deliver(items: list[tuple[asyncio.Future, bool, Any]]) -> None:
    for afut, ok, value in items:
        if afut.cancelled():
            continue
        if ok:
            afut.set_result(value)
        else:
            afut.set_exception(value)


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
        self.stats = {"batches": 0, "units": 0}  # SQLite group commit: how well units batch
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
            self._lane_queue: queue.SimpleQueue | None = None
            self._lane_thread: threading.Thread | None = None
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="billhive-pg")

    # ---- connections -------------------------------------------------------------------

    def _sqlite_connect(self, *, shared: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA cache_size=-65536")
        # reads of a large database go through the OS page cache without a copy per page
        conn.execute(f"PRAGMA mmap_size={int(os.environ.get('BILLHIVE_SQLITE_MMAP', 1 << 30))}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA journal_size_limit=67108864")
        conn.execute("PRAGMA foreign_keys=OFF")
        if shared:  # closed by close(); a thread that closes its own connection passes shared=False
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
            conn = self._sqlite_connect(shared=False)  # closed by this thread when it stops
        except BaseException as exc:  # pragma: no cover - reported to the constructor
            self._writer_error = exc
            self._writer_ready.set()
            return
        self._writer_ready.set()
        if os.environ.get("BILLHIVE_NO_CHECKPOINTER") != "1":
            # Checkpoints copy the WAL into the database file (and fsync it). Left to the
            # committing connection they stall every ~1000 pages of commits; a separate thread
            # does them instead, off the write path.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpoint_stop = threading.Event()
            self._checkpoint_thread = threading.Thread(target=self._checkpointer, name="billhive-sqlite-checkpoint",
                                                       daemon=True)
            self._checkpoint_thread.start()
        while (batch := self._take_batch(self._queue)) is not None:
            self._run_batch(conn, batch)
        conn.close()

    def _take_batch(self, q: queue.SimpleQueue) -> list[_Job] | None:
        """Wait for a unit, then take whatever else is queued (up to MAX_BATCH). None: stop
        (the stop mark is put back for the next call when it ends a batch)."""
        job = q.get()
        if job is None:
            return None
        batch = [job]
        while len(batch) < self.MAX_BATCH:
            try:
                nxt = q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                q.put(None)
                break
            batch.append(nxt)
        return batch

    def _checkpointer(self) -> None:
        # owns its connection: closing it from another thread mid-call would crash sqlite3
        conn = self._sqlite_connect(shared=False)
        try:
            while not self._checkpoint_stop.wait(0.5):
                try:
                    # PASSIVE never blocks the writer; once everything is copied back the next
                    # write transaction starts the WAL over (journal_size_limit trims the file)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # pragma: no cover - retried on the next tick
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        self.stats["batches"] += 1
        self.stats["units"] += len(batch)
        live = [j for j in batch if j.start()]
        if not live:
            return
        sqlite = self.dialect == "sqlite"
        try:
            if sqlite:
                conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            self._answer([(j, False, exc) for j in live])
            return
        tx = Tx(conn, self.dialect, self.url)
        single = len(live) == 1
        outcomes: list[tuple[_Job, bool, Any]] = []
        for j in live:
            if not single:
                conn.execute("SAVEPOINT unit")
            try:
                result = j.fn(tx)
            except BaseException as exc:  # the unit fails alone
                if single:
                    conn.execute("ROLLBACK") if sqlite else conn.rollback()
                    self._answer([(j, False, exc)])
                    return
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                outcomes.append((j, False, exc))
            else:
                if not single:
                    conn.execute("RELEASE unit")
                outcomes.append((j, True, result))
        failpoints.hit("db.before_commit")
        try:
            conn.execute("COMMIT") if sqlite else conn.commit()
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK") if sqlite else conn.rollback()
            except Exception:
                pass
            self._answer([(j, False, exc) for j in live])
            return
        self._answer(outcomes)

    @staticmethod
    def _answer(outcomes: list[tuple[_Job, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for j, ok, value in outcomes:
            if j.future is not None:
                if ok:
                    j.future.set_result(value)
                else:
                    j.future.set_exception(value)
            else:
                by_loop.setdefault(j.loop, []).append((j.afut, ok, value))  # type: ignore[arg-type]
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    # ---- PostgreSQL lane: group commit for units that serialize on one row -------------------

    def _lane_loop(self) -> None:
        """Like the SQLite writer, on one PostgreSQL connection: units that all lock the same
        hot row (a site's invoice number sequence) run in batches, each in a savepoint, and
        share one commit - the row is locked once per batch instead of once per unit."""
        conn = self._pg_connect()
        while (batch := self._take_batch(self._lane_queue)) is not None:  # type: ignore[arg-type]
            if conn.closed or conn.broken:
                conn = self._pg_connect()
            self._run_batch(conn, batch)

    def _lane(self) -> queue.SimpleQueue:
        with self._conns_lock:
            if self._lane_queue is None:
                self._lane_queue = queue.SimpleQueue()
                self._lane_thread = threading.Thread(target=self._lane_loop, name="billhive-pg-lane", daemon=True)
                self._lane_thread.start()
        return self._lane_queue

    # ---- public API -----------------------------------------------------------------------

    def submit_write(self, fn: Callable[[Tx], T]) -> concurrent.futures.Future:
        if self._closed:
            raise RuntimeError("database is closed")
        if self.dialect == "sqlite":
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._queue.put(_Job(fn, future=fut))
            return fut
        return self._pool.submit(self._pg_unit, fn, False)

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Run fn(tx) in one write transaction and return its result once durable."""
        return self.submit_write(fn).result()

    async def write(self, fn: Callable[[Tx], T], *, lane: bool = False) -> T:
        """Run fn(tx) in one durable write transaction.

        lane: the unit locks a hot row many units share (a site's invoice number sequence);
        on PostgreSQL such units are group-committed on one connection (see _lane_loop). On
        SQLite every write is group-committed anyway.
        """
        if self._closed:
            raise RuntimeError("database is closed")
        if self.dialect == "sqlite" or lane:
            loop = asyncio.get_running_loop()
            afut = loop.create_future()
            (self._queue if self.dialect == "sqlite" else self._lane()).put(_Job(fn, loop=loop, afut=afut))
            try:
                return await afut
            except Exception as exc:
                if self.dialect == "sqlite" or not _lock_conflict(exc):
                    raise
                # a deadlock with a unit outside the lane (PostgreSQL chose this one): run it alone
                log.info("lane unit hit %s; retrying it on its own", type(exc).__name__)
        return await asyncio.wrap_future(self.submit_write(fn))

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        """Run fn(tx) on a consistent snapshot (no writes)."""
        if self.dialect == "sqlite":
            conn = self._thread_conn()
            conn.execute("BEGIN")
            try:
                return fn(Tx(conn, "sqlite", self.url))
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
            result = fn(Tx(conn, "postgresql", self.url))
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
            stop = getattr(self, "_checkpoint_stop", None)
            if stop is not None:
                stop.set()
                self._checkpoint_thread.join(timeout=10)
        else:
            if self._lane_queue is not None:
                self._lane_queue.put(None)
                self._lane_thread.join(timeout=10)  # type: ignore[union-attr]
            self._pool.shutdown(wait=True)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except Exception:  # pragma: no cover
                pass


def _lock_conflict(exc: BaseException) -> bool:
    try:
        from psycopg import errors
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable))


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
