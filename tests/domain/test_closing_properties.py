"""Properties of the closing math (collect): what is applied never exceeds what is owed or
available, and the amounts add up. (Through the real store: tests/services/test_collect_ledger.py.)"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import invoices as D

money = st.integers(min_value=0, max_value=1_000_000)
lines = st.lists(st.integers(min_value=1, max_value=500_000), min_size=1, max_size=6)


def invoice(line_amounts: list[int], coupon: int = 0, tax: list[int] | None = None) -> dict:
    items = [{"amount": a, "tax": (tax or [0] * len(line_amounts))[i] if tax else 0}
             for i, a in enumerate(line_amounts)]
    inv = {"id": "x", "line_items": items, "discounts": [], "credits_applied": 0, "amount_paid": 0,
           "amount_adjusted": 0}
    st_ = sum(line_amounts)
    if coupon:
        inv["discounts"].append({"amount": min(coupon, st_), "type": "coupon"})
    return D.recompute(inv)


@given(lines, st.integers(min_value=0, max_value=200_000), money, money, money)
def test_allocation_never_exceeds_what_is_owed_or_available(line_amounts, coupon, promotional, refundable, excess):
    inv = invoice(line_amounts, coupon)
    alloc = D.allocate(inv, promotional=promotional, refundable=refundable, excess=excess)
    assert 0 <= alloc.promotional <= min(promotional, inv["sub_total"] - D.discount_total(inv))
    after_promo = inv["amount"] - alloc.promotional
    assert 0 <= alloc.refundable <= min(refundable, after_promo)
    assert 0 <= alloc.excess <= min(excess, after_promo - alloc.refundable)
    # applying it leaves a consistent invoice
    inv["discounts"].append({"amount": alloc.promotional, "type": "account_credits"})
    inv["credits_applied"] = alloc.refundable
    inv["amount_paid"] = alloc.excess
    D.recompute(inv)
    assert inv["amount"] == inv["sub_total"] - D.discount_total(inv) + inv["tax"]
    assert inv["amount_due"] == inv["amount"] - inv["credits_applied"] - inv["amount_paid"] - inv["amount_adjusted"]
    assert inv["amount_due"] >= 0
    total_available = promotional + refundable + excess
    total_before = inv["sub_total"] - D.discount_total(inv, types=("coupon",))
    # everything owed is covered when enough is available; otherwise everything available is used
    if total_available >= total_before:
        assert inv["amount_due"] == 0
    else:
        assert alloc.promotional + alloc.refundable + alloc.excess == total_available


@given(st.integers(min_value=0, max_value=10**9), st.lists(st.tuples(st.text(min_size=1, max_size=3),
                                                                      st.integers(min_value=0, max_value=10**6)),
                                                            max_size=8))
def test_excess_split_takes_oldest_first_and_exactly(amount, unused):
    available = sum(u for _, u in unused)
    if amount > available:
        try:
            D.split_excess(amount, unused)
        except ValueError:
            return
        raise AssertionError("over-taking must fail")
    taken = D.split_excess(amount, unused)
    assert sum(t for _, t in taken) == amount
    # oldest first: every source before the last one used is used up entirely
    for (src, t), (_, available_here) in zip(taken[:-1], [u for u in unused if u[1] > 0]):
        assert t == available_here, (src, t, available_here)
