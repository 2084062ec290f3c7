"""Running units of work, on either store: deadlines, answers, group-commit batches, death.

``Store`` is what SQLite (``billhive.store.sqlite``) and PostgreSQL (``billhive.store.postgres``)
share. A unit of work is a function of a ``Tx``; a caller submits it (``write``/``read`` from
the event loop, ``*_sync`` from a thread) and gets its result or its error. A backend provides
the threads that run units (``_put_write``/``_put_read``), the transaction control the batch
runner uses (``_begin``, ``_commit``, ``_rollback``, ``_in_transaction``, ``_commit_outcome``,
``_arm``/``_disarm``), the translation of its driver's errors (``_error``) and its write probe.
The guarantees (see ``billhive.store.db``) are kept here once for both.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from billhive.errors import StoreError, StoreNotWritable, StoreTimeout, StoreUnavailable
from billhive.store.tx import Tx
from billhive.util import failpoints

log = logging.getLogger("billhive.db")
T = TypeVar("T")
# group-commit batch sizes (units), the upper bounds of /metrics' histogram buckets (MAX_BATCH is 128)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

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


# ---- the store -----------------------------------------------------------------------------------

class Store:
    """Runs units of work. ``write``/``read`` for async callers, ``*_sync`` for threads.

    The part both stores share; ``SqliteStore`` and ``PostgresStore`` fill in the backend
    hooks (at the end of this class).
    """

    MAX_BATCH = 128
    dialect: str
    synchronous: str | None

    def __init__(self, url: str, *, pool_size: int = 16, synchronous: str | None = None,
                 limits: StoreLimits | None = None):
        self.url = url
        self.sa_url = make_url(url)
        self.limits = limits or StoreLimits()
        self._local = threading.local()
        self._closed = False
        self._dead: str | None = None  # why a store thread stopped for good
        self.on_fatal: Callable[[str], None] | None = None  # called (from any thread) when the store is dead
        # called once a write that recorded due deliveries has committed (``Tx.deliveries``): the
        # runtime rings the delivery loops' bell (billhive/util/bell.py)
        self.on_deliveries: Callable[[], None] | None = None
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

    async def write(self, fn: Callable[[Tx], T], *, lane: bool | int = False) -> T:
        """Run fn(tx) in one durable write transaction.

        lane: the unit locks a hot row many units share (a site's invoice number sequence):
        True, or the row's key (the site's pk) so that units of different keys need not wait
        for each other; on PostgreSQL such units are group-committed on one connection per lane
        (see _lane_loop). On SQLite every write is group-committed anyway.
        """
        return await self._written(fn, self._put_write)

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Run fn(tx) in one write transaction and return its result once durable."""
        result, due = self._run_sync(_noting_deliveries(fn), self._put_write)
        self._committed(due)
        return result

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
            result: dict[str, Any] = {"reachable": True, "writable": True, "error": None}
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

    def _job(self, fn: Callable[[Tx], Any], timeout: float | None = None, **reply: Any) -> Job:
        if self._closed:
            raise RuntimeError("database is closed")
        if self._dead:
            raise StoreUnavailable(f"The database is unavailable ({self._dead}). Nothing was changed.")
        job = Job(fn, time.monotonic() + (timeout or self.limits.unit_timeout), **reply)
        job.grace = self.limits.statement_timeout + self.limits.commit_grace
        return job

    async def _written(self, fn: Callable[[Tx], T], put: Callable[[Job], None]) -> T:
        """``_run`` of a write unit; once it has committed, ``on_deliveries`` if it recorded due deliveries."""
        result, due = await self._run(_noting_deliveries(fn), put)
        self._committed(due)
        return result

    def _committed(self, deliveries: bool) -> None:
        """A write unit has committed; ``deliveries``: it recorded due deliveries."""
        if deliveries and self.on_deliveries is not None:
            self.on_deliveries()

    async def _run(self, fn: Callable[[Tx], T], put: Callable[[Job], None], timeout: float | None = None) -> T:
        loop = asyncio.get_running_loop()
        job = self._job(fn, timeout, loop=loop, afut=loop.create_future())
        job.timer = loop.call_at(loop.time() + (job.deadline - time.monotonic()), _on_deadline, job)
        put(job)
        try:
            return await job.afut  # type: ignore[misc]
        finally:
            job.timer.cancel()

    def _run_sync(self, fn: Callable[[Tx], T], put: Callable[[Job], None]) -> T:
        job = self._job(fn, future=concurrent.futures.Future())
        put(job)
        fut = job.future
        assert fut is not None
        try:
            return fut.result(timeout=max(0.0, job.deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            if job.claim():
                raise expired(job) from None
        try:
            return fut.result(timeout=job.grace)
        except concurrent.futures.TimeoutError:
            raise StoreTimeout("The database did not answer in time. The request may or may not have been applied.",
                               committed=None) from None

    def _put_write(self, job: Job) -> None:
        raise NotImplementedError

    def _put_read(self, job: Job) -> None:
        raise NotImplementedError

    def _start(self, jobs: list[Job]) -> list[Job]:
        """Claim units for running; those past their deadline are answered instead (never run)."""
        live: list[Job] = []
        late: list[Job] = []
        now = time.monotonic()
        for j in jobs:
            if not j.claim():
                continue  # its caller gave up on it
            (late if now > j.deadline else live).append(j)
        if late:
            answer([(j, False, expired(j)) for j in late])
        return live

    def _take_batch(self, q: queue.SimpleQueue) -> list[Job] | None:
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

    def _run_batch(self, conn: Any, live: list[Job]) -> None:
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
                answer([(j, False, err) for j in live])
                return

    def _run_batch_once(self, conn: Any, live: list[Job]) -> list[Job]:
        """One attempt; returns the units to run again in a new transaction (the database rolled
        the whole transaction back under them, through no fault of theirs)."""
        try:
            self._begin(conn)
        except BaseException as exc:
            answer([(j, False, self._error(exc, conn, committed=False)) for j in live])
            return []
        tx = self._tx(conn)
        single = len(live) == 1
        outcomes: list[tuple[Job, bool, Any]] = []
        held = False  # the savepoint of the last unit is still open (released with the next one's opening)
        for i, j in enumerate(live):
            if time.monotonic() > j.deadline:
                outcomes.append((j, False, expired(j)))  # it waited behind this batch's earlier units: never run
                continue
            if not single:
                self._savepoint(conn, held)
                held = False
            tx.forget_rows()  # a unit starts knowing no rows (an earlier one may have rolled back)
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
                    answer([(j, False, err)])
                    return []
                conn.execute("ROLLBACK TO unit")
                held = True
                outcomes.append((j, False, err))
            else:
                self._disarm(conn)
                held = not single
                outcomes.append((j, True, result))
        if held:
            self._release_last(conn)
        failpoints.hit("db.before_commit")
        try:
            self._commit(conn)
        except BaseException as exc:
            err = self._error(exc, conn, committed=self._commit_outcome(conn))
            self._rollback_quietly(conn)
            self._note_write_error(err)
            answer([(j, False, err if ok else value) for j, ok, value in outcomes])
            return []
        if self._write_error is not None and any(ok and j.fn != self._probe_write_unit for j, ok, _ in outcomes):
            self._write_error = None  # a real write went through: the store writes again
        answer(outcomes)
        return []

    def _transaction_lost(self, conn: Any, failed: Job, err: BaseException, done: list[tuple[Job, bool, Any]],
                          rest: list[Job]) -> list[Job]:
        """The database rolled the whole batch back while ``failed`` ran (SQLite does on a full
        disk or an interrupted write; PostgreSQL when the connection is lost)."""
        self._rollback_quietly(conn)
        self._note_write_error(err)
        answer([(failed, False, err)] + [(j, False, v) for j, ok, v in done if not ok])
        survivors = [j for j, ok, _ in done if ok] + rest
        if isinstance(err, (StoreNotWritable, StoreUnavailable)):
            # the others would fail the same way: they did not commit, so they may be retried
            other = type(err)(err.message, committed=False)
            other.retry_alone = True  # type: ignore[union-attr]
            answer([(j, False, other) for j in survivors])
            return []
        return survivors  # run again, without the unit that failed

    def _note_write_error(self, err: BaseException) -> None:
        if isinstance(err, StoreNotWritable):
            self._write_error = (time.monotonic(), err.message)

    def _died(self, what: str, exc: BaseException | None, in_flight: list[Job], q: queue.SimpleQueue) -> None:
        """A store thread stopped for good: fail its units (the batch it held: outcome unknown;
        the queued ones: not run), fail every later one at once, and say so."""
        if self._closed:
            return
        self._dead = f"{what} stopped: {one_line(exc) if exc else 'exited'}"
        log.critical("database %s", self._dead)
        lost = StoreUnavailable(f"The database is unavailable ({self._dead}). The request may or may not have been "
                                f"applied.", committed=None)
        answer([(j, False, expired(j) if j.claim() else lost) for j in in_flight])
        never = StoreUnavailable(f"The database is unavailable ({self._dead}). Nothing was changed.")
        while True:
            try:
                job = q.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.claim():
                answer([(job, False, never)])
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

    def _savepoint(self, conn: Any, release_previous: bool) -> None:
        """Open the next unit's savepoint in a batch, releasing the previous unit's first."""
        if release_previous:
            conn.execute("RELEASE unit")
        conn.execute("SAVEPOINT unit")

    def _release_last(self, conn: Any) -> None:
        """Release the batch's last savepoint before its commit."""
        conn.execute("RELEASE unit")

    def _commit_outcome(self, conn: Any) -> bool | None:
        """After a failed commit: False (certainly not applied) or None (unknown)."""
        return False

    def _arm(self, conn: Any, job: Job) -> None:
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


def _noting_deliveries(fn: Callable[[Tx], T]) -> Callable[[Tx], tuple[T, bool]]:
    """The write unit ``fn``, answering also whether it recorded due deliveries (``Tx.deliveries``;
    a batch's units share their Tx, so each starts with it down)."""
    def unit(tx: Tx) -> tuple[T, bool]:
        tx.deliveries = False
        return fn(tx), tx.deliveries
    return unit


def _probe_read(tx: Tx) -> Any:
    return tx.cur.execute("SELECT 1").fetchone()


# ---- units of work and their answers ------------------------------------------------------------

class Job:
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


def answer(outcomes: list[tuple[Job, bool, Any]]) -> None:
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


def _deliver(items: list[tuple[Job, bool, Any]]) -> None:
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


def expired(j: Job) -> StoreTimeout:
    return StoreTimeout("The request could not be processed in time: the database is busy. Nothing was changed; "
                        "retry later.")


def _on_deadline(j: Job, running: bool = False) -> None:
    """On the caller's loop at the unit's deadline (and once more, ``grace`` later, if it runs)."""
    afut = j.afut
    if afut is None or afut.done():
        return
    if j.claim():  # still queued: it will never run
        afut.set_exception(expired(j))
    elif not running:  # it runs: give it time to finish its statements and commit
        j.timer = j.loop.call_later(j.grace, _on_deadline, j, True)  # type: ignore[union-attr]
    else:
        afut.set_exception(StoreTimeout(
            "The database did not answer in time. The request may or may not have been applied: check before "
            "retrying it (or retry with the same idempotency key).", committed=None))


class Backoff:
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
            self.error = one_line(exc)

    def succeeded(self) -> None:
        if self._failures:
            log.info("database connection re-established after %d failed attempt(s)", self._failures)
            self._failures = 0
            self.error = None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
