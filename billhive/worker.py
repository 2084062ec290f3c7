"""Background work: the scheduler and the delivery loops.

Runs inside ``billhive serve`` (default) and alone as ``billhive worker`` (several may run
against one PostgreSQL database: every claim is a row lock with SKIP LOCKED, so no item is
processed twice). Each loop is an ``async def loop(app)`` listed in ``LOOPS``.

On SQLite only one process runs the loops: the one holding the background lock, an
exclusive ``flock`` on ``<database file>-background.lock`` (the kernel releases it when that
process ends, however it ends). Any other process on the same file stands by - it serves the
API only - and takes the loops over once the lock is free.

A loop survives its own errors (a pass that fails is logged and retried, with a growing pause
while it keeps failing - e.g. while the database is unreachable) and reports its liveness in
``app.loops`` for ``/health``. A loop that stops all the same stops ``run_background`` with an
error: the process then exits non-zero (``App.fatal``) for its supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from billhive.delivery import emails, webhooks
from billhive.runtime import App
from billhive.services import jobs as scheduled
from billhive.services import payments, time_machines
from billhive.work import housekeeping
from billhive.work.loops import drain, every

__all__ = ["LOOPS", "BackgroundLock", "drain", "every", "run_background"]

log = logging.getLogger("billhive.worker")

Loop = Callable[[App], Coroutine[Any, Any, None]]
HOUSEKEEPING_INTERVAL = 60.0  # seconds between housekeeping passes (unless a pass found a full batch)
STANDBY_POLL = 2.0  # seconds between attempts of a standby process to take the background lock


async def scheduler_loop(app: App) -> None:
    await every(app, app.config.scheduler_interval, scheduled.run_all_sites, "scheduler")


async def time_travel_loop(app: App) -> None:
    """Time travels no process advances (answered in_progress, or interrupted by a crash) resumed."""
    await every(app, app.config.scheduler_interval, time_machines.resume_all, "time travel")


async def recovery_loop(app: App) -> None:
    """Interrupted charges and refunds settled from the gateway's books (at start, then every
    ``recovery_interval`` seconds)."""
    await every(app, app.config.recovery_interval, payments.recover, "payment recovery")


async def housekeeping_loop(app: App) -> None:
    """Expired idempotency claims deleted, a batch at a time while there are more."""
    await drain(app, HOUSEKEEPING_INTERVAL, lambda a: _more(housekeeping.purge_idempotency_keys(a)), "housekeeping")


async def _more(batch: Awaitable[int]) -> bool:
    return await batch >= housekeeping.BATCH


# every background loop, in the order they start
LOOPS: list[Loop] = [scheduler_loop, time_travel_loop, webhooks.webhook_loop, emails.email_loop, recovery_loop,
                     housekeeping_loop]


async def run_background(app: App, lock: BackgroundLock | None = None) -> None:
    """Run every loop of ``LOOPS`` until cancelled (on SQLite once this process holds the
    background lock). Raises if a loop stops by itself."""
    lock = lock or BackgroundLock.for_app(app)
    try:
        if lock is not None and not lock.acquire():
            app.background = "standby"
            log.warning("another process (%s) runs the background loops on %s; standing by",
                        lock.holder() or "unknown", app.db.url)
            while not lock.acquire():
                await asyncio.sleep(STANDBY_POLL)
            log.info("took over the background loops on %s", app.db.url)
        app.background = "running"
        tasks = [asyncio.create_task(fn(app), name=getattr(fn, "__name__", "loop")) for fn in LOOPS]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            ended = done.pop()
            exc = None if ended.cancelled() else ended.exception()
            app.background = "stopped"
            raise RuntimeError(f"background loop {ended.get_name()} stopped: {exc!r}") from exc
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if lock is not None:
            lock.release()


class BackgroundLock:
    """The SQLite background lock (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    @classmethod
    def for_app(cls, app: App) -> BackgroundLock | None:
        """The lock beside the app's SQLite database; None on PostgreSQL (no lock needed)."""
        if app.db.dialect != "sqlite":
            return None
        return cls(os.path.abspath(app.db.path) + "-background.lock")  # type: ignore[attr-defined]

    def acquire(self) -> bool:
        """Take the lock if it is free (never waits). True if this process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str | None:
        """Who holds the lock, as its holder wrote it ("pid 1234")."""
        try:
            with open(self.path) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
