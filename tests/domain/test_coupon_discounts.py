"""Coupon discounts on line items (domain/coupons.py), one coupon at a time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billhive.domain.coupons import discounts, rediscount


def coupon_discount(coupon: dict, lines: list[dict]) -> int:
    """The discount one coupon gives these lines."""
    return sum(d["amount"] for d in discounts([{"id": "c", **coupon}], lines))


def line(amount: int, *, kind: str = "addon", entity_id: str = "a", quantity: int = 1) -> dict:
    return {"entity_type": kind, "entity_id": entity_id, "quantity": quantity, "unit_amount": amount // quantity,
            "amount": amount}


def test_invoice_amount_percentage_rounds_once_half_up():
    c = {"apply_on": "invoice_amount", "discount_type": "percentage", "discount_percentage": 12.5}
    assert coupon_discount(c, [line(1500), line(3000, kind="adhoc")]) == 563  # 562.5
    c["discount_percentage"] = 0.01
    assert coupon_discount(c, [line(4999)]) == 0 and coupon_discount(c, [line(5000)]) == 1


def test_fixed_amount_never_exceeds_the_lines():
    c = {"apply_on": "invoice_amount", "discount_type": "fixed_amount", "discount_amount": 700}
    assert coupon_discount(c, [line(500)]) == 500
    assert coupon_discount(c, [line(500), line(500)]) == 700
    assert coupon_discount(c, []) == 0


def test_each_specified_item_discounts_matching_addons_only():
    c = {"apply_on": "each_specified_item", "discount_type": "fixed_amount", "discount_amount": 100,
         "plan_constraint": "none", "addon_constraint": "specific", "addon_ids": ["gb"]}
    lines = [line(300, entity_id="gb", quantity=3), line(50, entity_id="gb"), line(1000, entity_id="other"),
             line(1000, kind="adhoc")]
    assert coupon_discount(c, lines) == 150  # 100 off the first gb line, 50 (all of it) off the second
    c.update(discount_type="offer_quantity", discount_quantity=2)
    assert coupon_discount(c, lines) == 250  # 2 of 3 units at 100, and the single 50 unit
    c.update(addon_constraint="all")
    assert coupon_discount(c, lines) == 1250  # every addon line, never the ad-hoc charge
    c.update(addon_constraint="none")
    assert coupon_discount(c, lines) == 0


amounts = st.lists(st.tuples(st.integers(0, 10**7), st.sampled_from(["addon", "adhoc", "plan"]),
                             st.integers(1, 50)), max_size=8)
coupons = st.fixed_dictionaries({
    "apply_on": st.sampled_from(["invoice_amount", "each_specified_item"]),
    "discount_type": st.sampled_from(["percentage", "fixed_amount", "offer_quantity"]),
    "discount_percentage": st.floats(0.01, 100, allow_nan=False).map(lambda f: round(f, 2)),
    "discount_amount": st.integers(0, 10**8),
    "discount_quantity": st.integers(1, 100),
    "plan_constraint": st.sampled_from(["none", "all"]),
    "addon_constraint": st.sampled_from(["none", "all"]),
})


@given(coupons, amounts)
def test_discount_is_between_zero_and_the_total(coupon, raw):
    lines = [{"entity_type": kind, "entity_id": "x", "quantity": q, "unit_amount": a, "amount": a * q}
             for a, kind, q in raw]
    total = sum(li["amount"] for li in lines)
    d = coupon_discount(coupon, lines)
    assert isinstance(d, int) and 0 <= d <= total


@given(st.lists(st.integers(0, 10**7), max_size=6))
def test_full_percentage_on_the_invoice_is_the_total(values):
    c = {"apply_on": "invoice_amount", "discount_type": "percentage", "discount_percentage": 100.0}
    assert coupon_discount(c, [line(v) for v in values]) == sum(values)


# ---- rediscount: a pending invoice's lines changed (issue 12 item 9) -------------------------------

def test_rediscount_follows_the_new_sub_total():
    ten = {"id": "ten", "apply_on": "invoice_amount", "discount_type": "percentage", "discount_percentage": 10}
    before = [line(1850, kind="plan")]
    current = [*discounts([ten], before),
               {"amount": 500, "description": "Prorated credits", "type": "credit_adjustment"}]
    assert [d["amount"] for d in current] == [185, 500]
    after = rediscount(current, {"ten": ten}, [*before, line(2500, kind="adhoc")])
    assert [(d.get("entity_id"), d["amount"]) for d in after] == [("ten", 435), (None, 500)]
    assert after[0]["description"] == current[0]["description"]
    # a coupon gone from the catalog keeps its amount
    assert rediscount(current, {}, [*before, line(2500, kind="adhoc")]) == current


line_lists = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["addon", "adhoc", "plan"]),
                                st.integers(1, 5)), max_size=5)


@given(st.lists(coupons, min_size=1, max_size=3), line_lists, line_lists, st.integers(0, 10**7))
def test_rediscount_is_discounts_computed_afresh(raw_coupons, first, added, credit):
    """After lines are added, the coupon entries are exactly what ``discounts`` gives the new lines
    for the coupons on the invoice (as if it had been made with them), the other discounts keep
    their amount unless the coupons leave less, and the discounts never exceed the sub total."""
    cs = [{"id": f"c{i}", **c} for i, c in enumerate(raw_coupons)]
    old = [{"entity_type": k, "entity_id": "x", "quantity": q, "unit_amount": a, "amount": a * q} for a, k, q in first]
    new = old + [{"entity_type": k, "entity_id": "x", "quantity": q, "unit_amount": a, "amount": a * q}
                 for a, k, q in added]
    current = discounts(cs, old)
    current.append({"amount": credit, "description": "Prorated credits", "type": "credit_adjustment"})
    after = rediscount(current, {c["id"]: c for c in cs}, new)
    on_invoice = [c for c in cs if any(d.get("entity_id") == c["id"] for d in current)]
    fresh = {d["entity_id"]: d["amount"] for d in discounts(on_invoice, new)}
    kept = {d["entity_id"]: d["amount"] for d in after if d["type"] == "coupon"}
    assert kept == fresh
    total = sum(li["amount"] for li in new)
    credit_after = sum(d["amount"] for d in after if d["type"] == "credit_adjustment")
    assert credit_after == min(credit, total - sum(kept.values()))
    assert sum(d["amount"] for d in after) <= total
