"""Payment operations around collect: collect_payment, record_payment, refunds, void, dunning."""

from __future__ import annotations

import pytest

from billhive.services import credits
from billhive.store.resources import CARDS, CUSTOMERS
from tests.support import factories as F
from tests.support import timemachine

GENESIS = 1_767_225_600
DAY = 86400


@pytest.fixture
def tsite(site):
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


def due_invoice(site, **customer_kw) -> dict:
    """A closed payment_due invoice of 1000 (auto-collection off unless a card is wanted)."""
    customer_kw.setdefault("auto_collection", "off")
    cust = F.customer(site, **customer_kw)
    inv = site.api.post(f"/invoices/{F.pending_invoice(site, cust['id'])['id']}/collect")["invoice"]
    assert inv["status"] == "payment_due"
    return inv


def customer_doc(site, cid):
    return site.app.db.read_sync(lambda tx: CUSTOMERS.get(tx, site.pk, cid))


def travel(site, to):
    timemachine.travel(site.api, to)


# ---- record_payment ---------------------------------------------------------------------------

def test_record_payment_full_marks_paid(tsite):
    inv = due_invoice(tsite)
    r = tsite.api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "cash", "paid_at": GENESIS,
                                                                  "reference_number": "R-1"}).body
    assert r["invoice"]["status"] == "paid" and r["invoice"]["paid_on"] == GENESIS
    assert r["transaction"]["payment_method"] == "cash" and r["transaction"]["amount"] == 1000
    assert r["transaction"]["reference_number"] == "R-1"


def test_record_payment_partial_then_rest(tsite):
    inv = due_invoice(tsite)
    r = tsite.api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "check", "paid_at": GENESIS,
                                                                  "amount": 400})["invoice"]
    assert r["status"] == "payment_due" and r["amount_due"] == 600 and r["amount_paid"] == 400
    r = tsite.api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "check", "paid_at": GENESIS,
                                                                  "amount": 600})["invoice"]
    assert r["status"] == "paid"


def test_record_overpayment_becomes_excess_payment_used_by_next_invoice(tsite):
    inv = due_invoice(tsite)
    tsite.api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "bank_transfer",
                                                              "paid_at": GENESIS, "amount": 1500})
    c = customer_doc(tsite, inv["customer_id"])
    assert c["excess_payments"] == 500
    nxt = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, c['id'])['id']}/collect")["invoice"]
    assert nxt["amount_paid"] == 500 and nxt["amount_due"] == 500
    assert customer_doc(tsite, c["id"])["excess_payments"] == 0


def test_record_payment_bad_input_changes_nothing(tsite):
    inv = due_invoice(tsite)
    api = tsite.api
    assert api.post(f"/invoices/{inv['id']}/record_payment", {"paid_at": GENESIS}, expect=400)["param"] == \
        "payment_method"
    assert api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "gold", "paid_at": GENESIS},
                    expect=400)["param"] == "payment_method"
    assert api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "cash", "paid_at": GENESIS,
                                                              "amount": -5}, expect=400)["param"] == "amount"
    assert api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "cash", "paid_at": GENESIS,
                                                              "amount": "1.5"}, expect=400)["param"] == "amount"
    assert api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "cash",
                                                              "paid_at": GENESIS + 10}, expect=400)["param"] == \
        "paid_at"
    assert api.get(f"/invoices/{inv['id']}")["invoice"] == inv


# ---- collect_payment --------------------------------------------------------------------------

def test_collect_payment_charges_card(tsite):
    inv = due_invoice(tsite)  # auto-collection off, card on file
    r = tsite.api.post(f"/invoices/{inv['id']}/collect_payment").body
    assert r["invoice"]["status"] == "paid" and r["transaction"]["status"] == "success"
    assert r["transaction"]["amount"] == 1000


def test_collect_payment_partial_amount(tsite):
    inv = due_invoice(tsite)
    r = tsite.api.post(f"/invoices/{inv['id']}/collect_payment", {"amount": 300})["invoice"]
    assert r["amount_due"] == 700 and r["status"] == "payment_due"
    assert tsite.api.post(f"/invoices/{inv['id']}/collect_payment", {"amount": 701}, expect=400)["param"] == "amount"


