"""PostgreSQL's group-commit lanes (billhive/store/postgres.py): a site's collects share a lane,
whose batches lock the site's invoice number sequence once; another site's units run on another
lane and never wait for them (issue 17, target 3: the per-site sequence is not a global lock)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from billhive.store.db import Database


@pytest.mark.postgres
def test_a_busy_lane_holds_up_its_own_site_only(pg_url):
    db = Database(pg_url)
    started, release = threading.Event(), threading.Event()

    def hold(tx):  # type: ignore[no-untyped-def]
        started.set()
        assert release.wait(30)
        return "held"

    async def go() -> None:
        loop = asyncio.get_running_loop()
        held = asyncio.ensure_future(db.write(hold, lane=1))
        assert await loop.run_in_executor(None, started.wait, 30)
        # site 2's unit runs while site 1's lane is busy
        other = await asyncio.wait_for(db.write(lambda tx: tx.cur.execute("SELECT 2").fetchone()[0], lane=2), 20)
        assert other == 2 and not held.done()
        # site 1's next unit waits for its lane
        same = asyncio.ensure_future(db.write(lambda tx: tx.cur.execute("SELECT 1").fetchone()[0], lane=1))
        await asyncio.sleep(0.3)
        assert not same.done()
        release.set()
        assert await held == "held" and await same == 1
        threads = (await db.health())["threads"]
        assert threads == {"billhive-pg-lane-1": True, "billhive-pg-lane-2": True}

    try:
        asyncio.run(go())
    finally:
        release.set()
        db.close()
