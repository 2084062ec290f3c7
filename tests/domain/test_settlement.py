"""Settling a charge (domain/settlement.py) and a refund (domain/refunds.py) on plain values.

Sources: SEMANTICS.md, "Collect" step 5 (success -> payment transaction linked, paid; failure ->
200 with the invoice payment_due, a failure transaction, dunning_status in_progress, next_retry =
now + the first offset, payment_failed) and "Dunning"; the spec's refund_an_invoice ("as many
partial refunds until you reach the total amount charged for the invoice") and
Transaction.linked_refunds / refunded_txn_id. One-off invoices exist only if their charge succeeds
(the spec's create_an_invoice: "The invoice will be generated only upon successful collection of
payments"; billhive voids it, services/invoices.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import dunning, refunds, settlement
from billhive.domain import invoices as D
from billhive.errors import ParamError

NOW = 1_700_000_000
DAY = 86400


@dataclass(frozen=True)
class Answer:
    status: str
    reference: str = "ch_1"
    error_code: str | None = None
    error_text: str | None = None


OK, DECLINED, TIMEOUT = Answer("success"), Answer("failure", "", "card_declined", "Declined"), Answer("timeout", "")


def invoice(amount: int = 1000, paid: int = 0) -> dict:
    return D.recompute({"id": "5", "customer_id": "c", "status": "payment_due", "start_date": NOW - DAY,
                        "subscription_id": "sub_1", "line_items": [{"amount": amount, "tax": 0}], "discounts": [],
                        "credits_applied": 0, "amount_paid": paid, "amount_adjusted": 0, "linked_transactions": []})


def charge(amount: int = 1000, status: str = "in_progress") -> dict:
    return {"id": "txn_1", "type": "payment", "status": status, "amount": amount, "date": NOW,
            "linked_invoices": [{"invoice_id": "5", "applied_amount": 0}]}


def test_a_successful_charge_pays_the_invoice():
    s = settlement.settle(charge(), invoice(), OK, purpose="close", now=NOW)
    assert s.final and s.applied == 1000 and s.transaction["status"] == "success"
    assert s.transaction["id_at_gateway"] == "ch_1" and s.transaction["linked_invoices"][0]["applied_amount"] == 1000
    inv = s.invoice
    assert inv["status"] == "paid" and inv["paid_on"] == NOW and inv["amount_due"] == 0 and inv["amount_paid"] == 1000
    assert inv["linked_transactions"] == [{"txn_id": "txn_1", "applied_amount": 1000, "applied_at": NOW,
                                           "txn_type": "payment", "txn_status": "success", "txn_date": NOW,
                                           "txn_amount": 1000}]
    assert s.events == ("invoice_generated", "transaction_created", "payment_succeeded")
    assert s.dunning is not None and not s.dunning.cancel_retry  # never in dunning


def test_a_partial_payment_leaves_the_invoice_due():
    s = settlement.settle(charge(400), invoice(), OK, purpose="collect_payment", now=NOW)
    assert s.invoice["status"] == "payment_due" and s.invoice["amount_due"] == 600 and s.dunning is None
    assert s.events == ("transaction_created", "payment_succeeded")


def test_a_retry_that_pays_ends_dunning_as_success():
    inv = {**invoice(), "dunning_status": "in_progress", "next_retry": NOW}
    s = settlement.settle(charge(), inv, OK, purpose="dunning", now=NOW)
    assert s.invoice["dunning_status"] == "success" and "next_retry" not in s.invoice
    assert s.dunning is not None and s.dunning.cancel_retry
    assert s.events == ("transaction_created", "payment_succeeded")


def test_a_failed_close_starts_dunning():
    assert settlement.needs_dunning_state(DECLINED, "close")
    s = settlement.settle(charge(), invoice(), DECLINED, purpose="close", now=NOW,
                          dunning_state=dunning.State(), dunning_settings=dunning.Settings((2, 4)))
    assert s.transaction["status"] == "failure" and s.transaction["error_code"] == "card_declined"
    assert s.invoice["status"] == "payment_due" and s.invoice["dunning_status"] == "in_progress"
    assert s.invoice["next_retry"] == NOW + 2 * DAY and s.dunning is not None and s.dunning.retry_at == NOW + 2 * DAY
    assert s.applied == 0 and s.invoice["amount_paid"] == 0 and s.invoice["amount_due"] == 1000
    (lt,) = s.invoice["linked_transactions"]  # Chargebee's payment_failed sample: listed, applied = attempted
    assert (lt["txn_status"], lt["applied_amount"]) == ("failure", 1000)
    assert s.transaction["linked_invoices"][0]["applied_amount"] == 1000
    assert s.events == ("invoice_generated", "transaction_created", "payment_failed")


def test_a_failed_one_off_charge_voids_the_invoice_and_gives_balances_back():
    s = settlement.settle(charge(), invoice(), DECLINED, purpose="create", now=NOW)
    assert s.invoice["status"] == "voided" and s.undo_balances and s.dunning is None
    assert s.events == ("transaction_created", "payment_failed")  # no invoice_generated: it never existed
    late = settlement.settle(charge(status="timeout"), invoice(), DECLINED, purpose="create", now=NOW)
    assert late.events == ("invoice_updated", "transaction_updated", "payment_failed")  # announced at the timeout


def test_a_failed_collect_payment_leaves_the_invoice():
    assert not settlement.needs_dunning_state(DECLINED, "collect_payment")
    s = settlement.settle(charge(), invoice(), DECLINED, purpose="collect_payment", now=NOW)
    failed = {**invoice(), "linked_transactions": [
        {"txn_id": "txn_1", "applied_amount": 1000, "applied_at": NOW, "txn_type": "payment", "txn_status": "failure",
         "txn_date": NOW, "txn_amount": 1000}]}
    assert s.invoice == failed and s.dunning is None and not s.undo_balances  # only the failed attempt listed
    assert s.transaction["error_text"] == "Declined"


def test_a_timeout_initiates_the_payment_and_changes_no_invoice():
    s = settlement.settle(charge(), invoice(), TIMEOUT, purpose="close", now=NOW)
    assert not s.final and s.transaction["status"] == "timeout" and s.transaction["error_code"] == "timeout"
    assert s.invoice == invoice()
    assert s.events == ("invoice_generated", "transaction_created", "payment_initiated")
    again = settlement.settle(charge(status="timeout"), invoice(), TIMEOUT, purpose="close", now=NOW)
    assert again.events == ()
    settled = settlement.settle(charge(status="timeout"), invoice(), OK, purpose="close", now=NOW)
    assert settled.events == ("transaction_updated", "payment_succeeded")
    assert "error_code" not in settled.transaction


def test_a_settled_transaction_is_not_settled_again():
    assert not settlement.unsettled(charge(status="success"))
    with pytest.raises(ValueError):
        settlement.settle(charge(status="failure"), invoice(), OK, purpose="close", now=NOW)


def test_settling_changes_no_input():
    txn, inv = charge(), invoice()
    before = repr((txn, inv))
    for answer in (OK, DECLINED, TIMEOUT):
        settlement.settle(txn, inv, answer, purpose="close", now=NOW, dunning_state=dunning.State())
    assert repr((txn, inv)) == before


@given(st.integers(1, 10**8), st.integers(0, 10**8), st.integers(1, 10**8))
def test_a_successful_charge_adds_up(amount, paid_before, charged):
    paid_before = min(paid_before, amount - 1)
    charged = min(charged, amount - paid_before)
    s = settlement.settle(charge(charged), invoice(amount, paid_before), OK, purpose="collect_payment", now=NOW)
    inv = s.invoice
    assert inv["amount_paid"] == paid_before + charged and inv["amount_due"] == amount - paid_before - charged
    assert (inv["status"] == "paid") == (inv["amount_due"] == 0)


# ---- refunds ----------------------------------------------------------------------------------------

def paid_invoice(*links: tuple[str, str, int, str]) -> dict:
    return {"id": "5", "customer_id": "c", "currency_code": "USD", "start_date": NOW - DAY, "amount": 1000,
            "linked_transactions": [{"txn_id": i, "txn_type": t, "applied_amount": a, "txn_status": s}
                                    for i, t, a, s in links]}


def test_what_can_still_be_refunded():
    inv = paid_invoice(("p1", "payment", 600, "success"), ("p2", "payment", 400, "success"),
                       ("r1", "refund", 100, "success"), ("r2", "refund", 50, "in_progress"),
                       ("r3", "refund", 70, "failure"))
    assert refunds.payment_ids(inv) == ["p1", "p2"]
    p1 = {"id": "p1", "status": "success", "amount": 600, "linked_refunds": [
        {"txn_id": "r1", "txn_status": "success", "txn_amount": 100},
        {"txn_id": "r3", "txn_status": "failure", "txn_amount": 70}]}
    p2 = {"id": "p2", "status": "success", "amount": 400, "linked_refunds": [
        {"txn_id": "r2", "txn_status": "in_progress", "txn_amount": 50}]}
    payments, left = refunds.refundable(inv, [p1, p2, None])
    assert payments == [p1, p2] and left == 1000 - 150
    assert (refunds.unrefunded(p1), refunds.unrefunded(p2)) == (500, 350)
    assert refunds.original([p1, p2], 350) is p2 and refunds.original([p1, p2], 400) is p1
    assert refunds.original([p1, p2], 501) is None


def test_a_refund_document_links_its_invoice_and_payment():
    original = {"id": "p1", "masked_card_number": "************1111"}
    r = refunds.new_refund(paid_invoice(), original, 300, refund_id="r9", status="in_progress",
                           payment_method="card", gateway="chargebee", date=NOW, now=NOW)
    assert r["type"] == "refund" and r["refunded_txn_id"] == "p1" and r["masked_card_number"].endswith("1111")
    assert r["linked_invoices"] == [{"invoice_id": "5", "applied_amount": 300, "applied_at": NOW,
                                     "invoice_date": NOW - DAY, "invoice_amount": 1000}]
    assert refunds.refund_link(r) == {"txn_id": "r9", "txn_status": "in_progress", "txn_date": NOW,
                                      "txn_amount": 300}


@pytest.mark.parametrize(("answer", "status", "events"), [
    (OK, "success", ("transaction_created", "payment_refunded")),
    (DECLINED, "failure", ("transaction_created",)),
    (TIMEOUT, "timeout", ("transaction_created", "refund_initiated")),
])
def test_settling_a_refund_sets_its_status_everywhere(answer, status, events):
    refund = {"id": "r9", "status": "in_progress"}
    original = {"id": "p1", "linked_refunds": [{"txn_id": "r9", "txn_status": "in_progress"}]}
    inv = paid_invoice(("p1", "payment", 1000, "success"), ("r9", "refund", 300, "in_progress"))
    s = refunds.settle(refund, original, inv, answer)
    assert s.refund["status"] == status and s.original["linked_refunds"][0]["txn_status"] == status
    assert s.invoice["linked_transactions"][1]["txn_status"] == status and s.events == events
    assert refund["status"] == "in_progress"  # the input is not changed
    if status != "success":
        assert s.refund["error_code"]


# ---- record_payment (an offline payment) -------------------------------------------------------------
# the spec's record_payment_for_an_invoice: records a payment made outside Chargebee for a
# payment_due/not_paid invoice; SEMANTICS.md: more than the amount due is an excess payment

def test_an_offline_payment_pays_up_to_the_amount_due_and_keeps_the_rest_as_excess():
    inv = {**invoice(1000), "dunning_status": "in_progress", "next_retry": NOW + DAY, "currency_code": "USD"}
    p = settlement.offline_payment(inv, txn_id="txn_9", payment_method="check", paid_at=NOW - 60, now=NOW,
                                   amount=1500, reference_number="chk 12")
    assert (p.applied, p.excess) == (1000, 500)
    assert p.transaction["amount_unused"] == 500 and p.transaction["reference_number"] == "chk 12"
    assert p.transaction["linked_invoices"][0]["applied_amount"] == 1000 and p.transaction["date"] == NOW - 60
    assert p.invoice["status"] == "paid" and p.invoice["paid_on"] == NOW - 60
    assert p.invoice["dunning_status"] == "stopped" and p.dunning is not None and p.dunning.cancel_retry
    part = settlement.offline_payment({**invoice(1000), "currency_code": "USD"}, txn_id="t", payment_method="cash",
                                      paid_at=NOW, now=NOW, amount=300)
    assert part.invoice["amount_due"] == 700 and part.invoice["status"] == "payment_due" and part.dunning is None
    full = settlement.offline_payment({**invoice(800), "currency_code": "USD"}, txn_id="t", payment_method="cash",
                                      paid_at=NOW, now=NOW)
    assert full.applied == 800 and full.excess == 0


def test_an_offline_payment_cannot_be_in_the_future():
    with pytest.raises(ParamError) as e:
        settlement.offline_payment({**invoice(), "currency_code": "USD"}, txn_id="t", payment_method="cash",
                                   paid_at=NOW + 1, now=NOW)
    assert e.value.param == "paid_at"