def test_collect_payment_failure_is_400_payment_and_recorded(tsite):
    inv = due_invoice(tsite, card=F.DECLINE_CARD)
    r = tsite.api.post(f"/invoices/{inv['id']}/collect_payment", expect=400)
    assert r["api_error_code"] == "payment_processing_failed" and r["type"] == "payment"
    txns = tsite.api.get(f"/invoices/{inv['id']}/transactions").body["list"]
    assert [t["transaction"]["status"] for t in txns] == ["failure"]
    assert tsite.api.get(f"/invoices/{inv['id']}")["invoice"]["status"] == "payment_due"


def test_collect_payment_without_card(tsite):
    inv = due_invoice(tsite, card=None)
    r = tsite.api.post(f"/invoices/{inv['id']}/collect_payment", expect=400)
    assert r["api_error_code"] == "payment_method_not_present"


def test_collect_payment_on_paid_invoice_is_409(tsite):
    cust = F.customer(tsite)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    tsite.api.post(f"/invoices/{inv['id']}/collect_payment", expect=409)


# ---- void, delete ---------------------------------------------------------------------------------

def test_void_releases_applied_credits(tsite):
    inv = due_invoice(tsite, promotional=100, refundable=200, card=None)
    assert inv["credits_applied"] == 200 and inv["amount"] == 900
    voided = tsite.api.post(f"/invoices/{inv['id']}/void", {"comment": "mistake"})["invoice"]
    assert voided["status"] == "voided"
    c = customer_doc(tsite, inv["customer_id"])
    assert c["account_credits"] == 100 and c["refundable_credits"] == 200
    for kind in ("promotional", "refundable"):
        assert tsite.app.db.read_sync(lambda tx, kind=kind: credits.ledger_sum(tx, tsite.pk, c["id"], kind)) == \
            credits.balance(c, kind)
    tsite.api.post(f"/invoices/{inv['id']}/void", expect=409)


def test_void_refused_for_paid_and_pending(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"])
    tsite.api.post(f"/invoices/{draft['id']}/void", expect=409)
    paid = tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    tsite.api.post(f"/invoices/{paid['id']}/void", expect=409)
    tsite.api.post(f"/invoices/{paid['id']}/delete", expect=409)


# ---- refunds ----------------------------------------------------------------------------------------

def paid_by_card(site, amount=1000):
    cust = F.customer(site)
    return site.api.post(f"/invoices/{F.pending_invoice(site, cust['id'], ((amount, 'x'),))['id']}/collect")[
        "invoice"]


def test_partial_then_full_refund(tsite):
    inv = paid_by_card(tsite)
    r = tsite.api.post(f"/invoices/{inv['id']}/refund", {"refund_amount": 300, "memo": "goodwill"}).body
    assert r["transaction"]["type"] == "refund" and r["transaction"]["status"] == "success"
    assert r["transaction"]["amount"] == 300 and r["invoice"]["status"] == "paid"
    r = tsite.api.post(f"/invoices/{inv['id']}/refund").body  # the rest
    assert r["transaction"]["amount"] == 700
    assert tsite.api.post(f"/invoices/{inv['id']}/refund", expect=400)["api_error_code"] == "invalid_request"
    original = tsite.api.get(f"/transactions/{inv['linked_transactions'][0]['txn_id']}")["transaction"]
    assert [lr["txn_amount"] for lr in original["linked_refunds"]] == [300, 700]
    kinds = [e["event_type"] for e in F.events_of(tsite)]
    assert kinds.count("payment_refunded") == 2


def test_refund_more_than_paid_is_400(tsite):
    inv = paid_by_card(tsite)
    assert tsite.api.post(f"/invoices/{inv['id']}/refund", {"refund_amount": 1001},
                          expect=400)["param"] == "refund_amount"


def test_refund_of_offline_payment_needs_record_refund(tsite):
    inv = due_invoice(tsite, card=None)
    tsite.api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "cash", "paid_at": GENESIS})
    assert tsite.api.post(f"/invoices/{inv['id']}/refund", expect=400)["api_error_code"] == "invalid_request"
    r = tsite.api.post(f"/invoices/{inv['id']}/record_refund", {
        "memo": "returned in cash", "transaction[amount]": 400, "transaction[payment_method]": "cash",
        "transaction[date]": GENESIS}).body
    assert r["transaction"]["type"] == "refund" and r["transaction"]["amount"] == 400
    assert tsite.api.post(f"/invoices/{inv['id']}/record_refund", {"memo": "x"}, expect=400)["param"].startswith(
        "transaction[")


# ---- dunning ------------------------------------------------------------------------------------------

