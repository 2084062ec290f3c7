"""Database access: one transaction per unit of work, on SQLite or PostgreSQL.

Statements are SQLAlchemy Core constructs, compiled once per dialect (``Q``) and run on
the driver connection directly: the hot path (collect) pays the driver's cost, not an
ORM's.

SQLite (``SqliteDatabase``): one writer thread owns the only write connection. Units of
work queue up; the writer runs each in its own SAVEPOINT inside one transaction and commits
the batch with one fsync (group commit). A unit's caller is answered only after its batch is
durable; a unit that fails is rolled back to its savepoint and leaves no trace. Reads run on a
small pool of read threads, each with its own connection (WAL: readers never block the
writer); a read may start on the event loop's own connection, but only for a few
milliseconds (``inline_read_budget``) - past that it is stopped and moved to a read thread, so
one heavy read never stalls the event loop.

PostgreSQL (``PostgresDatabase``): a pool of threads, each with its own psycopg connection; a
unit of work is one transaction on one of them. Concurrency control is the database's (row
locks, ``FOR UPDATE``, ``SKIP LOCKED``). Units that lock one hot row may share a "lane" (one
connection, group commit, like the SQLite writer).

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

import asyncio
import bisect
import concurrent.futures
import contextlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from sqlalchemy.dialects import postgresql as pg_dialects
from sqlalchemy.dialects import sqlite as sqlite_dialects
from sqlalchemy.engine import make_url

from billhive.errors import StoreError, StoreNotWritable, StoreTimeout, StoreUnavailable
from billhive.util import failpoints

log = logging.getLogger("billhive.db")
# group-commit batch sizes (units), the upper bounds of /metrics' histogram buckets (MAX_BATCH is 128)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
T = TypeVar("T")

_DIALECTS = {
    "sqlite": sqlite_dialects.dialect(paramstyle="named"),
    "postgresql": pg_dialects.psycopg.dialect(),
}

PROBE_TIMEOUT = 2.0  # deadline of the health probes
WRITE_ERROR_HOLD = 5.0  # a write that failed for lack of space keeps the store "not writable" this long


@dataclass(frozen=True)
class StoreLimits:
    """How long units of work may take (``billhive.runtime.Config`` fills it from the environment)."""

    unit_timeout: float = 10.0  # seconds from submission: waiting for its turn, then running
    statement_timeout: float = 5.0  # seconds a statement may run (SQLite: the unit's time in SQLite)
    read_threads: int = 4  # SQLite: threads (each with a connection) that serve reads
    read_nice: int = 10  # SQLite: how much lower the read threads' CPU priority is (Linux; 0: the same)
    inline_read_budget: float = 0.002  # SQLite: seconds a read may run on the event loop (0: never)
    mmap_size: int = 1 << 30  # SQLite: bytes of the file read through mmap (large databases: no copy per page)
    checkpointer: bool = True  # SQLite: WAL checkpoints on their own thread, off the write path
    # seconds a caller waits past its unit's deadline, beyond the statement timeout, for the
    # answer of a unit that has started (its commit): then it gives up ("outcome unknown")
    commit_grace: float = 5.0

    def __post_init__(self) -> None:
        if not (self.unit_timeout > 0 and self.statement_timeout > 0 and self.read_threads >= 1
                and self.inline_read_budget >= 0 and self.commit_grace >= 0):
            raise ValueError(f"store limits out of range: {self}")


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


# ---- units of work and their answers ------------------------------------------------------------

class _Job:
    """A unit of work and how to answer it: a concurrent future (sync callers), or an asyncio
    future of a loop (answered in one hop per batch and loop).

    ``claim()`` decides, exactly once, between the thread that would start the unit and a caller
    that gives up waiting: whoever claims first wins, so a unit its caller abandoned never runs.
    """

    __slots__ = ("fn", "deadline", "future", "loop", "afut", "timer", "_gate", "grace")

    def __init__(self, fn: Callable[[Tx], Any], deadline: float, *, future: concurrent.futures.Future | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, afut: asyncio.Future | None = None):
        self.fn = fn
        self.deadline = deadline  # time.monotonic() by which the unit must have started
        self.future = future
        self.loop = loop
        self.afut = afut
        self.timer: asyncio.TimerHandle | None = None
        self._gate = threading.Lock()
        self.grace = 0.0  # how long its caller waits past the deadline once the unit runs

    def claim(self) -> bool:
        return self._gate.acquire(blocking=False)


def _answer(outcomes: list[tuple[_Job, bool, Any]]) -> None:
    """Answer units from a store thread: sync futures now, async ones in one hop per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for j, ok, value in outcomes:
        if j.future is not None:
            if j.future.done():
                continue
            if ok:
                j.future.set_result(value)
            else:
                j.future.set_exception(value)
        else:
            by_loop.setdefault(j.loop, []).append((j, ok, value))  # type: ignore[arg-type]
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _deliver(items: list[tuple[_Job, bool, Any]]) -> None:
    for j, ok, value in items:
        if j.timer is not None:
            j.timer.cancel()
        afut = j.afut
        if afut.done():  # type: ignore[union-attr]
            continue  # the caller gave up (its deadline passed) or was cancelled
        if ok:
            afut.set_result(value)  # type: ignore[union-attr]
        else:
            afut.set_exception(value)  # type: ignore[union-attr]


