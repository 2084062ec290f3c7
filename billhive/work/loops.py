"""How a background loop runs: forever, surviving its own errors (a failing pass is logged and
retried, with a growing pause while it keeps failing - e.g. while the database is unreachable),
reporting its liveness in ``app.loops`` for ``/health``. The loops themselves are listed in
billhive/worker.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from billhive.errors import StoreError
from billhive.runtime import App, LoopState
from billhive.util.bell import Bell

log = logging.getLogger("billhive.worker")

MAX_PAUSE = 10.0  # seconds: the longest pause between failing passes of a short-interval loop


async def every(app: App, interval: float, step: Callable[[App], Awaitable[object]], name: str) -> None:
    """Run step forever, pausing interval seconds between passes; errors are logged, not fatal."""
    state = _state(app, name)
    try:
        while True:
            await _pass(app, step, state)
            await asyncio.sleep(_pause(interval, state))
    finally:
        state.running = False


async def drain(app: App, interval: float, step: Callable[[App], Awaitable[object]], name: str,
                bell: Bell | None = None) -> None:
    """Run step again at once while it finds work (a truthy result); pause interval seconds
    when it finds none or fails (errors are logged, not fatal). ``bell``: a ring ends a pause
    after a pass that found nothing (not one after a failure) early - or the next such pause, if
    it rang while the pass ran."""
    state = _state(app, name)
    listener = bell.listen() if bell is not None else None
    try:
        while True:
            if not await _pass(app, step, state):
                if listener is not None and not state.failures:
                    await listener.pause(interval)
                else:
                    await asyncio.sleep(_pause(interval, state))
    finally:
        state.running = False
        if listener is not None:
            listener.close()


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
