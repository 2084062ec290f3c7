"""1,000 events, a receiver that goes down for part of the run, one injected crash: every
event arrives, duplicates only where the crash was, every attempt recorded."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from billhive.delivery import webhooks
from billhive.store import schema as S
from tests.support.delivery import (
    GENESIS,
    add_endpoint,
    emit,
    travel,
    wait_until,
    webhook_attempts,
    webhook_deliveries,
)


def _counts(site) -> tuple[int, int, int]:
    """(deliveries, attempted at least once and not claimed now, succeeded) of the site, counted by the
    database: the waits below poll every 0.1 s, and reading the 1,000 rows each time cost seconds of CPU."""
    d = S.webhook_deliveries
    return site.app.db.read_sync(lambda tx: tuple(tx.one(select(
        func.count(),
        func.count().filter((d.c.attempts >= 1) & d.c.claimed_until.is_(None)),
        func.count().filter(d.c.status == "succeeded")).where(d.c.site_id == site.pk))))


@pytest.mark.slow
def test_thousand_events_receiver_down_for_a_while(tm_site, receiver, short_lease, monkeypatch):
    tm_site.setting(webhook_timeout=2)
    ep = add_endpoint(tm_site, receiver.url, secret="whsec_load")

    # one crash after a batch was POSTed (and answered 200) but before it was recorded
    armed = threading.Event()
    crashed: list[str] = []
    real = webhooks._record

    def record(batch, results):
        if armed.is_set() and not crashed and results and all(o.ok for o in results.values()):
            crashed.extend(c.event_id for c in batch.claims)
            raise RuntimeError("injected crash between POST and record")
        return real(batch, results)

    monkeypatch.setattr(webhooks, "_record", record)

    first = emit(tm_site, n=300)  # receiver up
    wait_until(lambda: len(receiver.received) >= 100, what="the first deliveries")
    receiver.stop()  # down in the middle of the stream
    down = emit(tm_site, n=400)

    def all_attempted():
        total, attempted, _ = _counts(tm_site)
        return total == attempted == 700
    wait_until(all_attempted, timeout=30, interval=0.1, what="every delivery attempted once")
    failed_once = {r["event_id"] for r in webhook_deliveries(tm_site) if r["status"] == "re_scheduled"}
    assert set(e["id"] for e in down) <= failed_once

    receiver.start()
    armed.set()
    last = emit(tm_site, n=300)  # receiver up again
    travel(tm_site, GENESIS + 120)  # the first retry of everything that failed is due
    all_ids = [e["id"] for e in first + down + last]
    assert len(set(all_ids)) == 1000

    wait_until(lambda: _counts(tm_site)[::2] == (1000, 1000), timeout=60, interval=0.1,
               what="every delivery succeeded")
    assert [r["status"] for r in webhook_deliveries(tm_site)] == ["succeeded"] * 1000

    # every event arrived; an event arrived twice only if its batch was in the injected crash
    got = Counter(receiver.events())
    assert set(got) == set(all_ids)
    assert crashed, "the crash was never injected"
    duplicates = {i for i, n in got.items() if n > 1}
    assert duplicates == set(crashed)
    assert all(got[i] == 2 for i in duplicates)

    # every attempt is recorded: exactly one success per delivery; failures before it
    deliveries = {d["pk"]: d for d in webhook_deliveries(tm_site)}
    by_delivery: dict[int, list[dict]] = {}
    for a in webhook_attempts(tm_site):
        by_delivery.setdefault(a["delivery_pk"], []).append(a)
    assert set(by_delivery) == set(deliveries)
    for pk, attempts in by_delivery.items():
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert [a["status_code"] for a in attempts].count(200) == 1 and attempts[-1]["status_code"] == 200
        for a in attempts[:-1]:
            assert a["error"] and a["error"] != "in progress"
        eid = deliveries[pk]["event_id"]
        if eid in failed_once:
            assert attempts[0]["status_code"] is None and attempts[-1]["attempted_at"] >= GENESIS + 120
        if eid in crashed:
            assert any(a["error"].startswith("no result recorded") for a in attempts[:-1])
        if eid not in failed_once and eid not in crashed:
            assert len(attempts) == 1

    # and the events say so
    ev = S.events
    rows = tm_site.app.db.read_sync(lambda tx: tx.all(select(ev.c.webhook_status).where(ev.c.site_id == tm_site.pk)))
    assert Counter(r[0] for r in rows) == {"succeeded": 1000}
    sample = tm_site.api.get(f"/events/{down[0]['id']}")["event"]
    assert sample["webhooks"] == [{"id": ep.id, "webhook_status": "succeeded"}]