def _expired(j: _Job) -> StoreTimeout:
    return StoreTimeout("The request could not be processed in time: the database is busy. Nothing was changed; "
                        "retry later.")


def _on_deadline(j: _Job, running: bool = False) -> None:
    """On the caller's loop at the unit's deadline (and once more, ``grace`` later, if it runs)."""
    afut = j.afut
    if afut is None or afut.done():
        return
    if j.claim():  # still queued: it will never run
        afut.set_exception(_expired(j))
    elif not running:  # it runs: give it time to finish its statements and commit
        j.timer = j.loop.call_later(j.grace, _on_deadline, j, True)  # type: ignore[union-attr]
    else:
        afut.set_exception(StoreTimeout(
            "The database did not answer in time. The request may or may not have been applied: check before "
            "retrying it (or retry with the same idempotency key).", committed=None))


class _Backoff:
    """After a failed (re)connection, further attempts wait a little longer each time (0.1 s
    doubling to 2 s); meanwhile units fail at once instead of queueing for a dead server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures = 0
        self._next_at = 0.0
        self.error: str | None = None

    def check(self) -> None:
        if self._failures and time.monotonic() < self._next_at:
            raise StoreUnavailable(f"The database is unreachable ({self.error}). Nothing was changed; retry later.")

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            self._next_at = time.monotonic() + min(2.0, 0.1 * 2 ** (self._failures - 1))
            self.error = _one_line(exc)

    def succeeded(self) -> None:
        if self._failures:
            log.info("database connection re-established after %d failed attempt(s)", self._failures)
            self._failures = 0
            self.error = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class _SqliteConnection(sqlite3.Connection):
    """A sqlite3 connection that carries its statement budget (and whether to reopen it)."""

    budget: "_Budget"
    broken = False


class _Budget:
    """A SQLite progress handler: stops the running statement once ``deadline`` has passed."""

    __slots__ = ("deadline", "tripped")

    def __init__(self) -> None:
        self.deadline = math.inf
        self.tripped = False

    def __call__(self, _now: Callable[[], float] = time.monotonic) -> int:
        if _now() > self.deadline:
            self.tripped = True
            return 1
        return 0

    def arm(self, deadline: float) -> None:
        self.deadline = deadline
        self.tripped = False

    def disarm(self) -> None:
        self.deadline = math.inf


# ---- the store ------------------------------------------------------------------------------------

class Database:
    """Runs units of work. ``write``/``read`` for async callers, ``*_sync`` for threads.

    ``Database(url)`` makes a ``SqliteDatabase`` or a ``PostgresDatabase``, as the URL says.
    """

    MAX_BATCH = 128
    dialect: str

    def __new__(cls, url: str, **kwargs: Any) -> "Database":
        if cls is Database:
            cls = SqliteDatabase if make_url(url).get_backend_name() == "sqlite" else PostgresDatabase
        return object.__new__(cls)

    def __init__(self, url: str, *, pool_size: int = 16, synchronous: str | None = None,
                 limits: StoreLimits | None = None):
        self.url = url
        self.sa_url = make_url(url)
        self.limits = limits or StoreLimits()
        self._local = threading.local()
        self._closed = False
        self._dead: str | None = None  # why a store thread stopped for good
        self.on_fatal: Callable[[str], None] | None = None  # called (from any thread) when the store is dead
        self.stats = {"batches": 0, "units": 0}  # group commit: how well units batch
        # group-commit batches by their number of units: counts per BATCH_SIZE_BUCKETS bound (/metrics)
        self.batch_sizes = [0] * len(BATCH_SIZE_BUCKETS)
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._write_error: tuple[float, str] | None = None  # (when, why) a write last failed for lack of space
        self._probe: asyncio.Future | None = None
        self._probe_at = -math.inf
        self._probe_result: dict = {}

    # ---- public API ---------------------------------------------------------------------------

    async def write(self, fn: Callable[[Tx], T], *, lane: bool = False) -> T:
        """Run fn(tx) in one durable write transaction.

        lane: the unit locks a hot row many units share (a site's invoice number sequence);
        on PostgreSQL such units are group-committed on one connection (see _lane_loop). On
        SQLite every write is group-committed anyway.
        """
        return await self._run(fn, self._put_write)

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Run fn(tx) in one write transaction and return its result once durable."""
        return self._run_sync(fn, self._put_write)

    def submit_write(self, fn: Callable[[Tx], T]) -> concurrent.futures.Future:
        job = self._job(fn, future=concurrent.futures.Future())
        self._put_write(job)
        return job.future  # type: ignore[return-value]

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run fn(tx) on a consistent snapshot (no writes), off the event loop."""
        return await self._run(fn, self._put_read)

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        """Run fn(tx) on a consistent snapshot (no writes), on the calling thread."""
        raise NotImplementedError

    def queue_depth(self) -> int:
        """Units of work waiting for the writer (SQLite) or the group-commit lane (PostgreSQL)."""
        return 0

    async def health(self) -> dict:
        """Reachability and writability, from probes run at most once a second (shared by
        concurrent callers): ``{"reachable", "writable", "error", "threads"}``."""
        loop = asyncio.get_running_loop()
        if self._probe is None and loop.time() - self._probe_at >= 1.0:
            self._probe = loop.create_task(self._run_probes())
        if self._probe is not None:
            probe = self._probe
            await asyncio.shield(probe)
        result = dict(self._probe_result)
        held = self._write_error
        if held is not None and time.monotonic() - held[0] < WRITE_ERROR_HOLD:
            result["writable"] = False
            result["error"] = result.get("error") or held[1]
        threads = self._threads()
        result["threads"] = threads
        if self._dead:
            result.update(reachable=False, writable=False, error=self._dead)
        return result

    async def _run_probes(self) -> None:
        try:
            result = {"reachable": True, "writable": True, "error": None}
            try:
                await self._run(_probe_read, self._put_read, timeout=PROBE_TIMEOUT)
            except StoreError as exc:
                result.update(reachable=False, writable=False, error=exc.message)
            else:
                try:
                    await self._run(self._probe_write_unit, self._put_write, timeout=PROBE_TIMEOUT)
                except StoreError as exc:
                    result.update(writable=False, error=exc.message)
                    if isinstance(exc, StoreUnavailable):
                        result["reachable"] = False
            self._probe_result = result
        finally:
            self._probe_at = asyncio.get_running_loop().time()
            self._probe = None

    @property
    def dead(self) -> str | None:
        """Why the store stopped for good (a thread died), or None."""
        return self._dead

    def raw_connection(self) -> Any:
        """A fresh autocommit driver connection (for migrations' helpers and tests)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # ---- running units --------------------------------------------------------------------------

    def _job(self, fn: Callable[[Tx], Any], timeout: float | None = None, **answer: Any) -> _Job:
        if self._closed:
            raise RuntimeError("database is closed")
        if self._dead:
            raise StoreUnavailable(f"The database is unavailable ({self._dead}). Nothing was changed.")
        job = _Job(fn, time.monotonic() + (timeout or self.limits.unit_timeout), **answer)
        job.grace = self.limits.statement_timeout + self.limits.commit_grace
        return job

    async def _run(self, fn: Callable[[Tx], T], put: Callable[[_Job], None], timeout: float | None = None) -> T:
        loop = asyncio.get_running_loop()
        job = self._job(fn, timeout, loop=loop, afut=loop.create_future())
        job.timer = loop.call_at(loop.time() + (job.deadline - time.monotonic()), _on_deadline, job)
        put(job)
        try:
            return await job.afut  # type: ignore[misc]
        finally:
            job.timer.cancel()

    def _run_sync(self, fn: Callable[[Tx], T], put: Callable[[_Job], None]) -> T:
        job = self._job(fn, future=concurrent.futures.Future())
        put(job)
        fut = job.future
        assert fut is not None
        try:
            return fut.result(timeout=max(0.0, job.deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            if job.claim():
                raise _expired(job) from None
        try:
            return fut.result(timeout=job.grace)
        except concurrent.futures.TimeoutError:
            raise StoreTimeout("The database did not answer in time. The request may or may not have been applied.",
                               committed=None) from None

    def _put_write(self, job: _Job) -> None:
        raise NotImplementedError

    def _put_read(self, job: _Job) -> None:
        raise NotImplementedError

    def _start(self, jobs: list[_Job]) -> list[_Job]:
        """Claim units for running; those past their deadline are answered instead (never run)."""
        live, late = [], []
        now = time.monotonic()
        for j in jobs:
            if not j.claim():
                continue  # its caller gave up on it
            (late if now > j.deadline else live).append(j)
        if late:
            _answer([(j, False, _expired(j)) for j in late])
        return live

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

    def _run_batch(self, conn: Any, live: list[_Job]) -> None:
        """Run claimed units in one transaction, each in a savepoint (one alone needs none),
        with one commit; answer every unit. Never raises."""
        self.stats["batches"] += 1
        self.stats["units"] += len(live)
        self.batch_sizes[bisect.bisect_left(BATCH_SIZE_BUCKETS, len(live))] += 1
        while live:
            try:
                live = self._run_batch_once(conn, live)
            except BaseException as exc:  # the transaction control itself failed (e.g. the connection)
                err = self._error(exc, conn, committed=False)
                self._rollback_quietly(conn)
                _answer([(j, False, err) for j in live])
                return

    def _run_batch_once(self, conn: Any, live: list[_Job]) -> list[_Job]:
        """One attempt; returns the units to run again in a new transaction (the database rolled
        the whole transaction back under them, through no fault of theirs)."""
        try:
            self._begin(conn)
        except BaseException as exc:
            _answer([(j, False, self._error(exc, conn, committed=False)) for j in live])
            return []
        tx = self._tx(conn)
        single = len(live) == 1
        outcomes: list[tuple[_Job, bool, Any]] = []
        for i, j in enumerate(live):
            if time.monotonic() > j.deadline:
                outcomes.append((j, False, _expired(j)))  # it waited behind this batch's earlier units: never run
                continue
            if not single:
                conn.execute("SAVEPOINT unit")
            self._arm(conn, j)
            try:
                result = j.fn(tx)
            except BaseException as exc:  # the unit fails alone
                self._disarm(conn)
                err = self._error(exc, conn, committed=False)
                if not self._in_transaction(conn):
                    return self._transaction_lost(conn, j, err, outcomes, live[i + 1:])
                if single:
                    self._rollback_quietly(conn)
                    _answer([(j, False, err)])
                    return []
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                outcomes.append((j, False, err))
            else:
                self._disarm(conn)
                if not single:
                    conn.execute("RELEASE unit")
                outcomes.append((j, True, result))
        failpoints.hit("db.before_commit")
        try:
            self._commit(conn)
        except BaseException as exc:
            err = self._error(exc, conn, committed=self._commit_outcome(conn))
            self._rollback_quietly(conn)
            self._note_write_error(err)
            _answer([(j, False, err if ok else value) for j, ok, value in outcomes])
            return []
        if self._write_error is not None and any(ok and j.fn != self._probe_write_unit for j, ok, _ in outcomes):
            self._write_error = None  # a real write went through: the store writes again
        _answer(outcomes)
        return []

    def _transaction_lost(self, conn: Any, failed: _Job, err: BaseException, done: list[tuple[_Job, bool, Any]],
                          rest: list[_Job]) -> list[_Job]:
        """The database rolled the whole batch back while ``failed`` ran (SQLite does on a full
        disk or an interrupted write; PostgreSQL when the connection is lost)."""
        self._rollback_quietly(conn)
        self._note_write_error(err)
        _answer([(failed, False, err)] + [(j, False, v) for j, ok, v in done if not ok])
        survivors = [j for j, ok, _ in done if ok] + rest
        if isinstance(err, (StoreNotWritable, StoreUnavailable)):
            # the others would fail the same way: they did not commit, so they may be retried
            other = type(err)(err.message, committed=False)
            other.retry_alone = True  # type: ignore[attr-defined]
            _answer([(j, False, other) for j in survivors])
            return []
        return survivors  # run again, without the unit that failed

    def _note_write_error(self, err: BaseException) -> None:
        if isinstance(err, StoreNotWritable):
            self._write_error = (time.monotonic(), err.message)

    def _died(self, what: str, exc: BaseException | None, in_flight: list[_Job], q: queue.SimpleQueue) -> None:
        """A store thread stopped for good: fail its units (the batch it held: outcome unknown;
        the queued ones: not run), fail every later one at once, and say so."""
        if self._closed:
            return
        self._dead = f"{what} stopped: {_one_line(exc) if exc else 'exited'}"
        log.critical("database %s", self._dead)
        lost = StoreUnavailable(f"The database is unavailable ({self._dead}). The request may or may not have been "
                                f"applied.", committed=None)
        _answer([(j, False, _expired(j) if j.claim() else lost) for j in in_flight])
        never = StoreUnavailable(f"The database is unavailable ({self._dead}). Nothing was changed.")
        while True:
            try:
                job = q.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.claim():
                _answer([(job, False, never)])
        if self.on_fatal is not None:
            self.on_fatal(self._dead)

    # backend hooks
    def _tx(self, conn: Any) -> Tx:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    def _commit(self, conn: Any) -> None:
        raise NotImplementedError

    def _rollback(self, conn: Any) -> None:
        raise NotImplementedError

    def _rollback_quietly(self, conn: Any) -> None:
        try:
            self._rollback(conn)
        except Exception:
            pass

    def _in_transaction(self, conn: Any) -> bool:
        raise NotImplementedError

    def _commit_outcome(self, conn: Any) -> bool | None:
        """After a failed commit: False (certainly not applied) or None (unknown)."""
        return False

    def _arm(self, conn: Any, job: _Job) -> None:
        pass

    def _disarm(self, conn: Any) -> None:
        pass

    def _error(self, exc: BaseException, conn: Any, *, committed: bool | None) -> BaseException:
        """The exception to answer with: a StoreError for the store's own conditions, else exc."""
        return exc

    def _probe_write_unit(self, tx: Tx) -> None:
        raise NotImplementedError

    def _threads(self) -> dict[str, bool]:
        return {}


def _probe_read(tx: Tx) -> Any:
    return tx.cur.execute("SELECT 1").fetchone()


# ---- SQLite ----------------------------------------------------------------------------------------

_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_INTERRUPT = 5, 6, 9
_SQLITE_NOT_WRITABLE = {8: "read-only database", 10: "disk I/O error", 13: "database or disk is full"}
_SQLITE_UNAVAILABLE = {14: "unable to open the database file", 26: "file is not a database"}


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, *, pool_size: int = 16, synchronous: str | None = None,
                 limits: StoreLimits | None = None):
        super().__init__(url, pool_size=pool_size, synchronous=synchronous, limits=limits)
        self.path = self.sa_url.database or ":memory:"
        if self.path == ":memory:":
            raise ValueError("billhive needs a file-backed SQLite database (WAL, several connections)")
        q = dict(self.sa_url.query)
        self.synchronous = (synchronous or q.get("synchronous") or "FULL").upper()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._readers = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.limits.read_threads),
                                                              thread_name_prefix="billhive-sqlite-read",
                                                              initializer=_yield_cpu,
                                                              initargs=(self.limits.read_nice,))
        self._checkpoint_thread: threading.Thread | None = None
        self._in_flight: list[_Job] = []  # the batch the writer holds
        self._checkpoint_stop = threading.Event()
        self._writer = threading.Thread(target=self._writer_main, name="billhive-sqlite-writer", daemon=True)
        self._writer_ready = threading.Event()
        self._writer_error: BaseException | None = None
        self._writer.start()
        self._writer_ready.wait()
        if self._writer_error:
            raise self._writer_error

    # ---- public API ---------------------------------------------------------------------------

    async def read(self, fn: Callable[[Tx], T]) -> T:
        budget = self.limits.inline_read_budget
        if budget > 0:
            # Most reads (an indexed lookup) take microseconds: start them on the event loop's own
            # connection rather than pay a thread hand-off, but stop any that runs longer than the
            # budget (or meets a lock) and give it to a read thread - it did not change anything.
            conn = self._inline_conn()
            b: _Budget = conn.budget
            conn.execute("BEGIN")
            b.arm(time.monotonic() + budget)
            try:
                result = fn(Tx(conn, "sqlite", self.url))
            except Exception as exc:
                if not b.tripped and not _sqlite_busy(exc):
                    err = self._error(exc, conn, committed=False)
                    if err is exc:
                        raise
                    raise err from exc
            else:
                if not b.tripped:
                    return result
            finally:
                b.disarm()
                if conn.in_transaction:
                    conn.execute("COMMIT")
        return await self._run(fn, self._put_read)


    def queue_depth(self) -> int:
        return self._queue.qsize()

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        if self._closed:
            raise RuntimeError("database is closed")
        return self._read_here(fn, time.monotonic() + self.limits.statement_timeout)

    def raw_connection(self) -> Any:
        return self._sqlite_connect()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join(timeout=10)
        self._checkpoint_stop.set()
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.join(timeout=10)
        self._readers.shutdown(wait=True)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except Exception:  # pragma: no cover
                pass

    # ---- connections -------------------------------------------------------------------------

    def _sqlite_connect(self, *, shared: bool = True, busy_ms: int | None = None,
                        check_every: int = 20_000) -> _SqliteConnection:
        wait = int(self.limits.unit_timeout * 1000)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=wait / 1000,
                               factory=_SqliteConnection)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={wait if busy_ms is None else busy_ms}")
            conn.execute("PRAGMA cache_size=-65536")
            # reads of a large database go through the OS page cache without a copy per page
            conn.execute(f"PRAGMA mmap_size={int(self.limits.mmap_size)}")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA journal_size_limit=67108864")
            conn.execute("PRAGMA foreign_keys=OFF")
        except BaseException:
            conn.close()
            raise
        conn.budget = _Budget()
        conn.set_progress_handler(conn.budget, check_every)  # bounds every statement (see _arm)
        if shared:  # closed by close(); a thread that closes its own connection passes shared=False
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _thread_conn(self) -> _SqliteConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._sqlite_connect()
        return conn

    def _inline_conn(self) -> _SqliteConnection:
        conn = getattr(self._local, "inline", None)
        if conn is None:  # never waits for a lock; checks its budget often
            conn = self._local.inline = self._sqlite_connect(busy_ms=0, check_every=1000)
        return conn

    def _drop_thread_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._conns_lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    # ---- reads ---------------------------------------------------------------------------------

    def _put_read(self, job: _Job) -> None:
        self._readers.submit(self._read_job, job)

    def _read_job(self, job: _Job) -> None:
        if not self._start([job]):
            return
        try:
            result = self._read_here(job.fn, time.monotonic() + self.limits.statement_timeout)
        except BaseException as exc:
            _answer([(job, False, exc)])
        else:
            _answer([(job, True, result)])

    def _read_here(self, fn: Callable[[Tx], T], deadline: float) -> T:
        conn = None
        try:
            conn = self._thread_conn()
            b: _Budget = conn.budget
            conn.execute("BEGIN")
            b.arm(deadline)
            try:
                return fn(Tx(conn, "sqlite", self.url))
            finally:
                b.disarm()
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except Exception as exc:
            err = self._error(exc, conn, committed=False)
            if conn is not None and conn.broken:
                self._drop_thread_conn()  # start over on a new connection next time
            if err is exc:
                raise
            raise err from exc

    # ---- writes: the writer thread (group commit) ------------------------------------------------

    def _put_write(self, job: _Job) -> None:
        self._queue.put(job)

    def _writer_main(self) -> None:
        exc: BaseException | None = None
        try:
            self._writer_loop()
        except BaseException as e:  # a bug; reported below
            exc = e
            log.exception("the SQLite writer stopped")
        finally:
            self._died("the SQLite writer thread", exc, self._in_flight, self._queue)

    def _writer_loop(self) -> None:
        try:
            conn: _SqliteConnection | None = self._open_writer()
        except BaseException as exc:  # reported to the constructor
            self._writer_error = exc
            self._writer_ready.set()
            return
        self._writer_ready.set()
        backoff = _Backoff()
        try:
            while (batch := self._take_batch(self._queue)) is not None:
                self._in_flight = batch
                live = self._start(batch)
                if not live:
                    continue
                if conn is None:
                    try:
                        backoff.check()
                    except StoreUnavailable as exc:
                        _answer([(j, False, exc) for j in live])
                        continue
                    try:
                        conn = self._open_writer()
                    except Exception as exc:
                        backoff.failed(exc)
                        log.warning("cannot reopen SQLite %s for writing: %s", self.path, exc)
                        _answer([(j, False, self._error(exc, None, committed=False)) for j in live])
                        continue
                    backoff.succeeded()
                self._run_batch(conn, live)
                self._in_flight = []
                if conn.broken:
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _open_writer(self) -> _SqliteConnection:
        conn = self._sqlite_connect(shared=False)  # closed by this thread when it stops
        if self.limits.checkpointer:
            # Checkpoints copy the WAL into the database file (and fsync it). Left to the
            # committing connection they stall every ~1000 pages of commits; a separate thread
            # does them instead, off the write path.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            if self._checkpoint_thread is None:
                self._checkpoint_thread = threading.Thread(target=self._checkpointer,
                                                           name="billhive-sqlite-checkpoint", daemon=True)
                self._checkpoint_thread.start()
        return conn


    def _checkpointer(self) -> None:
        # owns its connection: closing it from another thread mid-call would crash sqlite3
        conn: _SqliteConnection | None = None
        failing = False
        try:
            while not self._checkpoint_stop.wait(0.5):
                try:
                    if conn is None:
                        conn = self._sqlite_connect(shared=False)
                    # PASSIVE never blocks the writer; once everything is copied back the next
                    # write transaction starts the WAL over (journal_size_limit trims the file)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if failing:
                        log.info("WAL checkpoints work again")
                        failing = False
                except sqlite3.Error as exc:  # retried on the next tick, on a new connection
                    if not failing:
                        log.warning("WAL checkpoint failed (retrying every 0.5 s): %s", exc)
                        failing = True
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
        except BaseException as exc:  # pragma: no cover - a bug
            log.exception("the WAL checkpointer stopped")
            self._died("the SQLite checkpoint thread", exc, [], queue.SimpleQueue())
        finally:
            if conn is not None:
                conn.close()

    # ---- backend hooks ---------------------------------------------------------------------------

    def _tx(self, conn: Any) -> Tx:
        return Tx(conn, "sqlite", self.url)

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _in_transaction(self, conn: Any) -> bool:
        return conn.in_transaction

    def _arm(self, conn: Any, job: _Job) -> None:
        conn.budget.arm(time.monotonic() + self.limits.statement_timeout)

    def _disarm(self, conn: Any) -> None:
        conn.budget.disarm()

    def _error(self, exc: BaseException, conn: Any, *, committed: bool | None) -> BaseException:
        if isinstance(exc, StoreError) or not isinstance(exc, sqlite3.Error):
            return exc
        budget = getattr(conn, "budget", None)
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code == _SQLITE_INTERRUPT or (budget is not None and budget.tripped):
            return StoreTimeout(f"The request took longer than the database statement timeout "
                                f"({self.limits.statement_timeout:g} s) and was stopped. Nothing was changed; narrow "
                                f"the request (fewer rows, more selective filters) or retry later.")
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreTimeout("The database is locked by another process. Nothing was changed; retry later.")
        if code in _SQLITE_NOT_WRITABLE:
            log.error("SQLite %s cannot write: %s", self.path, exc)
            if conn is not None and code != 13:
                conn.broken = True  # reopen it: the file may be writable again later
            return StoreNotWritable(f"The store cannot write: {_SQLITE_NOT_WRITABLE[code]}. Nothing was changed; "
                                    f"reads still work, and writes will once the database can write again.",
                                    committed=committed)
        if code in _SQLITE_UNAVAILABLE:
            log.error("SQLite %s is unavailable: %s", self.path, exc)
            if conn is not None:
                conn.broken = True
            return StoreUnavailable(f"The database is unavailable: {_SQLITE_UNAVAILABLE[code]}. Nothing was changed.",
                                    committed=committed)
        return exc

    def _probe_write_unit(self, tx: Tx) -> None:
        # rewrite the header's user_version with its own value: a real page write, changes nothing
        version = tx.cur.execute("PRAGMA user_version").fetchone()[0]
        tx.cur.execute(f"PRAGMA user_version = {int(version)}")

    def _threads(self) -> dict[str, bool]:
        threads = {"billhive-sqlite-writer": self._writer.is_alive()}
        if self._checkpoint_thread is not None:
            threads["billhive-sqlite-checkpoint"] = self._checkpoint_thread.is_alive()
        return threads


