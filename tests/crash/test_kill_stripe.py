"""Never charge twice, through Stripe: SIGKILL the server between Stripe's answer to a charge and
its settlement (``charge.answered``), restart it, and recovery settles the transaction from
Stripe's books (the PaymentIntent carrying its id) - exactly one charge at Stripe, none made again.
Stripe is localstripe (tests.support.stripe_fake); billhive runs as a real process."""

from __future__ import annotations

import httpx
import pytest

from billhive.store.resources import INVOICES, TRANSACTIONS
from tests.crash.test_kill_collect import wait_settled
from tests.support import factories as F
from tests.support.crash import Handle, open_site
from tests.support.process import ServerProcess
from tests.support.stripe_fake import KEY_FIELD

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # its two variants share the session's Stripe fake
CUSTOMERS = 3


def seed(url: str, stripe_fake) -> Handle:  # type: ignore[no-untyped-def]
    return open_site(url, settings=stripe_fake.settings())


def post(server: ServerProcess, h: Handle, path: str, data: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/v1{path}", data=data or {}, auth=(h.key, ""), timeout=30)


def test_sigkill_between_the_stripe_charge_and_its_settlement(crash_db, tmp_path, stripe_fake):
    h = seed(crash_db, stripe_fake)
    try:
        server = ServerProcess(crash_db, log_path=tmp_path / "server.log")
        try:
            for i in range(CUSTOMERS):  # cards stored at Stripe through the API
                r = post(server, h, "/customers", {"id": f"c{i}",
                                                   "card[number]": "4242424242424242", "card[expiry_month]": "12",
                                                   "card[expiry_year]": "2040", "card[cvv]": "123"})
                assert r.status_code == 200, r.text
        finally:
            server.stop()
        drafts = [F.pending_invoice(h, f"c{i}", ((1500 + i, "usage"),))["id"] for i in range(CUSTOMERS)]  # type: ignore[arg-type]

        server = ServerProcess(crash_db, failpoints="charge.answered:1", log_path=tmp_path / "server.log")
        with pytest.raises(httpx.HTTPError):
            post(server, h, f"/invoices/{drafts[0]}/collect")  # Stripe charged; the server dies before settling
        assert server.wait_exit() != 0, "the failpoint should have killed the server"
        (txn,) = h.app.db.read_sync(lambda tx: TRANSACTIONS.find(tx, h.pk))
        assert txn["status"] == "in_progress"  # billhive's books: the charge is not settled
        assert mine(stripe_fake, h, [txn["id"]]) == {txn["id"]: ["succeeded"]}  # Stripe's: it was made

        server = ServerProcess(crash_db, log_path=tmp_path / "server.log")  # restart: recovery runs at start
        try:
            wait_settled(h)
            (txn,) = h.app.db.read_sync(lambda tx: TRANSACTIONS.find(tx, h.pk))
            assert txn["status"] == "success" and txn["id_at_gateway"].startswith("pi_")
            inv = h.app.db.read_sync(lambda tx: INVOICES.find(tx, h.pk))
            assert [i["status"] for i in inv if i["status"] != "pending"] == ["paid"]
            assert mine(stripe_fake, h, [txn["id"]]) == {txn["id"]: ["succeeded"]}  # exactly one charge

            for draft in drafts:  # the collected one is collected already; the others once each
                post(server, h, f"/invoices/{draft}/collect")
            wait_settled(h)
            txns = h.app.db.read_sync(lambda tx: TRANSACTIONS.find(tx, h.pk))
            assert sorted(t["status"] for t in txns) == ["success"] * CUSTOMERS
            assert mine(stripe_fake, h, [t["id"] for t in txns]) == {t["id"]: ["succeeded"] for t in txns}
            ids = {t["id"] for t in txns}
            amounts = sorted(p["amount"] for p in stripe_fake.intents(h.pk) if p["metadata"][KEY_FIELD] in ids)
            assert amounts == [1500 + i for i in range(CUSTOMERS)]
        finally:
            server.stop()
    finally:
        h.app.close()


def mine(stripe_fake, h, txn_ids: list[str]) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Stripe's charges for this test's transactions: the fake is shared by the session, and a site's
    pk is the same in every fresh database (this test has its own), so other tests' charges carry the
    same site; each charge's key is a transaction id, unique across them."""
    return {k: v for k, v in stripe_fake.charges_by_key(h.pk).items() if k in txn_ids}
