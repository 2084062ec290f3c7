"""A pass of payment recovery (billhive/services/payments.py ``recover``) reads every site's unsettled
payments in one read and settles only the sites that have some: a site whose payments are all settled
costs an indexed probe, not a pass of its own."""

from __future__ import annotations

import asyncio
import uuid

from billhive import sites
from billhive.services import payments
from billhive.store.resources import TRANSACTIONS

T0 = 1_735_689_600


def _site_with(app, status: str | None) -> int:  # type: ignore[no-untyped-def]
    def create(tx):  # type: ignore[no-untyped-def]
        site, _ = sites.create(tx, f"rp-{uuid.uuid4().hex[:10]}-test", now=T0)
        if status is not None:
            TRANSACTIONS.insert(tx, site.pk, {
                "id": f"txn_{uuid.uuid4().hex[:12]}", "object": "transaction", "customer_id": "cust_1",
                "type": "payment", "status": status, "date": T0, "amount": 100, "unused_amount": 0,
                "gateway": "not-a-gateway", "currency_code": "USD"}, T0)  # the server's own recovery passes skip it
        return site.pk
    return app.db.write_sync(create)


def test_recovery_visits_only_sites_with_unsettled_payments(app, monkeypatch):  # type: ignore[no-untyped-def]
    unsettled, timed_out, settled, none = (_site_with(app, s) for s in ("in_progress", "timeout", "success", None))
    visited: dict[int, list[str]] = {}

    async def recover_site(app, site_pk, pending=None):  # type: ignore[no-untyped-def]
        visited[site_pk] = [t["status"] for t in pending or []]
        return 0
    monkeypatch.setattr(payments, "recover_site", recover_site)
    asyncio.run(payments.recover(app))
    assert visited.get(unsettled) == ["in_progress"]
    assert visited.get(timed_out) == ["timeout"]
    assert {settled, none}.isdisjoint(visited)