def _yield_cpu(nice: int) -> None:
    """Read threads run at a lower CPU priority than the event loop (Linux: per thread): a
    machine busy with heavy reads still runs the requests that wait for the loop first."""
    if nice:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _sqlite_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (
        _SQLITE_BUSY, _SQLITE_LOCKED)


# ---- PostgreSQL ------------------------------------------------------------------------------------

class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 16, synchronous: str | None = None,
                 limits: StoreLimits | None = None):
        super().__init__(url, pool_size=pool_size, synchronous=synchronous, limits=limits)
        self.conninfo = _pg_conninfo(self.sa_url)
        self.synchronous = synchronous
        self._backoff = _Backoff()
        self._lane_queue: queue.SimpleQueue | None = None
        self._lane_thread: threading.Thread | None = None
        self._lane_in_flight: list[_Job] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="billhive-pg")

    def queue_depth(self) -> int:
        lane = self._lane_queue
        return lane.qsize() if lane is not None else 0

    # ---- public API ---------------------------------------------------------------------------

    async def write(self, fn: Callable[[Tx], T], *, lane: bool = False) -> T:
        if lane:
            try:
                return await self._run(fn, self._put_lane)
            except StoreError as exc:
                if not getattr(exc, "retry_alone", False):
                    raise
                # it did not commit (a deadlock with a unit outside the lane, or the lane's
                # connection was lost): run it alone
                log.info("lane unit failed (%s); retrying it on its own", exc.message)
        return await self._run(fn, self._put_write)

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        if self._closed:
            raise RuntimeError("database is closed")
        return self._unit_here(fn, True, time.monotonic() + self.limits.unit_timeout)

    def raw_connection(self) -> Any:
        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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

    # ---- connections ---------------------------------------------------------------------------

    def _pg_connect(self) -> Any:
        """A new connection, with the statement timeout set; StoreUnavailable if the server cannot
        be reached (and, for a little while after, at once: see _Backoff)."""
        self._backoff.check()
        try:
            conn = psycopg.connect(self.conninfo, autocommit=False, **_pg_connect_options(self.sa_url))
            sets = [f"SET statement_timeout = {int(self.limits.statement_timeout * 1000)}"]
            if self.synchronous:
                sets.append(f"SET synchronous_commit = {self.synchronous}")
            for s in sets:
                conn.execute(s)
            conn.commit()
        except psycopg.Error as exc:
            self._backoff.failed(exc)
            log.warning("cannot connect to PostgreSQL: %s", _one_line(exc))
            raise StoreUnavailable(f"The database is unreachable ({_one_line(exc)}). Nothing was changed; "
                                   f"retry later.") from exc
        self._backoff.succeeded()
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _forget(self, conn: Any) -> None:
        with self._conns_lock:
            if conn in self._conns:
                self._conns.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    def _thread_conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            self._drop_thread_conn()  # the server went away since this thread last ran
            conn = None
        if conn is None:
            conn = self._local.conn = self._pg_connect()
        return conn

    def _drop_thread_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            self._forget(conn)

    # ---- the pool --------------------------------------------------------------------------------

    def _put_write(self, job: _Job) -> None:
        self._pool.submit(self._pool_job, job, False)

    def _put_read(self, job: _Job) -> None:
        self._pool.submit(self._pool_job, job, True)

    def _pool_job(self, job: _Job, read_only: bool) -> None:
        if not self._start([job]):
            return
        try:
            result = self._unit_here(job.fn, read_only, job.deadline)
        except BaseException as exc:
            _answer([(job, False, exc)])
        else:
            _answer([(job, True, result)])

    def _unit_here(self, fn: Callable[[Tx], T], read_only: bool, deadline: float) -> T:
        """One transaction on this thread's connection. A unit whose connection turns out to be
        lost before it commits runs once more on a new connection (nothing of it was applied)."""
        for attempt in (1, 2):
            conn = self._thread_conn()
            committing = False
            try:
                result = fn(Tx(conn, "postgresql", self.url))
                if not read_only:
                    failpoints.hit("db.before_commit")
                committing = True
                conn.commit()
                if self._write_error is not None and not read_only and fn != self._probe_write_unit:
                    self._write_error = None  # a real write went through: the store writes again
                return result
            except BaseException as exc:
                lost = _pg_lost(conn, exc)
                if not lost:
                    try:
                        conn.rollback()
                    except Exception:
                        lost = True
                if lost:
                    self._drop_thread_conn()
                    if not committing and attempt == 1 and time.monotonic() < deadline:
                        log.info("database connection lost (%s); running the unit again on a new one",
                                 _one_line(exc))
                        continue
                err = self._error(exc, conn, committed=None if lost and committing else False)
                self._note_write_error(err)
                if err is exc:
                    raise
                raise err from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- the lane: group commit for units that serialize on one row ------------------------------

    def _put_lane(self, job: _Job) -> None:
        with self._conns_lock:
            if self._lane_queue is None:
                self._lane_queue = queue.SimpleQueue()
                self._lane_thread = threading.Thread(target=self._lane_main, name="billhive-pg-lane", daemon=True)
                self._lane_thread.start()
        self._lane_queue.put(job)

    def _lane_main(self) -> None:
        exc: BaseException | None = None
        try:
            self._lane_loop()
        except BaseException as e:  # a bug; reported below
            exc = e
            log.exception("the PostgreSQL lane stopped")
        finally:
            self._died("the PostgreSQL lane thread", exc, self._lane_in_flight, self._lane_queue)  # type: ignore[arg-type]

    def _lane_loop(self) -> None:
        """Like the SQLite writer, on one PostgreSQL connection: units that all lock the same
        hot row (a site's invoice number sequence) run in batches, each in a savepoint, and
        share one commit - the row is locked once per batch instead of once per unit. A lost
        connection fails the batch's units as "run me alone" (``write`` then retries each on
        the pool) and is replaced for the next batch."""
        q = self._lane_queue
        assert q is not None
        conn = None
        try:
            while (batch := self._take_batch(q)) is not None:
                self._lane_in_flight = batch
                live = self._start(batch)
                if not live:
                    continue
                if conn is None or conn.closed or conn.broken:
                    if conn is not None:
                        self._forget(conn)
                    try:
                        conn = self._pg_connect()
                    except StoreError as exc:
                        conn = None
                        exc.retry_alone = True  # type: ignore[attr-defined]
                        _answer([(j, False, exc) for j in live])
                        continue
                self._run_batch(conn, live)
                self._lane_in_flight = []
        finally:
            if conn is not None:
                self._forget(conn)

    # ---- backend hooks ---------------------------------------------------------------------------

    def _tx(self, conn: Any) -> Tx:
        return Tx(conn, "postgresql", self.url)

    def _begin(self, conn: Any) -> None:
        pass  # psycopg opens the transaction with the first statement

    def _commit(self, conn: Any) -> None:
        conn.commit()

    def _rollback(self, conn: Any) -> None:
        conn.rollback()

    def _in_transaction(self, conn: Any) -> bool:
        return not (conn.closed or conn.broken) and conn.info.transaction_status in (
            pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)

    def _commit_outcome(self, conn: Any) -> bool | None:
        return None if (conn.closed or conn.broken) else False

    def _error(self, exc: BaseException, conn: Any, *, committed: bool | None) -> BaseException:
        if isinstance(exc, StoreError):
            return exc
        E = pg_errors
        if not isinstance(exc, E.Error):
            return exc
        if isinstance(exc, (E.DeadlockDetected, E.SerializationFailure, E.LockNotAvailable)):
            err: StoreError = StoreTimeout(f"The request conflicted with a concurrent one ({_one_line(exc)}). "
                                           f"Nothing was changed; retry it.")
            err.retry_alone = True  # type: ignore[attr-defined]
            return err
        if isinstance(exc, E.QueryCanceled):
            return StoreTimeout(f"The request took longer than the database statement timeout "
                                f"({self.limits.statement_timeout:g} s) and was stopped. Nothing was changed; narrow "
                                f"the request (fewer rows, more selective filters) or retry later.")
        if isinstance(exc, (E.DiskFull, E.ReadOnlySqlTransaction, E.InsufficientResources)):
            log.error("PostgreSQL cannot write: %s", _one_line(exc))
            return StoreNotWritable(f"The store cannot write ({_one_line(exc)}). Nothing was changed; reads still "
                                    f"work, and writes will once the database can write again.", committed=committed)
        if _pg_lost(conn, exc) or isinstance(exc, E.InterfaceError):
            if committed is None:
                msg = ("The connection to the database was lost while the request was being committed: it may or "
                       "may not have been applied. Check before retrying it (or retry with the same idempotency key).")
            else:
                msg = f"The connection to the database was lost ({_one_line(exc)}). Nothing was changed; retry it."
            err = StoreUnavailable(msg, committed=committed)
            err.retry_alone = committed is False  # type: ignore[attr-defined]
            return err
        return exc

    def _probe_write_unit(self, tx: Tx) -> None:
        # a transaction id makes the commit write a WAL record: fails on a full disk or a standby
        tx.cur.execute("SELECT txid_current()")

    def _threads(self) -> dict[str, bool]:
        if self._lane_thread is None:
            return {}
        return {"billhive-pg-lane": self._lane_thread.is_alive()}


