"""Never charge twice: SIGKILL the server at each step of a collect under load, restart it,
and every invoice is either still pending with no charge, or closed with exactly one charge
(settled by recovery if the crash interrupted it)."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from sqlalchemy import select

from billhive.store import schema as S
from billhive.store.resources import INVOICES, TRANSACTIONS
from tests.support import factories as F
from tests.support.crash import Handle, open_site
from tests.support.process import ServerProcess

pytestmark = pytest.mark.slow
INVOICES_PER_RUN = 40


def seed(url: str) -> tuple[Handle, list[str]]:
    h = open_site(url)
    drafts = []
    for i in range(INVOICES_PER_RUN):
        cust = F.customer(h, customer_id=f"c{i}", refundable=100 if i % 3 == 0 else 0)  # type: ignore[arg-type]
        drafts.append(F.pending_invoice(h, cust["id"], ((1000 + i, "usage"),))["id"])  # type: ignore[arg-type]
    return h, drafts


def fire(base_url: str, key: str, drafts: list[str]) -> None:
    def one(draft: str) -> None:
        try:
            httpx.post(f"{base_url}/api/v1/invoices/{draft}/collect", auth=(key, ""), timeout=10)
        except httpx.HTTPError:
            pass  # the server died under us
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, drafts))


def check(h: Handle, drafts: list[str]) -> dict[str, int]:
    """The invariant, read straight from the database. Returns counts by outcome."""
    def read(tx):
        invoices = INVOICES.find(tx, h.pk)
        txns = TRANSACTIONS.find(tx, h.pk)
        drafts_of = dict(tx.all(select(S.invoices.c.id, S.invoices.c.draft_id).where(S.invoices.c.site_id == h.pk)))
        return invoices, txns, drafts_of
    invoices, txns, drafts_of = h.app.db.read_sync(read)
    charges = h.app.gateways["chargebee"].charges(h.pk)
    assert len(invoices) == len(drafts)
    by_invoice: dict[str, list[dict]] = {}
    for t in txns:
        if t["type"] == "payment" and t.get("gateway") == "chargebee":
            by_invoice.setdefault(t["linked_invoices"][0]["invoice_id"], []).append(t)
    outcome = {"pending": 0, "paid": 0}
    for inv in invoices:
        mine = by_invoice.get(inv["id"], [])
        if inv["status"] == "pending":
            assert inv["id"] in drafts and mine == [], inv
            outcome["pending"] += 1
            continue
        assert drafts_of[inv["id"]] in drafts
        assert inv["status"] == "paid", inv
        assert len(mine) == 1, (inv["id"], mine)  # exactly one charge attempt for it ...
        (txn,) = mine
        assert txn["status"] == "success", txn  # ... settled (by recovery if need be) ...
        assert charges.get(txn["id"]) == "success"  # ... and exactly one charge at the gateway
        assert inv["amount_paid"] + inv["credits_applied"] == inv["amount"]
        outcome["paid"] += 1
    assert set(charges) <= {t["id"] for t in txns}  # no charge at the gateway without its record
    numbers = sorted(int(i["id"]) for i in invoices if i["status"] != "pending")
    assert numbers == list(range(1, len(numbers) + 1))  # gapless
    return outcome


def wait_settled(h: Handle, timeout: float = 30) -> None:
    t = TRANSACTIONS.t
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = h.app.db.read_sync(lambda tx: TRANSACTIONS.find(tx, h.pk, t.c.status.in_(("in_progress", "timeout"))))
        if not left:
            return
        time.sleep(0.2)
    raise AssertionError(f"{len(left)} payments still unsettled after recovery")


@pytest.mark.parametrize("point", ["db.before_commit:7", "collect.closed:5", "charge.answered:5",
                                   "collect.done:5"])
def test_sigkill_at_each_step_of_collect(crash_db, tmp_path, point):
    h, drafts = seed(crash_db)
    try:
        server = ServerProcess(crash_db, failpoints=point, log_path=tmp_path / "server.log")
        fire(server.base_url, h.key, drafts)
        assert server.wait_exit() != 0, "the failpoint should have killed the server"
        server = ServerProcess(crash_db, log_path=tmp_path / "server.log")  # restart: recovery runs at start
        try:
            wait_settled(h)
            first = check(h, drafts)
            assert first["paid"] >= 1
            # the survivors can still be collected, once each
            fire(server.base_url, h.key, drafts)
            wait_settled(h)
            assert check(h, drafts) == {"pending": 0, "paid": len(drafts)}
        finally:
            server.stop()
    finally:
        h.app.close()


def test_sigkill_at_random_moments_under_load(crash_db, tmp_path):
    h, drafts = seed(crash_db)
    try:
        for delay in (0.15, 0.3):
            server = ServerProcess(crash_db, log_path=tmp_path / "server.log")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                load = pool.submit(fire, server.base_url, h.key, drafts)
                time.sleep(delay)
                server.kill()
                load.result()
        server = ServerProcess(crash_db, log_path=tmp_path / "server.log")
        try:
            wait_settled(h)
            check(h, drafts)
            fire(server.base_url, h.key, drafts)
            wait_settled(h)
            assert check(h, drafts) == {"pending": 0, "paid": len(drafts)}
        finally:
            server.stop()
    finally:
        h.app.close()
