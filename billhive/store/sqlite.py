"""The SQLite store: one writer thread, read threads, a WAL checkpointer.

One writer thread owns the only write connection. Units of work queue up; the writer runs each
in its own SAVEPOINT inside one transaction and commits the batch with one fsync (group commit).
A unit's caller is answered only after its batch is durable; a unit that fails is rolled back to
its savepoint and leaves no trace. Reads run on a small pool of read threads, each with its own
connection (WAL: readers never block the writer); a read may start on the event loop's own
connection, but only for a few milliseconds (``inline_read_budget``) - past that it is stopped
and moved to a read thread, so one heavy read never stalls the event loop. Every connection
reads the file through mmap (``mmap_size``) and bounds its statements with a progress handler
(``_Budget``). Checkpoints run on their own thread, off the write path.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from billhive.errors import StoreError, StoreNotWritable, StoreTimeout, StoreUnavailable
from billhive.store.tx import Tx
from billhive.store.units import Backoff, Job, Store, StoreLimits, answer

log = logging.getLogger("billhive.db")
T = TypeVar("T")

_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_INTERRUPT = 5, 6, 9
_SQLITE_NOT_WRITABLE = {8: "read-only database", 10: "disk I/O error", 13: "database or disk is full"}
_SQLITE_UNAVAILABLE = {14: "unable to open the database file", 26: "file is not a database"}
_SQLITE_CONSTRAINT_PRIMARYKEY, _SQLITE_CONSTRAINT_UNIQUE = 1555, 2067  # extended result codes


class SqliteStore(Store):
    """SQLite: a writer thread (group commit), read threads, a checkpointer."""

    dialect = "sqlite"

    def __init__(self, url: str, *, pool_size: int = 16, synchronous: str | None = None,
                 limits: StoreLimits | None = None):
        super().__init__(url, pool_size=pool_size, synchronous=synchronous, limits=limits)
        self.path = self.sa_url.database or ":memory:"
        if self.path == ":memory:":
            raise ValueError("billhive needs a file-backed SQLite database (WAL, several connections)")
        q = dict(self.sa_url.query)
        self.synchronous = str(synchronous or q.get("synchronous") or "FULL").upper()
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._readers = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.limits.read_threads),
                                                              thread_name_prefix="billhive-sqlite-read",
                                                              initializer=_yield_cpu,
                                                              initargs=(self.limits.read_nice,))
        self._checkpoint_thread: threading.Thread | None = None
        self._in_flight: list[Job] = []  # the batch the writer holds
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

    def _put_read(self, job: Job) -> None:
        self._readers.submit(self._read_job, job)

    def _read_job(self, job: Job) -> None:
        if not self._start([job]):
            return
        try:
            result = self._read_here(job.fn, time.monotonic() + self.limits.statement_timeout)
        except BaseException as exc:
            answer([(job, False, exc)])
        else:
            answer([(job, True, result)])

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

    def _put_write(self, job: Job) -> None:
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
        backoff = Backoff()
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
                        answer([(j, False, exc) for j in live])
                        continue
                    try:
                        conn = self._open_writer()
                    except Exception as exc:
                        backoff.failed(exc)
                        log.warning("cannot reopen SQLite %s for writing: %s", self.path, exc)
                        answer([(j, False, self._error(exc, None, committed=False)) for j in live])
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

    def _arm(self, conn: Any, job: Job) -> None:
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


class _SqliteConnection(sqlite3.Connection):
    """A sqlite3 connection that carries its statement budget (and whether to reopen it)."""

    budget: _Budget
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


def _yield_cpu(nice: int) -> None:
    """Read threads run at a lower CPU priority than the event loop (Linux: per thread): a
    machine busy with heavy reads still runs the requests that wait for the loop first."""
    if nice:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _sqlite_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (
        _SQLITE_BUSY, _SQLITE_LOCKED)


def check_writable(path: str) -> None:
    """Raise StoreNotWritable, naming the file, unless it can take a write now."""
    path = os.path.abspath(path)
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


def is_unique_violation(exc: BaseException) -> bool:
    """A UNIQUE or PRIMARY KEY constraint failed (not NOT NULL, CHECK, ...)."""
    return isinstance(exc, sqlite3.IntegrityError) and getattr(exc, "sqlite_errorcode", 0) in (
        _SQLITE_CONSTRAINT_UNIQUE, _SQLITE_CONSTRAINT_PRIMARYKEY)