def _pg_lost(conn: Any, exc: BaseException) -> bool:
    """Did exc come with the loss of the connection (terminated backend, server gone)?"""
    E = pg_errors
    if conn is not None and (conn.closed or conn.broken):
        return True
    return isinstance(exc, (E.AdminShutdown, E.CrashShutdown, E.CannotConnectNow, E.ConnectionException))


def _pg_connect_options(u: Any) -> dict[str, Any]:
    """Time limits on connecting and on a silent peer, unless the URL sets its own."""
    defaults = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
                "keepalives_count": 3, "tcp_user_timeout": 15000}
    return {k: v for k, v in defaults.items() if k not in u.query}


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


# ---- start-up check -------------------------------------------------------------------------------

def check_writable(url: str) -> None:
    """Raise StoreNotWritable / StoreUnavailable, naming the file (or database), unless the
    database can take a write now. For ``billhive serve`` and ``worker`` before they start."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:":
            return  # Database refuses it, with its own message
        path = os.path.abspath(u.database)
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=10)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                conn.execute(f"PRAGMA user_version = {int(version)}")
                conn.execute("COMMIT")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreNotWritable(f"cannot write to the database {path}: {exc}") from exc
        return
    where = f"{u.database} on {u.host or 'localhost'}:{u.port or 5432}"
    try:
        with psycopg.connect(_pg_conninfo(u), autocommit=False, **_pg_connect_options(u)) as conn:
            conn.execute("SELECT txid_current()")
            conn.commit()
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to the database {where}: {_one_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StoreNotWritable(f"cannot write to the database {where}: {_one_line(exc)}") from exc


def wall_clock() -> int:
    """Real time, for leases and expiries that are not part of the billing domain."""
    return int(time.time())
