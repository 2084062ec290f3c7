"""chargebee-idempotency-key across a crash: SIGKILL the server at each step of
POST /invoices/charge (before the commit, after it, after the gateway charged, after the
settlement), restart it, retry with the same key: exactly one invoice and one charge at the
gateway, and the retry's answer is the settled invoice, replayed as such ever after."""

from __future__ import annotations

import time

import httpx
import pytest

from billhive.store.resources import INVOICES, TRANSACTIONS
from tests.support import factories as F
from tests.support.crash import Handle, open_site
from tests.support.process import ServerProcess

pytestmark = pytest.mark.slow
AMOUNT = 1234
# a retry takes a dead request's claim over after 1 s without a heartbeat, not 120 (the retry
# waits in the server until then)
RESUME = {"BILLHIVE_IDEMPOTENCY_STALE": "1"}


@pytest.fixture
def handle(crash_db):  # type: ignore[no-untyped-def]
    h = open_site(crash_db, "idem")
    yield h
    h.app.close()


def charge(server: ServerProcess, h: Handle, customer_id: str, ikey: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/v1/invoices/charge", auth=(h.key, ""), timeout=30,
                      headers={"chargebee-idempotency-key": ikey},
                      data={"customer_id": customer_id, "amount": AMOUNT, "description": "Setup fee"})


def books(h: Handle) -> tuple[list[dict], list[dict], dict[str, str]]:
    invoices, txns = h.app.db.read_sync(lambda tx: (INVOICES.find(tx, h.pk), TRANSACTIONS.find(tx, h.pk)))
    return invoices, txns, h.app.gateways["chargebee"].charges(h.pk)


def wait_settled(h: Handle, timeout: float = 30) -> None:
    """Recovery (at start) settled every interrupted charge. A charge made first (before its invoice
    exists, services/charge_first.py) has no transaction yet: recovery leaves its attempt alone
    (only an attempt older than charge_first.GRACE is resolved) so that the retry completes it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, txns, charged = books(h)
        if all(t["status"] == "success" for t in txns) and (txns or charged):
            return
        time.sleep(0.1)
    raise AssertionError("recovery did not settle the interrupted charge")


# (failpoint, whether payment recovery runs - and settles - before the retry comes)
POINTS = [
    ("idempotency.before_commit", False),  # in the operation's transaction: nothing committed
    ("idempotency.committed", False),  # invoice and in-progress charge committed; gateway not called
    ("charge.answered", False),  # charged at the gateway, not settled: the retry settles it
    ("charge.answered", True),  # ... or recovery settled it before the retry came
    ("idempotency.before_store", False),  # settled; the answer was not stored
]
# PostgreSQL at the three points where the store's commit matters (to keep the file's run time down)
CASES = [("sqlite", *p) for p in POINTS] + [("postgres", *p) for p in POINTS[1:3] + POINTS[4:]]


@pytest.mark.parametrize("crash_db,point,recovery_first", CASES, indirect=["crash_db"])
def test_retry_after_a_crash_charges_once_and_answers_the_settled_invoice(handle, crash_db, tmp_path, point,
                                                                          recovery_first):
    h = handle
    cust = F.customer(h, customer_id="c1")  # type: ignore[arg-type]
    log = tmp_path / "server.log"
    server = ServerProcess(crash_db, failpoints=point, log_path=log, args=("--no-background",))
    with pytest.raises(httpx.HTTPError):  # the server dies before it answers
        charge(server, h, cust["id"], "charge-once")
    assert server.wait_exit() != 0, "the failpoint should have killed the server"

    background = () if recovery_first else ("--no-background",)
    server = ServerProcess(crash_db, log_path=log, extra_env=RESUME, args=background)
    try:
        if recovery_first:
            wait_settled(h)  # recovery (at start) settled the charge from the gateway's books
        r = charge(server, h, cust["id"], "charge-once")
        assert r.status_code == 200, r.text
        assert "chargebee-idempotency-replayed" not in r.headers
        inv = r.json()["invoice"]
        assert inv["status"] == "paid" and inv["amount_paid"] == AMOUNT and inv["amount_due"] == 0

        invoices, txns, at_gateway = books(h)
        assert [i["id"] for i in invoices] == [inv["id"]]  # one invoice ...
        (txn,) = [t for t in txns if t["type"] == "payment"]  # ... one payment ...
        assert txn["status"] == "success" and txn["amount"] == AMOUNT
        assert at_gateway == {txn["id"]: "success"}  # ... exactly one charge at the gateway
        assert invoices[0]["status"] == "paid"

        again = charge(server, h, cust["id"], "charge-once")  # from now on: the same answer, replayed
        assert again.status_code == 200 and again.headers["chargebee-idempotency-replayed"] == "true"
        assert again.json() == r.json()
        assert books(h)[2] == at_gateway
    finally:
        server.stop()
