"""Taxes with coupons limited to some items (domain/taxes.py ``line_discounts``): an
each_specified_item coupon reduces the tax base only of the lines it applies to; invoice-level
discounts are shared among all lines in proportion to what is left of them. Sources:
docs/CHOICES.md, "Taxes" (Discounts before tax)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import coupons as C
from billhive.domain import invoices as D
from billhive.domain import taxes as T


def line(kind: str, entity_id: str, amount: int, quantity: int = 1) -> dict:
    return {"amount": amount, "unit_amount": amount // quantity, "quantity": quantity, "entity_type": kind,
            "entity_id": entity_id, "description": entity_id, "type": "charge", "date_from": 0, "date_to": 0}


def coupon(cid: str, *, plans: tuple[str, ...] = (), addons: tuple[str, ...] = (), percent: float | None = None,
           amount: int | None = None, quantity: int | None = None) -> dict:
    doc = {"id": cid, "name": cid, "apply_on": "each_specified_item",
           "plan_constraint": "specific" if plans else "none", "plan_ids": list(plans),
           "addon_constraint": "specific" if addons else "none", "addon_ids": list(addons)}
    if percent is not None:
        doc.update(discount_type="percentage", discount_percentage=percent)
    elif amount is not None:
        doc.update(discount_type="fixed_amount", discount_amount=amount)
    else:
        doc.update(discount_type="offer_quantity", discount_quantity=quantity or 1)
    return doc


def invoice_coupon(cid: str, *, percent: float | None = None, amount: int | None = None) -> dict:
    doc = {"id": cid, "name": cid, "apply_on": "invoice_amount", "plan_constraint": "not_applicable",
           "addon_constraint": "not_applicable"}
    if percent is not None:
        doc.update(discount_type="percentage", discount_percentage=percent)
    else:
        doc.update(discount_type="fixed_amount", discount_amount=amount)
    return doc


def taxed_invoice(lines: list[dict], coupons: list[dict], basis: T.Basis, extra: tuple[dict, ...] = ()) -> dict:
    inv = {"id": "draft_inv_1", "line_items": lines, "status": "pending", "start_date": 0,
           "discounts": C.discounts(coupons, lines) + list(extra)}
    return D.recompute(inv, taxes=basis)


def tax_basis(rate: int = 10, *, price_type: str = T.EXCLUSIVE, coupons: list[dict] = (),
              untaxed: frozenset = frozenset()) -> T.Basis:
    return T.basis_for({"country": "US", "tax1_name": "Tax", "tax1_rate": rate}, price_type=price_type,
                       untaxed=untaxed, item_coupons=tuple(coupons))


def test_a_coupon_on_an_untaxed_addon_leaves_the_plans_tax_whole():
    # Worked example. Plan $100 (taxable), addon $50 (taxable=false), a 20 % coupon on the addon
    # only, 10 % tax exclusive. The coupon takes $10 off the addon line alone (Chargebee's
    # coupons "to specific items on the invoice": support.chargebee.com article 245602), so
    # the plan is taxed on its full $100: tax $10, amount 150 - 10 + 10 = $150. Shared across
    # both lines (the former simplification) the plan would have been taxed on $93.33.
    cp = coupon("addon20", addons=("a1",), percent=20)
    lines = [line("plan", "p1", 10000), line("addon", "a1", 5000)]
    inv = taxed_invoice(lines, [cp], tax_basis(coupons=[cp], untaxed=frozenset({("addon", "a1")})))
    assert inv["discounts"][0]["amount"] == 1000
    assert [li["tax"] for li in inv["line_items"]] == [1000, 0]
    assert (inv["sub_total"], inv["tax"], inv["amount"]) == (15000, 1000, 15000)


def test_a_coupon_on_the_plan_reduces_only_the_plans_tax_inclusive():
    # Tax-inclusive: plan $110 with a $11 fixed coupon on the plan, an untaxed addon $55. The
    # plan's base is 110 - 11 = $99, its carved tax 99 x 10 / 110 = $9; the addon carries none.
    cp = coupon("plan11", plans=("p1",), amount=1100)
    lines = [line("plan", "p1", 11000), line("addon", "a1", 5500)]
    inv = taxed_invoice(lines, [cp], tax_basis(price_type=T.INCLUSIVE, coupons=[cp],
                                               untaxed=frozenset({("addon", "a1")})))
    assert [li["tax"] for li in inv["line_items"]] == [900, 0]
    assert (inv["tax"], inv["amount"]) == (900, 16500 - 1100)


def test_item_coupons_first_then_invoice_discounts_on_what_is_left():
    # Plan $100, addon $100, 50 % off the addon, then a $30 invoice-amount coupon: the addon has
    # $50 left, the plan $100, so the $30 is shared 20 / 10. Taxes at 10 %: plan (100 - 20) x 10 %
    # = $8, addon (100 - 50 - 10) x 10 % = $4.
    item, whole = coupon("half", addons=("a1",), percent=50), invoice_coupon("thirty", amount=3000)
    lines = [line("plan", "p1", 10000), line("addon", "a1", 10000)]
    inv = taxed_invoice(lines, [item, whole], tax_basis(coupons=[item]))
    assert [d["amount"] for d in inv["discounts"]] == [5000, 3000]
    assert T.line_discounts(lines, inv["discounts"], [item]) == [2000, 6000]
    assert [li["tax"] for li in inv["line_items"]] == [800, 400]
    assert inv["amount"] == 20000 - 8000 + 1200


def test_a_coupon_the_basis_does_not_know_is_shared_like_an_invoice_discount():
    cp = coupon("addon20", addons=("a1",), percent=20)
    lines = [line("plan", "p1", 6000), line("addon", "a1", 4000)]
    discounts = C.discounts([cp], lines)
    assert T.line_discounts(lines, discounts, []) == [480, 320]
    assert T.line_discounts(lines, discounts, [cp]) == [0, 800]


def test_fixed_amount_per_line_and_offer_quantity_follow_the_coupon():
    per_line = coupon("five", addons=("a1", "a2"), amount=500)
    free = coupon("one_free", plans=("p1",), quantity=1)
    lines = [line("plan", "p1", 3000, quantity=3), line("addon", "a1", 400), line("addon", "a2", 2000)]
    discounts = C.discounts([per_line, free], lines)
    assert T.line_discounts(lines, discounts, [per_line, free]) == [1000, 400, 500]


# ---- property -------------------------------------------------------------------------------------

kinds = st.sampled_from([("plan", "p1"), ("plan", "p2"), ("addon", "a1"), ("addon", "a2"), ("adhoc", "")])
lines_st = st.lists(st.tuples(kinds, st.integers(0, 10**8), st.integers(1, 5)), min_size=1, max_size=6)
coupon_st = st.one_of(
    st.builds(lambda i, p, a, pct: coupon(f"c{i}", plans=p, addons=a, percent=pct), st.integers(0, 9),
              st.sets(st.sampled_from(["p1", "p2"])).map(tuple), st.sets(st.sampled_from(["a1", "a2"])).map(tuple),
              st.integers(0, 100)),
    st.builds(lambda i, p, a, amt: coupon(f"f{i}", plans=p, addons=a, amount=amt), st.integers(0, 9),
              st.sets(st.sampled_from(["p1", "p2"])).map(tuple), st.sets(st.sampled_from(["a1", "a2"])).map(tuple),
              st.integers(0, 10**8)),
    st.builds(lambda i, pct: invoice_coupon(f"i{i}", percent=pct), st.integers(0, 9), st.integers(0, 100)),
    st.builds(lambda i, amt: invoice_coupon(f"j{i}", amount=amt), st.integers(0, 9), st.integers(0, 10**8)),
)


@given(lines_st, st.lists(coupon_st, max_size=4, unique_by=lambda c: c["id"]), st.integers(0, 10**8),
       st.integers(0, 100), st.sampled_from(T.PRICE_TYPES), st.sets(kinds))
def test_item_coupon_totals_add_up_and_never_go_negative(specs, coupons, credit, rate, price_type, untaxed):
    lines = [line(k, i, a * q, quantity=q) for (k, i), a, q in specs]
    extra = ({"amount": credit, "type": "credit_adjustment", "description": "Prorated credits"},)
    b = tax_basis(rate, price_type=price_type, coupons=coupons, untaxed=frozenset(untaxed))
    inv = taxed_invoice(lines, coupons, b, extra)
    shares = T.line_discounts(lines, inv["discounts"], coupons)
    # each line's share within the line; the shares add up to the discounts before tax
    assert all(0 <= s <= li["amount"] for s, li in zip(shares, lines))
    assert sum(shares) == T.discount_before_tax(inv)
    # an item coupon's discount sits only on lines it applies to
    item_only = [c for c in coupons if c["apply_on"] == "each_specified_item"]
    alone = T.line_discounts(lines, [d for d in inv["discounts"] if d["type"] == "coupon"
                                     and any(c["id"] == d["entity_id"] for c in item_only)], item_only)
    for s, li in zip(alone, lines):
        if not any(C.applies_to(c, li["entity_type"], li["entity_id"]) for c in item_only):
            assert s == 0
    # each line taxed on what is left of it; the invoice's totals add up
    for s, li in zip(shares, lines):
        base = li["amount"] - s
        assert li["is_taxed"] == (T.line_entity(li) not in untaxed)
        assert li["tax"] == (T.line_taxes(base, b)[0] if li["is_taxed"] else 0) >= 0
        if price_type == T.INCLUSIVE:
            assert li["tax"] <= base
        elif li["is_taxed"]:
            assert abs(li["tax"] - Fraction(base * rate, 100)) <= Fraction(1, 2)
    assert inv["tax"] == sum(li["tax"] for li in inv["line_items"]) == sum(t["amount"] for t in inv["taxes"])
    added = inv["tax"] if price_type == T.EXCLUSIVE else 0
    assert inv["amount"] == max(0, inv["sub_total"] - sum(d["amount"] for d in inv["discounts"]) + added) >= 0
    assert inv["amount_due"] >= 0
