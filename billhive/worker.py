"""Background work: the scheduler and the delivery loops.

Runs inside ``billhive serve`` (default) and alone as ``billhive worker`` (several may run
against one PostgreSQL database: every claim is a row lock with SKIP LOCKED, so no item is
processed twice). Each loop is an ``async def loop(app)`` registered in ``LOOPS``.

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
from typing import Awaitable, Callable

from billhive.errors import StoreError
from billhive.runtime import App, LoopState
from billhive.scheduler import runner

log = logging.getLogger("billhive.worker")

Loop = Callable[[App], Awaitable[None]]
LOOPS: list[Loop] = []
MAX_PAUSE = 10.0  # seconds: the longest pause between failing passes of a short-interval loop
STANDBY_POLL = 2.0  # seconds between attempts of a standby process to take the background lock


def loop(fn: Loop) -> Loop:
    """Register a background loop (it should run forever and survive its own errors)."""
    if fn not in LOOPS:
        LOOPS.append(fn)
    return fn


async def every(app: App, interval: float, step: Callable[[App], Awaitable[object]], name: str) -> None:
    """Run step forever, pausing interval seconds between passes; errors are logged, not fatal."""
    state = _state(app, name)
    try:
        while True:
            await _pass(app, step, state)
            await asyncio.sleep(_pause(interval, state))
    finally:
        state.running = False


async def drain(app: App, interval: float, step: Callable[[App], Awaitable[object]], name: str) -> None:
    """Run step again at once while it finds work (a truthy result); pause interval seconds
    when it finds none or fails (errors are logged, not fatal)."""
    state = _state(app, name)
    try:
        while True:
            if not await _pass(app, step, state):
                await asyncio.sleep(_pause(interval, state))
    finally:
        state.running = False


def _state(app: App, name: str) -> LoopState:
    state = app.loops[name] = LoopState(name)
    return state


async def _pass(app: App, step: Callable[[App], Awaitable[object]], state: LoopState) -> object:
    """One pass of a loop; its result, or None when it failed."""
    try:
        done = await step(app)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.failures += 1
        state.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if isinstance(exc, StoreError):  # the store's condition, not a bug: one line, once in a while
            if state.failures == 1 or state.failures % 30 == 0:
                log.warning("%s pass failed (%d in a row): %s", state.name, state.failures, exc.message)
        else:
            log.exception("%s pass failed", state.name)
        done = None
    else:
        if state.failures:
            log.info("%s works again after %d failed pass(es)", state.name, state.failures)
        state.failures = 0
        state.last_error = None
    state.passes += 1
    state.last_pass_at = app.wall()
    return done


def _pause(interval: float, state: LoopState) -> float:
    if not state.failures:
        return interval
    return min(max(interval, MAX_PAUSE), interval * 2 ** state.failures)


@loop
async def scheduler_loop(app: App) -> None:
    await every(app, app.config.scheduler_interval, runner.run_all_sites, "scheduler")


async def run_background(app: App, lock: "BackgroundLock | None" = None) -> None:
    """Run every registered loop until cancelled (on SQLite once this process holds the
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
    def for_app(cls, app: App) -> "BackgroundLock | None":
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
