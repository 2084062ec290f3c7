"""The PostgreSQL store: a pool of threads, each with its own psycopg connection, and a lane.

A unit of work is one transaction on one of the pool's connections. Concurrency control is the
database's (row locks, ``FOR UPDATE``, ``SKIP LOCKED``). Units that lock one hot row may share
the "lane" (one connection, group commit, like the SQLite writer). Every connection sets the
session's ``statement_timeout``; a lost connection is replaced (with back-off while the server
refuses), and a unit that certainly did not commit on it runs once more on the new one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

from billhive.errors import StoreError, StoreNotWritable, StoreTimeout, StoreUnavailable
from billhive.store.tx import Tx
from billhive.store.units import Backoff, Job, Store, StoreLimits, answer, one_line
from billhive.util import failpoints

log = logging.getLogger("billhive.db")
T = TypeVar("T")
# group-commit lanes (threads, each with a connection, started when first used): a site's units
# all go to one (its pk % LANES), so a site's batches lock its number sequence once per batch
# while other sites' batches run beside them on the other lanes
LANES = 4


class PostgresStore(Store):
    """PostgreSQL: a pool of threads with a connection each, and the group-commit lane."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 16, synchronous: str | None = None,
                 limits: StoreLimits | None = None):
        super().__init__(url, pool_size=pool_size, synchronous=synchronous, limits=limits)
        self.conninfo = conninfo(self.sa_url)
        self.synchronous = synchronous
        self._backoff = Backoff()
        self._lanes: dict[int, _Lane] = {}  # by lane number (a key's lane: key % LANES), started when first used
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="billhive-pg")

    # ---- public API ---------------------------------------------------------------------------

    async def write(self, fn: Callable[[Tx], T], *, lane: bool | int = False) -> T:
        if lane is not False:
            n = 0 if lane is True else int(lane) % LANES
            try:
                return await self._written(fn, lambda job: self._put_lane(n, job))
            except StoreError as exc:
                if not getattr(exc, "retry_alone", False):
                    raise
                # it did not commit (a deadlock with a unit outside the lane, or the lane's
                # connection was lost): run it alone
                log.info("lane unit failed (%s); retrying it on its own", exc.message)
        return await self._written(fn, self._put_write)

    def queue_depth(self) -> int:
        return sum(lane.queue.qsize() for lane in list(self._lanes.values()))

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
        with self._conns_lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.queue.put(None)
        for lane in lanes:
            lane.thread.join(timeout=10)
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
        be reached (and, for a little while after, at once: see Backoff)."""
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
            log.warning("cannot connect to PostgreSQL: %s", one_line(exc))
            raise StoreUnavailable(f"The database is unreachable ({one_line(exc)}). Nothing was changed; "
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

    def _put_write(self, job: Job) -> None:
        self._pool.submit(self._pool_job, job, False)

    def _put_read(self, job: Job) -> None:
        self._pool.submit(self._pool_job, job, True)

    def _pool_job(self, job: Job, read_only: bool) -> None:
        if not self._start([job]):
            return
        try:
            result = self._unit_here(job.fn, read_only, job.deadline)
        except BaseException as exc:
            answer([(job, False, exc)])
        else:
            answer([(job, True, result)])

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
                                 one_line(exc))
                        continue
                err = self._error(exc, conn, committed=None if lost and committing else False)
                self._note_write_error(err)
                if err is exc:
                    raise
                raise err from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- the lanes: group commit for units that serialize on one row ----------------------------

    def _put_lane(self, n: int, job: Job) -> None:
        lane = self._lanes.get(n)
        if lane is None:
            with self._conns_lock:
                lane = self._lanes.get(n)
                if lane is None:
                    lane = self._lanes[n] = _Lane(f"billhive-pg-lane-{n}", self._lane_main)
                    lane.thread.start()
        lane.queue.put(job)

    def _lane_main(self, lane: _Lane) -> None:
        exc: BaseException | None = None
        try:
            self._lane_loop(lane)
        except BaseException as e:  # a bug; reported below
            exc = e
            log.exception("the PostgreSQL lane stopped")
        finally:
            self._died(f"the PostgreSQL lane thread {lane.thread.name}", exc, lane.in_flight, lane.queue)

    def _lane_loop(self, lane: _Lane) -> None:
        """Like the SQLite writer, on one PostgreSQL connection: units that all lock the same
        hot row (a site's invoice number sequence) run in batches, each in a savepoint, and
        share one commit - the row is locked once per batch instead of once per unit. Each key
        (site) has its lane (``LANES`` of them, a key's is ``key % LANES``): sites do not queue
        behind each other's batches. A lost connection fails the batch's units as "run me
        alone" (``write`` then retries each on the pool) and is replaced for the next batch."""
        q = lane.queue
        conn = None
        try:
            while (batch := self._take_batch(q)) is not None:
                lane.in_flight = batch
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
                        answer([(j, False, exc) for j in live])
                        continue
                self._run_batch(conn, live)
                lane.in_flight = []
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

    def _savepoint(self, conn: Any, release_previous: bool) -> None:
        # one round trip for both (no parameters: the simple protocol takes several statements)
        conn.execute("RELEASE unit; SAVEPOINT unit" if release_previous else "SAVEPOINT unit")

    def _release_last(self, conn: Any) -> None:
        pass  # the commit ends it: one round trip less

    def _commit_outcome(self, conn: Any) -> bool | None:
        return None if (conn.closed or conn.broken) else False

    def _error(self, exc: BaseException, conn: Any, *, committed: bool | None) -> BaseException:
        if isinstance(exc, StoreError):
            return exc
        E = pg_errors
        if not isinstance(exc, E.Error):
            return exc
        if isinstance(exc, (E.DeadlockDetected, E.SerializationFailure, E.LockNotAvailable)):
            err: StoreError = StoreTimeout(f"The request conflicted with a concurrent one ({one_line(exc)}). "
                                           f"Nothing was changed; retry it.")
            err.retry_alone = True  # type: ignore[attr-defined]
            return err
        if isinstance(exc, E.QueryCanceled):
            return StoreTimeout(f"The request took longer than the database statement timeout "
                                f"({self.limits.statement_timeout:g} s) and was stopped. Nothing was changed; narrow "
                                f"the request (fewer rows, more selective filters) or retry later.")
        if isinstance(exc, (E.DiskFull, E.ReadOnlySqlTransaction, E.InsufficientResources)):
            log.error("PostgreSQL cannot write: %s", one_line(exc))
            return StoreNotWritable(f"The store cannot write ({one_line(exc)}). Nothing was changed; reads still "
                                    f"work, and writes will once the database can write again.", committed=committed)
        if _pg_lost(conn, exc) or isinstance(exc, E.InterfaceError):
            if committed is None:
                msg = ("The connection to the database was lost while the request was being committed: it may or "
                       "may not have been applied. Check before retrying it (or retry with the same idempotency key).")
            else:
                msg = f"The connection to the database was lost ({one_line(exc)}). Nothing was changed; retry it."
            err = StoreUnavailable(msg, committed=committed)
            err.retry_alone = committed is False  # type: ignore[attr-defined]
            return err
        return exc

    def _probe_write_unit(self, tx: Tx) -> None:
        # a transaction id makes the commit write a WAL record: fails on a full disk or a standby
        tx.cur.execute("SELECT txid_current()")

    def _threads(self) -> dict[str, bool]:
        return {lane.thread.name: lane.thread.is_alive() for lane in list(self._lanes.values())}


class _Lane:
    """A group-commit lane: its queue of units, its thread, the batch it runs."""

    def __init__(self, name: str, main: Callable[[_Lane], None]):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=main, args=(self,), name=name, daemon=True)
        self.in_flight: list[Job] = []


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


def conninfo(u: URL) -> str:
    """The libpq connection string of a SQLAlchemy URL (values quoted: a password may hold
    spaces or quotes); its ``synchronous`` query parameter is billhive's, not libpq's."""
    params: dict[str, Any] = {k: v for k, v in u.query.items() if k != "synchronous"}
    return make_conninfo("", host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
                         **params)


def check_writable(u: URL) -> None:
    """Raise StoreUnavailable / StoreNotWritable, naming the database, unless it can take a
    write now."""
    where = f"{u.database} on {u.host or 'localhost'}:{u.port or 5432}"
    try:
        with psycopg.connect(conninfo(u), autocommit=False, **_pg_connect_options(u)) as conn:
            conn.execute("SELECT txid_current()")
            conn.commit()
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to the database {where}: {one_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StoreNotWritable(f"cannot write to the database {where}: {one_line(exc)}") from exc


def is_unique_violation(exc: BaseException) -> bool:
    return isinstance(exc, pg_errors.UniqueViolation)
