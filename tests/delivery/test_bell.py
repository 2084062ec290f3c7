"""The delivery loops' bell (billhive/util/bell.py): a write that records due deliveries rings it
once it commits, and the webhook loop passes at once instead of at its next poll."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from billhive.runtime import App, Config
from billhive.store import migrate
from billhive.util.bell import Bell
from tests.support.delivery import add_endpoint, emit, wait_until
from tests.support.server import LiveServer, new_site

POLL = 60.0  # the loops' poll: a delivery seen within WITHIN seconds came from a ring
WITHIN = 10.0


def test_a_ring_ends_a_pause_from_another_thread_or_the_next_pause():
    bell = Bell()

    async def main() -> tuple[float, float, float]:
        listener = bell.listen()
        started = time.monotonic()
        threading.Timer(0.05, bell.ring).start()
        await listener.pause(POLL)
        rung = time.monotonic() - started
        bell.ring()  # while the listener is busy, not pausing: its next pause ends at once
        started = time.monotonic()
        await listener.pause(POLL)
        kept = time.monotonic() - started
        started = time.monotonic()
        await listener.pause(0.2)  # that ring was used up: no ring, the whole pause
        unrung = time.monotonic() - started
        listener.close()
        bell.ring()  # no listener: nothing to wake
        return rung, kept, unrung
    rung, kept, unrung = asyncio.run(main())
    assert rung < WITHIN and kept < WITHIN
    assert unrung >= 0.2


@pytest.fixture(params=["sqlite", "postgres"])
def slow_polling_server(request, tmp_path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'bell.db'}" if request.param == "sqlite" else request.getfixturevalue("fresh_pg_url")
    migrate.upgrade(url)
    app = App.open(Config(database_url=url, delivery_interval=POLL, scheduler_interval=POLL))
    server = LiveServer(app)
    yield server
    server.stop()
    app.close()


def test_an_event_goes_out_at_once_not_at_the_next_poll(slow_polling_server, receiver):
    server = slow_polling_server
    site = new_site(server)
    add_endpoint(site, receiver.url)
    loops = server.app.loops
    wait_until(lambda: "webhook delivery" in loops and loops["webhook delivery"].passes >= 1,
               what="the webhook loop's first pass")  # it now pauses for POLL seconds
    time.sleep(0.2)

    started = time.monotonic()
    receiver.delay = 1.0  # it answers each POST a second after receiving it
    (ev,) = emit(site, "customer_created")  # write_sync: rings once committed
    wait_until(lambda: receiver.for_event(ev["id"]), timeout=WITHIN, what="the event at the receiver")
    # while the loop is still busy with that delivery (waiting for its answer), an API write rings:
    # the ring must not be lost - the loop's next pause ends at once
    created = site.api.post("/customers", {"id": "bell_1", "email": "bell@example.com"})["customer"]
    assert created["id"] == "bell_1"
    wait_until(lambda: [e for e in receiver.events() if e != ev["id"]], timeout=WITHIN,
               what="customer_created of the API's write at the receiver")
    assert time.monotonic() - started < POLL
