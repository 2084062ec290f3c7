"""Never refund twice, never lose a refund: SIGKILL the server during POST /invoices/{id}/refund,
after the refund is recorded (in_progress) and before the gateway is asked (``refund.recorded``),
or after the gateway refunded and before the settlement (``refund.answered``); restart it.

Recovery settles the refund from the gateway's books (billhive/services/payments.py
``recover_site``): one the gateway never saw was never made, so it is failed (once it has been
unknown for ``Config.refund_recovery_grace``) and the money can be refunded again; one the gateway
made is settled as a success, with its ``payment_refunded`` event. Either way the gateway holds
exactly the refunds billhive's books call successful, and they never add up to more than was paid.
"""

from __future__ import annotations

import time

import httpx
import pytest

from billhive.store.resources import TRANSACTIONS
from tests.support import factories as F
from tests.support.crash import Handle, open_site
from tests.support.process import ServerProcess
from tests.support.server import Api

pytestmark = pytest.mark.slow
AMOUNT = 2000
PART = 500
# restarted servers: recovery every 0.5 s, and a refund unknown to the gateway is failed after 1 s
# (not 60: no request of the dead process can still be asking the gateway)
RECOVER_SOON = {"BILLHIVE_RECOVERY_INTERVAL": "0.5", "BILLHIVE_REFUND_RECOVERY_GRACE": "1"}


def api(server: ServerProcess, h: Handle) -> Api:
    """The tests' client on the server process (every answer checked against the spec)."""
    return Api(server, h.name, h.key, use_host=False)  # type: ignore[arg-type]


def refunds(h: Handle) -> list[dict]:
    """The site's refund transactions, oldest first, read straight from the database."""
    return [t for t in h.app.db.read_sync(lambda tx: TRANSACTIONS.find(tx, h.pk, order_by=[TRANSACTIONS.t.c.pk]))
            if t["type"] == "refund"]


def at_gateway(h: Handle) -> dict[str, str]:
    """The test gateway's refunds: idempotency key (billhive's refund id) -> status."""
    return h.app.gateways["chargebee"].operations(h.pk, "refund")


def wait_settled(h: Handle, refund_id: str, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        (r,) = [t for t in refunds(h) if t["id"] == refund_id]
        if r["status"] not in ("in_progress", "timeout"):
            return r
        time.sleep(0.1)
    raise AssertionError(f"recovery did not settle refund {refund_id}")


@pytest.mark.parametrize("point", ["refund.recorded", "refund.answered"])
def test_sigkill_mid_refund_then_recovery_settles_it_from_the_gateways_books(crash_db, tmp_path, point):
    h = open_site(crash_db, "refund")
    log = tmp_path / "server.log"
    try:
        F.customer(h, customer_id="c1")  # type: ignore[arg-type]
        server = ServerProcess(crash_db, log_path=log, args=("--no-background",))
        try:
            inv = api(server, h).post("/invoices/charge", {"customer_id": "c1", "amount": AMOUNT,
                                                           "description": "Setup"})["invoice"]
            assert inv["status"] == "paid" and inv["amount_paid"] == AMOUNT
        finally:
            server.stop()

        server = ServerProcess(crash_db, failpoints=point, log_path=log, args=("--no-background",))
        with pytest.raises(httpx.HTTPError):  # the server dies before it answers
            api(server, h).post(f"/invoices/{inv['id']}/refund", {"refund_amount": PART})
        assert server.wait_exit() != 0, "the failpoint should have killed the server"
        (refund,) = refunds(h)
        assert refund["status"] == "in_progress" and refund["amount"] == PART  # recorded, not settled
        made = point == "refund.answered"
        assert at_gateway(h) == ({refund["id"]: "success"} if made else {})

        server = ServerProcess(crash_db, log_path=log, extra_env=RECOVER_SOON)  # recovery runs
        try:
            settled = wait_settled(h, refund["id"])
            assert settled["status"] == ("success" if made else "failure"), settled
            assert at_gateway(h) == ({refund["id"]: "success"} if made else {})  # never asked again
            client = api(server, h)
            api_view = client.get(f"/transactions/{refund['id']}")["transaction"]
            assert api_view["status"] == settled["status"]
            linked = {t["txn_id"]: t["txn_status"]
                      for t in client.get(f"/invoices/{inv['id']}")["invoice"]["linked_transactions"]}
            assert linked[refund["id"]] == settled["status"]
            events = client.get("/events", {"event_type[is]": "payment_refunded", "limit": 100})["list"]
            assert len(events) == (1 if made else 0)

            # what is left to refund follows the books: the rest of the payment, then nothing
            rest = AMOUNT - (PART if made else 0)
            client.post(f"/invoices/{inv['id']}/refund", {"refund_amount": rest})  # expects 200
            client.post(f"/invoices/{inv['id']}/refund", {"refund_amount": 1}, expect=400)
            made_ids = {t["id"] for t in refunds(h) if t["status"] == "success"}
            assert at_gateway(h) == dict.fromkeys(made_ids, "success")
            assert sum(t["amount"] for t in refunds(h) if t["status"] == "success") == AMOUNT
        finally:
            server.stop()
    finally:
        h.app.close()
