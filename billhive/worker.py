"""Background work: the scheduler and the delivery loops.

Runs inside ``billhive serve`` (default) and alone as ``billhive worker`` (several may run
against one PostgreSQL database: every claim is a row lock with SKIP LOCKED, so no item is
processed twice). Each loop is an ``async def loop(app)`` registered in ``LOOPS``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from billhive.runtime import App
from billhive.scheduler import runner

log = logging.getLogger("billhive.worker")

Loop = Callable[[App], Awaitable[None]]
LOOPS: list[Loop] = []


def loop(fn: Loop) -> Loop:
    """Register a background loop (it should run forever and survive its own errors)."""
    if fn not in LOOPS:
        LOOPS.append(fn)
    return fn


async def every(app: App, interval: float, step: Callable[[App], Awaitable[object]], name: str) -> None:
    """Run step forever, pausing interval seconds between passes; errors are logged, not fatal."""
    while True:
        try:
            await step(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s pass failed", name)
        await asyncio.sleep(interval)


async def drain(app: App, interval: float, step: Callable[[App], Awaitable[object]], name: str) -> None:
    """Run step again at once while it finds work (a truthy result); pause interval seconds
    when it finds none or fails (errors are logged, not fatal)."""
    while True:
        try:
            done = await step(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s pass failed", name)
            done = 0
        if not done:
            await asyncio.sleep(interval)


@loop
async def scheduler_loop(app: App) -> None:
    await every(app, app.config.scheduler_interval, runner.run_all_sites, "scheduler")


async def run_background(app: App) -> None:
    tasks = [asyncio.create_task(fn(app), name=getattr(fn, "__name__", "loop")) for fn in LOOPS]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
