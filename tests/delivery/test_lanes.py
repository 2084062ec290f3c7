"""The lane dispatcher on its own (no database): bounds per lane and in all, every item once,
a slow lane does not hold up the others, a failing lane does not stop the rest."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from billhive.delivery import lanes
from billhive.work.outbox import Batch, Claim


class FakeChannel:
    """Lanes of queued items; ``deliver`` takes ``delay[lane]`` seconds per batch."""

    def __init__(self, items: dict[str, int], *, delay: dict[str, float] | None = None,
                 fail: set[str] | None = None):
        self.queue = {lane: list(range(n)) for lane, n in items.items()}
        self.delay = delay or {}
        self.fail = fail or set()
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.peak_total = 0
        self.done: Counter[str] = Counter()
        self.finished_at: dict[str, float] = {}

    async def due_lanes(self, app) -> list:  # type: ignore[no-untyped-def]
        return [lane for lane, q in self.queue.items() if q]

    async def claim(self, app, lane: str, n: int) -> Batch:  # type: ignore[no-untyped-def]
        taken, self.queue[lane] = self.queue[lane][:n], self.queue[lane][n:]
        claims = [Claim(i, 1, lane, 1, 0, 0, {"lane": lane}) for i in taken]
        return Batch(None, claims, {})  # type: ignore[arg-type]

    async def deliver(self, app, batch: Batch) -> None:  # type: ignore[no-untyped-def]
        lane = batch.claims[0].event_id
        n = len(batch.claims)
        self.in_flight[lane] += n
        self.peak[lane] = max(self.peak[lane], self.in_flight[lane])
        self.peak_total = max(self.peak_total, sum(self.in_flight.values()))
        try:
            await asyncio.sleep(self.delay.get(lane, 0.001))
            if lane in self.fail:
                raise RuntimeError("the record transaction failed")
            self.done[lane] += n
            if not self.queue[lane]:
                self.finished_at[lane] = time.monotonic()
        finally:
            self.in_flight[lane] -= n

    def channel(self, per_lane: int, total: int) -> lanes.Channel:
        return lanes.Channel("fake", self.due_lanes, self.claim, self.deliver, per_lane=per_lane, total=total)


def test_bounds_per_lane_and_in_all_every_item_once():
    fake = FakeChannel({f"l{i}": 20 for i in range(10)}, delay={f"l{i}": 0.01 for i in range(10)})
    d = lanes.Dispatcher(fake.channel(per_lane=3, total=7))
    handled = asyncio.run(d.run_once(None, rounds=100))  # type: ignore[arg-type]
    assert handled == 200 and fake.done == {f"l{i}": 20 for i in range(10)}
    assert max(fake.peak.values()) == 3
    assert fake.peak_total <= 7
    assert d.in_flight == 0 and not d.lanes


def test_a_slow_lane_does_not_hold_up_the_others():
    fake = FakeChannel({"slow": 10, "fast": 50}, delay={"slow": 1.0, "fast": 0.001})
    d = lanes.Dispatcher(fake.channel(per_lane=5, total=100))

    async def run() -> float:
        started = time.monotonic()
        await d.run_once(None)  # type: ignore[arg-type]
        return started
    started = asyncio.run(run())
    assert fake.finished_at["fast"] - started < 0.5 < fake.finished_at["slow"] - started
    assert fake.peak["slow"] == 5


def test_a_failing_lane_stops_alone():
    fake = FakeChannel({"bad": 5, "good": 5}, fail={"bad"})
    d = lanes.Dispatcher(fake.channel(per_lane=2, total=10))
    asyncio.run(d.run_once(None, rounds=1))  # type: ignore[arg-type]
    assert fake.done["good"] == 5 and fake.done["bad"] == 0
    assert d.in_flight == 0 and not d.lanes


def test_step_returns_while_lanes_run_so_new_work_is_seen():
    fake = FakeChannel({"slow": 1}, delay={"slow": 2.0})
    d = lanes.Dispatcher(fake.channel(per_lane=1, total=10))

    async def run() -> tuple[float, int]:
        assert await d.step(None, 0.1) == 1  # type: ignore[arg-type]  # started the slow lane
        fake.queue["new"] = [1]
        t = time.monotonic()
        assert await d.step(None, 0.1)  # type: ignore[arg-type]  # started "new" at once
        while fake.done["new"] == 0:
            await d.step(None, 0.1)  # type: ignore[arg-type]
        took = time.monotonic() - t
        await d.close()
        return took, fake.done["slow"]
    took, slow_done = asyncio.run(run())
    assert took < 0.5 and slow_done == 0
