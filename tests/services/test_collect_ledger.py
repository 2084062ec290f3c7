"""Collect through the real store (both backends): every balance still equals the sum of its
ledger, and the invoice shows exactly what the customer's balances lost."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billhive.domain import invoices as D
from billhive.services import credits
from billhive.store.resources import CUSTOMERS
from tests.support import factories as F


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=50_000), min_size=1, max_size=4),
       st.integers(min_value=0, max_value=60_000), st.integers(min_value=0, max_value=60_000),
       st.integers(min_value=0, max_value=60_000))
def test_collect_keeps_every_balance_equal_to_its_ledger(site, amounts, promotional, refundable, excess):
    """Through the real store (both backends): close an invoice, then check the invariants."""
    cust = F.customer(site, card=None, promotional=promotional, refundable=refundable, excess=excess)
    draft = F.pending_invoice(site, cust["id"], tuple((a, "usage") for a in amounts))
    inv = site.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    after = site.app.db.read_sync(lambda tx: CUSTOMERS.get(tx, site.pk, cust["id"]))
    for kind in credits.KINDS:
        assert site.app.db.read_sync(lambda tx, kind=kind: credits.ledger_sum(tx, site.pk, cust["id"], kind)) == \
            credits.balance(after, kind) >= 0
    used_promo = promotional - after["account_credits"]
    used_refundable = refundable - after["refundable_credits"]
    used_excess = excess - after["excess_payments"]
    assert used_promo == D.discount_total(inv, types=("account_credits",))
    assert used_refundable == inv["credits_applied"] <= min(inv["amount"], refundable)
    assert used_excess == inv["amount_paid"]
    assert inv["amount_due"] == \
        inv["amount"] - inv["credits_applied"] - inv["amount_paid"] - inv["amount_adjusted"] >= 0
    assert inv["status"] == ("paid" if inv["amount_due"] == 0 else "payment_due")
