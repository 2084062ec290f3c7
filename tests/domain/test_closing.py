"""The closing decision (domain/closing.py) on plain values: no database, no HTTP.

Chargebee's order (SEMANTICS.md, "Credits"; the spec's close_pending_invoice: "applies the
customer's available credits and excess payments"): promotional credits as a discount, then
refundable credits, then excess payments (oldest payment first), each up to what is still due; an
invoice with nothing left due is paid at once, otherwise auto-collection charges the card."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import closing
from billhive.domain import invoices as D
from billhive.errors import ConfigurationIncompatible, InvalidState

NOW = 1_700_000_000
CARD = closing.Payer(auto_collection=True, card_usable=True)
NO_CARD = closing.Payer(auto_collection=True, card_usable=False)


def pending(*amounts: int, end_date: int | None = None, discount: int = 0) -> dict:
    inv = {"id": "draft_inv_1", "customer_id": "c", "status": "pending", "start_date": NOW - 86400,
           "line_items": [{"amount": a, "tax": 0} for a in amounts], "credits_applied": 0, "amount_paid": 0,
           "amount_adjusted": 0, "discounts": [{"amount": discount, "type": "coupon"}] if discount else []}
    if end_date is not None:
        inv["end_date"] = end_date
    return D.recompute(inv)


def test_nothing_to_apply_and_a_card_charges_the_amount_due():
    c = closing.close(pending(1000, 500), balances=closing.Balances(0, 0), payer=CARD, now=NOW)
    assert c.invoice["status"] == "payment_due" and c.invoice["amount_due"] == 1500 and c.charge == 1500
    assert c.invoice["end_date"] == NOW and not c.balances_moved


def test_credits_apply_in_chargebee_order():
    balances = closing.Balances(promotional=300, refundable=400, unused_payments=(("txn_old", 200), ("txn_new", 900)))
    c = closing.close(pending(1500), balances=balances, payer=CARD, now=NOW)
    assert (c.promotional, c.refundable, c.excess) == (300, 400, (("txn_old", 200), ("txn_new", 600)))
    inv = c.invoice
    assert inv["discounts"] == [{"amount": 300, "description": "Promotional Credits", "type": "account_credits",
                                 "object": "discount"}]
    assert inv["amount"] == 1200 and inv["credits_applied"] == 400 and inv["amount_paid"] == 800
    assert inv["amount_due"] == 0 and inv["status"] == "paid" and inv["paid_on"] == NOW and c.charge == 0


def test_partial_credits_leave_the_rest_to_the_card():
    c = closing.close(pending(1000), balances=closing.Balances(0, 250), payer=CARD, now=NOW)
    assert c.invoice["credits_applied"] == 250 and c.charge == 750 and c.invoice["status"] == "payment_due"


def test_no_charge_without_auto_collection_or_a_usable_card():
    for payer in (NO_CARD, closing.Payer(auto_collection=False, card_usable=True)):
        c = closing.close(pending(1000), balances=closing.Balances(0, 0), payer=payer, now=NOW)
        assert c.charge == 0 and c.invoice["status"] == "payment_due" and c.invoice["amount_due"] == 1000


def test_without_a_gateway_a_request_is_refused_and_scheduled_work_closes_without_charging():
    refuse = closing.Payer(True, True, no_gateway="no gateway on live site x")
    with pytest.raises(ConfigurationIncompatible, match="live site x"):
        closing.close(pending(1000), balances=closing.Balances(0, 0), payer=refuse, now=NOW)
    skip = closing.Payer(True, True, no_gateway="no gateway", without_gateway="skip")
    c = closing.close(pending(1000), balances=closing.Balances(0, 0), payer=skip, now=NOW)
    assert c.charge == 0 and c.invoice["status"] == "payment_due"
    # nothing due: no gateway needed
    c = closing.close(pending(1000), balances=closing.Balances(0, 1000), payer=refuse, now=NOW)
    assert c.invoice["status"] == "paid"


def test_end_date_is_the_closing_time_unless_the_site_keeps_the_renewal_date():
    renewal = NOW - 3600
    assert closing.close(pending(1, end_date=renewal), balances=closing.Balances(0, 0), payer=NO_CARD,
                         now=NOW).invoice["end_date"] == NOW
    assert closing.close(pending(1, end_date=renewal), balances=closing.Balances(0, 0), payer=NO_CARD, now=NOW,
                         keep_end_date=True).invoice["end_date"] == renewal
    assert closing.close(pending(1), balances=closing.Balances(0, 0), payer=NO_CARD, now=NOW,
                         keep_end_date=True).invoice["end_date"] == NOW


def test_an_invoice_without_lines_cannot_close():
    with pytest.raises(InvalidState):
        closing.close(pending(), balances=closing.Balances(0, 0), payer=CARD, now=NOW)


def test_the_input_invoice_is_not_changed():
    inv = pending(1000)
    before = repr(inv)
    closing.close(inv, balances=closing.Balances(100, 100, (("t", 100),)), payer=CARD, now=NOW)
    assert repr(inv) == before


def test_taking_excess_links_the_payment_to_the_invoice():
    payment = {"id": "txn_1", "amount_unused": 500, "linked_invoices": []}
    inv = {"id": "42", "start_date": NOW - 10, "amount": 800}
    used = closing.use_excess(payment, inv, 300, NOW)
    assert used["amount_unused"] == 200 and payment["amount_unused"] == 500
    assert used["linked_invoices"] == [{"invoice_id": "42", "applied_amount": 300, "applied_at": NOW,
                                        "invoice_date": NOW - 10, "invoice_amount": 800}]
    with pytest.raises(ValueError):
        closing.use_excess(payment, inv, 501, NOW)


amounts = st.integers(min_value=0, max_value=10**9)


@given(st.lists(st.integers(min_value=1, max_value=10**8), min_size=1, max_size=8), st.integers(0, 10**8), amounts,
       amounts, st.lists(st.integers(min_value=1, max_value=10**8), max_size=4), st.booleans(), st.booleans())
def test_closing_always_adds_up(lines, coupon, promotional, refundable, unused, auto, card):
    inv = pending(*lines, discount=min(coupon, sum(lines)))
    payments = tuple((f"txn_{i}", a) for i, a in enumerate(unused))
    c = closing.close(inv, balances=closing.Balances(promotional, refundable, payments),
                      payer=closing.Payer(auto, card), now=NOW)
    out = c.invoice
    assert out["amount"] == out["sub_total"] - D.discount_total(out) + out["tax"] >= 0
    assert out["amount_due"] == out["amount"] - out["credits_applied"] - out["amount_paid"] >= 0
    assert 0 <= c.promotional <= promotional and 0 <= c.refundable <= refundable
    taken = dict(c.excess)
    assert all(0 < take <= dict(payments)[t] for t, take in taken.items())
    assert out["amount_paid"] == sum(taken.values())
    # oldest first: a payment is touched only when every older one is used up
    for i, (t, _available) in enumerate(payments):
        if t in taken and i > 0:
            assert all(taken.get(older) == dict(payments)[older] for older, _ in payments[:i])
    assert (out["status"] == "paid") == (out["amount_due"] == 0)
    assert c.charge == (out["amount_due"] if auto and card else 0)


# giving back what a closing took: a one-off invoice whose charge failed is voided with the
# customer's balances as they were (the spec's create_an_invoice: "The invoice will be generated
# only upon successful collection of payments"); a void/delete releases the credits it took
def test_give_back_undoes_what_the_closing_took():
    balances = closing.Balances(promotional=300, refundable=400, unused_payments=(("txn_old", 200),))
    c = closing.close(pending(1500), balances=balances, payer=CARD, now=NOW)
    inv = c.invoice
    inv["linked_transactions"] = [
        {"txn_id": "txn_old", "txn_type": "payment", "txn_status": "success", "applied_amount": 200},
        {"txn_id": "txn_card", "txn_type": "payment", "txn_status": "failure", "applied_amount": 0}]
    g = closing.give_back(inv)
    assert (g.promotional, g.refundable, g.excess) == (300, 400, (("txn_old", 200),)) and g.moved
    assert g.invoice["amount_due"] == 1500 and g.invoice["credits_applied"] == 0 and g.invoice["amount_paid"] == 0
    assert g.invoice["discounts"] == [] and [lt["txn_id"] for lt in g.invoice["linked_transactions"]] == ["txn_card"]
    assert inv["amount_due"] == 600  # the input is not changed
    assert not closing.give_back(pending(100)).moved


def test_return_excess_is_the_reverse_of_use_excess():
    payment = {"id": "txn_1", "amount_unused": 500, "linked_invoices": []}
    inv = {"id": "42", "start_date": NOW - 10, "amount": 800}
    assert closing.return_excess(closing.use_excess(payment, inv, 300, NOW), "42", 300) == payment
