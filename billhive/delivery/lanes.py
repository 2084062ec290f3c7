"""Delivering side by side, so that a slow destination slows only itself.

Due deliveries fall into **lanes**, one per destination: a webhook endpoint, a site's SMTP
server. Every lane with due work gets its own task, which claims up to ``per_lane`` of the
lane's deliveries, sends them concurrently, records the answers, and goes on while the lane
has work. Lanes run side by side, with at most ``total`` deliveries in flight over all lanes of
the process. An endpoint that hangs holds its own ``per_lane`` slots for the site's timeout and
nothing else: other endpoints and other sites are claimed and sent meanwhile.

The claim/lease/fence rules (``billhive.work.outbox``) are unchanged; only rows a lane can
send at once are claimed, so a lease never runs while a row waits for a slot. The bounds are per
process: N workers on PostgreSQL may have N × ``per_lane`` deliveries in flight to one endpoint.

    dispatcher = Dispatcher(Channel(...))
    await loops.drain(app, interval, lambda a: dispatcher.step(a, interval), "...")  # the loop
    await dispatcher.run_once(app)                                                   # one pass
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from billhive.runtime import App
from billhive.work.outbox import Batch

log = logging.getLogger("billhive.delivery")

Lane = Hashable  # (site_id, endpoint_id) for webhooks, site_id for emails


@dataclass(frozen=True)
class Channel:
    name: str  # for logs
    due_lanes: Callable[[App], Awaitable[list]]  # lanes with due, unclaimed deliveries
    claim: Callable[[App, Lane, int], Awaitable[Batch]]  # claim up to n of a lane's due deliveries
    deliver: Callable[[App, Batch], Awaitable[None]]  # send a claimed batch and record the answers
    per_lane: int  # deliveries in flight per lane
    total: int  # deliveries in flight over all lanes


class Dispatcher:
    """One process's lanes of one channel, and their bounds."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.lanes: dict[Lane, asyncio.Task] = {}
        self.in_flight = 0  # slots taken over all lanes (claimed or being claimed)
        self.handled = 0  # deliveries claimed so far
        self._starved = False  # a due lane found no free slot: running lanes yield after a batch
        self._changed = asyncio.Event()  # a lane finished (its slots are free again)

    # ---- the loop --------------------------------------------------------------------------

    async def step(self, app: App, wait: float) -> int:
        """Start lanes for due work; then wait (at most ``wait`` seconds) for one to finish.
        Truthy while lanes are running, so the caller polls again at once for new due work."""
        started = await self.fill(app)
        if started or not self.lanes:
            return started
        try:
            await asyncio.wait_for(self._changed.wait(), wait)
        except TimeoutError:
            pass
        return len(self.lanes)

    async def run_once(self, app: App, rounds: int = 8) -> int:
        """Deliver what is due now and wait for it (tools and tests); returns how many were claimed."""
        for _ in range(rounds):
            if not await self.fill(app) and not self.lanes:
                break
            while self.lanes:
                await asyncio.wait(list(self.lanes.values()))
        return self.handled

    async def close(self) -> None:
        """Stop every lane; what they had claimed is delivered again when its lease runs out."""
        tasks = list(self.lanes.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- lanes -----------------------------------------------------------------------------

    async def fill(self, app: App) -> int:
        """Start a task for every due lane that has none, while slots are free; returns how many."""
        self._changed.clear()
        due = [lane for lane in await self.channel.due_lanes(app) if lane not in self.lanes]
        random.shuffle(due)  # under the global bound, no lane is always first
        started = 0
        self._starved = False
        free = self.channel.total - self.in_flight  # less what the lanes started here will take
        for lane in due:
            if free <= 0:
                self._starved = True
                break
            free -= self.channel.per_lane
            self.lanes[lane] = asyncio.create_task(self._run_lane(app, lane), name=f"{self.channel.name} {lane}")
            started += 1
        return started

    async def _run_lane(self, app: App, lane: Lane) -> None:
        try:
            while True:
                room = min(self.channel.per_lane, self.channel.total - self.in_flight)
                if room <= 0 or not await self._batch(app, lane, room) or self._starved:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # claims of a failed batch expire and are retried
            log.exception("%s: lane %s failed", self.channel.name, lane)
        finally:
            self.lanes.pop(lane, None)
            self._changed.set()

    async def _batch(self, app: App, lane: Lane, room: int) -> bool:
        """Claim up to ``room`` of the lane's deliveries and send them; True if the lane may have more."""
        self.in_flight += room
        held = room
        try:
            batch = await self.channel.claim(app, lane, room)
            self.handled += len(batch.claims)
            sending = sum(1 for c in batch.claims if c.skip is None)
            self.in_flight -= held - sending  # give back what was not claimed at once
            held = sending
            if not batch.claims:
                return False
            await self.channel.deliver(app, batch)
            return len(batch.claims) == room
        finally:
            self.in_flight -= held