def test_dunning_retries_then_exhausts_to_not_paid(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    assert inv["next_retry"] == GENESIS + DAY
    travel(tsite, GENESIS + DAY + 60)
    inv = tsite.api.get(f"/invoices/{inv['id']}")["invoice"]
    assert inv["dunning_status"] == "in_progress" and inv["next_retry"] == GENESIS + 3 * DAY
    travel(tsite, GENESIS + 10 * DAY)
    inv = tsite.api.get(f"/invoices/{inv['id']}")["invoice"]
    assert inv["status"] == "not_paid" and inv["dunning_status"] == "exhausted" and "next_retry" not in inv
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 4  # first attempt + 3 retries
    kinds = [e["event_type"] for e in F.events_of(tsite)]
    assert kinds.count("payment_failed") == 4


def test_dunning_succeeds_after_card_replaced(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    good = F.store_card(tsite, F.SUCCESS_CARD)

    def swap(w):
        c = CUSTOMERS.require(w.tx, w.site_id, cust["id"])
        c["payment_method"]["reference_id"] = good["reference_id"]
        CUSTOMERS.save(w.tx, w.site_id, c, w.now)
        CARDS.save(w.tx, w.site_id, {**good, "customer_id": cust["id"]}, w.now)
    tsite.ctx().write_sync(swap)
    travel(tsite, GENESIS + DAY + 1)
    inv = tsite.api.get(f"/invoices/{inv['id']}")["invoice"]
    assert inv["status"] == "paid" and inv["dunning_status"] == "success" and inv["paid_on"] == GENESIS + DAY


def test_dunning_final_action_void(tsite):
    tsite.setting(dunning_final_action="voided", dunning_retry_days="1")
    cust = F.customer(tsite, card=F.DECLINE_CARD, refundable=100)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    travel(tsite, GENESIS + 2 * DAY)
    inv = tsite.api.get(f"/invoices/{inv['id']}")["invoice"]
    assert inv["status"] == "voided" and inv["dunning_status"] == "exhausted"
    assert customer_doc(tsite, cust["id"])["refundable_credits"] == 100


def test_stop_dunning_marks_not_paid(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    stopped = tsite.api.post(f"/invoices/{inv['id']}/stop_dunning")["invoice"]
    assert stopped["status"] == "not_paid" and stopped["dunning_status"] == "stopped"
    tsite.api.post(f"/invoices/{inv['id']}/stop_dunning", expect=409)
    travel(tsite, GENESIS + 10 * DAY)
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 1  # no retries after stop


def test_manual_payment_during_dunning_stops_it(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    paid = tsite.api.post(f"/invoices/{inv['id']}/record_payment", {"payment_method": "cash",
                                                                     "paid_at": GENESIS})["invoice"]
    assert paid["status"] == "paid" and paid["dunning_status"] == "stopped"
    travel(tsite, GENESIS + 10 * DAY)
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 1


# ---- transactions lists ---------------------------------------------------------------------------

def test_transaction_lists(tsite):
    inv = paid_by_card(tsite)
    cid = inv["customer_id"]
    for path in ("/transactions", f"/customers/{cid}/transactions", f"/invoices/{inv['id']}/transactions"):
        listed = tsite.api.get(path).body["list"]
        assert [t["transaction"]["id"] for t in listed] == [inv["linked_transactions"][0]["txn_id"]], path
    assert tsite.api.get("/transactions", {"status[is]": "failure"}).body == {"list": []}
    tsite.api.get("/transactions/txn_nope", expect=404)


# ---- outcomes the gateway does not report at once (the timeout card) --------------------------------

def test_timed_out_charge_is_initiated_then_settled_by_recovery(tsite):
    import asyncio

    from billhive.services import payments

    cust = F.customer(tsite, card=F.TIMEOUT_CARD)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    assert inv["status"] == "payment_due"
    (txn,) = [t["transaction"] for t in tsite.api.get(f"/invoices/{inv['id']}/transactions").body["list"]]
    assert txn["status"] == "timeout"
    kinds = [e["event_type"] for e in F.events_of(tsite)]
    assert kinds == ["invoice_generated", "transaction_created", "payment_initiated"]
    assert asyncio.run(payments.recover_site(tsite.app, tsite.pk)) == 1
    inv = tsite.api.get(f"/invoices/{inv['id']}")["invoice"]
    assert inv["status"] == "paid" and inv["amount_paid"] == 1000
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 1  # settled from the books, not charged again
    kinds = [e["event_type"] for e in F.events_of(tsite)]
    assert kinds[-2:] == ["transaction_updated", "payment_succeeded"]


def test_timed_out_refund_is_initiated_then_settled_by_recovery(tsite):
    import asyncio

    from billhive.services import payments

    cust = F.customer(tsite, card=F.TIMEOUT_CARD)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    asyncio.run(payments.recover_site(tsite.app, tsite.pk))
    r = tsite.api.post(f"/invoices/{inv['id']}/refund", {"refund_amount": 400}).body
    assert r["transaction"]["status"] == "timeout"
    assert [e["event_type"] for e in F.events_of(tsite)][-1] == "refund_initiated"
    assert asyncio.run(payments.recover_site(tsite.app, tsite.pk)) == 1
    refund = tsite.api.get(f"/transactions/{r['transaction']['id']}")["transaction"]
    assert refund["status"] == "success"
    assert [e["event_type"] for e in F.events_of(tsite)][-1] == "payment_refunded"


def test_recovery_leaves_a_refund_in_flight_at_the_gateway_to_its_request(tsite, monkeypatch):
    """Recovery runs while a refund request is asking the gateway (recorded in_progress, not yet
    seen by the gateway): it must not fail that refund, or a refund then made would be recorded as
    failed (money refunded, books saying not). The request settles it as the gateway answers."""
    import asyncio

    from billhive.services import payments

    inv = paid_by_card(tsite)
    gateway = tsite.app.gateways["chargebee"]
    real = gateway.refund
    passes: list[int] = []

    async def refund_meanwhile_recovery(*args, **kw):
        passes.append(await payments.recover_site(tsite.app, tsite.pk))  # the background pass, now
        return await real(*args, **kw)

    monkeypatch.setattr(gateway, "refund", refund_meanwhile_recovery)
    r = tsite.api.post(f"/invoices/{inv['id']}/refund", {"refund_amount": 400}).body
    assert passes == [0]  # recovery saw it unknown to the gateway and left it
    assert r["transaction"]["status"] == "success" and r["transaction"]["amount"] == 400
    assert tsite.api.get(f"/transactions/{r['transaction']['id']}")["transaction"]["status"] == "success"
    assert asyncio.run(payments.recover_site(tsite.app, tsite.pk)) == 0
    assert (tsite.pk, r["transaction"]["id"]) not in tsite.app.unanswered_refunds  # forgotten once settled


def test_a_refund_the_gateway_never_saw_fails_once_unknown_past_the_grace(tsite, monkeypatch):
    """A crash between recording a refund and asking the gateway: recovery fails it (nothing was
    refunded, nothing is repeated), but only once the gateway has had no record of it for longer
    than a gateway call may take (``Config.refund_recovery_grace``)."""
    import asyncio

    from billhive.services import payments

    inv = paid_by_card(tsite)
    gateway = tsite.app.gateways["chargebee"]
    real = gateway.refund

    async def crash_before_the_gateway(*args, **kw):
        raise asyncio.CancelledError  # the process dies here: the refund stays in_progress, unseen

    monkeypatch.setattr(gateway, "refund", crash_before_the_gateway)
    with pytest.raises(AssertionError, match="500"):  # no answer: the request was cut off there
        tsite.api.post(f"/invoices/{inv['id']}/refund", {"refund_amount": 400})
    monkeypatch.setattr(gateway, "refund", real)
    (refund,) = [t for t in tsite.api.get("/transactions", {"limit": 100})["list"]
                 if t["transaction"]["type"] == "refund"]
    rid = refund["transaction"]["id"]
    assert refund["transaction"]["status"] == "in_progress"
    assert asyncio.run(payments.recover_site(tsite.app, tsite.pk)) == 0  # first seen: left for now
    assert asyncio.run(payments.recover_site(tsite.app, tsite.pk)) == 0  # within the grace: still left
    key = (tsite.pk, rid)
    tsite.app.unanswered_refunds[key] -= tsite.app.config.refund_recovery_grace  # the grace has gone by
    assert asyncio.run(payments.recover_site(tsite.app, tsite.pk)) == 1
    failed = tsite.api.get(f"/transactions/{rid}")["transaction"]
    assert failed["status"] == "failure" and failed["error_code"] == "not_processed"
    assert key not in tsite.app.unanswered_refunds
    assert tsite.api.get(f"/invoices/{inv['id']}")["invoice"]["status"] == "paid"  # nothing refunded
