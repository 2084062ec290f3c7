"""``billhive worker`` as a separate process, killed with SIGKILL in the middle of a batch of
POSTs and started again: every event is delivered; only the deliveries that were in flight
at the kill may arrive twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from billhive import sites, webhook_endpoints
from billhive.runtime import App, Config
from billhive.store import migrate
from billhive.store import schema as S
from billhive.work.context import Origin, Work
from tests.support.delivery import CUSTOMER, wait_until
from tests.support.zygote import Forked, Zygote

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_database(backend, tmp_path, request):
    """A database of its own: the session's server must not deliver these events."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'worker.db'}"
    return request.getfixturevalue("fresh_pg_url")


def start_worker(url: str, log: Path) -> Forked:
    """``billhive worker`` as a process of its own (forked by the zygote: tests/support/zygote.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BILLHIVE_DELIVERY_LEASE_GRACE": "1",
           "BILLHIVE_DELIVERY_INTERVAL": "0.05"}
    with open(log, "ab") as out:
        return Zygote.get().spawn(["worker", "--database-url", url], env=env, cwd=str(ROOT), stdout=out.fileno(),
                                  stderr=out.fileno())


def deliveries(app: App) -> list[tuple]:
    d = S.webhook_deliveries
    return app.db.read_sync(lambda tx: tx.all(select(d.c.event_id, d.c.status, d.c.pk).order_by(d.c.pk)))


def in_progress_attempts(app: App) -> list[int]:
    a = S.webhook_attempts
    rows = app.db.read_sync(lambda tx: tx.all(select(a.c.delivery_pk).where(a.c.error == "in progress")))
    return [r[0] for r in rows]


@pytest.mark.slow
def test_sigkill_mid_delivery_then_restart_loses_nothing(own_database, receiver, tmp_path):
    url = own_database
    migrate.upgrade(url)
    app = App.open(Config(database_url=url))  # this process only writes and reads; it delivers nothing
    workers: list[Forked] = []
    try:
        now = int(time.time())

        def setup(tx):  # type: ignore[no-untyped-def]
            site, _ = sites.create(tx, "proc-test", now=now)
            sites.set_settings(tx, "proc-test", {"webhook_timeout": "2"}, now)
            webhook_endpoints.add(tx, site.pk, receiver.url, now=now)
            return site.pk
        site_pk = app.db.write_sync(setup)

        def produce(tx):  # type: ignore[no-untyped-def]
            w = Work(tx, app, sites.load(tx, site_pk), Origin(user="test"))
            return [w.emit("customer_changed", {"customer": CUSTOMER})["id"] for _ in range(300)]
        ids = app.db.write_sync(produce)

        # kill the worker while it waits for the answer to the 60th request (so it is mid-batch)
        receiver.delay = 0.02
        killed = threading.Event()

        def respond(got) -> int:  # type: ignore[no-untyped-def]
            if not killed.is_set() and len(receiver.received) >= 60:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.set()
            return 200
        receiver.respond = respond
        log = tmp_path / "worker.log"
        workers.append(start_worker(url, log))
        assert killed.wait(60), log.read_text()
        workers[0].wait(10)
        assert workers[0].returncode == -signal.SIGKILL
        time.sleep(0.3)  # let in-flight handler threads finish
        receiver.respond = None
        in_flight = in_progress_attempts(app)
        assert in_flight, "the kill did not land mid-delivery"
        done_before = sum(1 for _, status, _ in deliveries(app) if status == "succeeded")
        assert done_before < 300
        received_before = len(receiver.received)

        workers.append(start_worker(url, log))  # restart: claims of the dead worker expire (~3 s)
        wait_until(lambda: all(status == "succeeded" for _, status, _ in deliveries(app)), timeout=60,
                   interval=0.1, what="every delivery after the restart")
        assert len(receiver.received) > received_before

        got = Counter(receiver.events())
        assert set(got) == set(ids)  # nothing lost
        in_flight_events = {eid for eid, _, pk in deliveries(app) if pk in set(in_flight)}
        duplicates = {i for i, n in got.items() if n > 1}
        assert duplicates <= in_flight_events  # duplicated only what was in flight at the kill
        assert duplicates, "the request answered while the worker died was not delivered again"
        assert all(n <= 2 for n in got.values())
        a = S.webhook_attempts
        abandoned = app.db.read_sync(lambda tx: tx.all(select(a.c.delivery_pk).where(a.c.error.like("no result%"))))
        assert {r[0] for r in abandoned} == set(in_flight)
        assert in_progress_attempts(app) == []
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        app.close()
