"""Subscription rules (billhive.domain.subscriptions, billhive.domain.coupons): the status
machine, items, proration, billing cycles and coupon discounts. Pure."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from billhive.domain import coupons as CR
from billhive.domain import subscriptions as R
from billhive.domain.invoices import recompute
from billhive.domain.money import prorate
from billhive.errors import InvalidState

PLAN = {"id": "basic", "name": "Basic", "price": 1000, "period": 1, "period_unit": "month", "charge_model": "flat_fee"}
T0, T1 = 1_767_225_600, 1_769_904_000  # January 2026


# ---- status machine -------------------------------------------------------------------------------------

@pytest.mark.parametrize("current, target", [
    ("future", "in_trial"), ("future", "active"), ("in_trial", "active"), ("active", "non_renewing"),
    ("non_renewing", "active"), ("active", "cancelled"), ("cancelled", "active"), ("cancelled", "in_trial"),
])
def test_allowed_transitions(current, target):
    sub = {"id": "s", "status": current}
    R.transition(sub, target)
    assert sub["status"] == target


@pytest.mark.parametrize("current, target", [
    ("cancelled", "cancelled"), ("active", "in_trial"), ("active", "future"), ("non_renewing", "in_trial"),
    ("in_trial", "future"), ("active", "active"),
])
def test_illegal_transitions_are_409(current, target):
    with pytest.raises(InvalidState) as exc:
        R.transition({"id": "s", "status": current}, target)
    assert exc.value.http_status == 409 and exc.value.api_error_code == "invalid_state_for_request"


def test_every_status_can_be_cancelled_but_cancelled():
    for status in R.STATUSES:
        assert R.can_transition(status, "cancelled") == (status != "cancelled")


# ---- items and proration ---------------------------------------------------------------------------------

def test_plan_items():
    assert R.plan_item(PLAN, 3).amount == 3000
    per_unit = {**PLAN, "charge_model": "per_unit", "free_quantity": 2, "price": 500}
    assert R.plan_item(per_unit, 5).amount == 1500 and R.plan_item(per_unit, 1).amount == 0
    setup = R.setup_charge({**PLAN, "setup_cost": 250}, T0)
    assert setup is not None and setup.type == "setup_charge" and setup.amount == 250
    assert R.setup_charge(PLAN, T0) is None


def test_chargebee_documented_example():
    # $15 -> $30 plan after 15 days of a 30-day term: $15 charge, $7.50 credit
    day = 86400
    old, new = [R.Item("plan", "a", 1500, 1, "A")], [R.Item("plan", "b", 3000, 1, "B")]
    p = R.prorate_change(old, new, 15 * day, 0, 30 * day)
    assert p.charge_total == 1500 and p.credit == 750


def test_unchanged_items_bill_nothing_and_policies():
    plan = R.Item("plan", "basic", 1000, 1, "Basic")
    addon = R.Item("addon", "a", 600, 1, "A")
    mid = (T0 + T1) // 2
    assert R.prorate_change([plan], [plan], mid, T0, T1) == R.Proration([], 0)
    added = R.prorate_change([plan], [plan, addon], mid, T0, T1)
    assert [c.item.entity_id for c in added.charges] == ["a"] and added.credit == 0
    full = R.prorate_change([plan], [plan, addon], mid, T0, T1, {("addon", "a"): "full_term"})
    assert full.charges[0].amount == 600 and full.charges[0].type == "charge"
    assert R.prorate_change([plan], [plan, addon], mid, T0, T1, {("addon", "a"): "none"}).charges == []
    removed = R.prorate_change([plan, addon], [plan], mid, T0, T1)
    assert removed.charges == [] and removed.credit == 300


def test_reset_term_change_charges_the_whole_new_term():
    old, new = [R.Item("plan", "m", 1000, 1, "M")], [R.Item("plan", "y", 10000, 1, "Y")]
    p = R.reset_term_change(old, new, T0, T0, T1, T0 + 365 * 86400)
    assert p.charge_total == 10000 and p.credit == 1000


amounts = st.integers(min_value=0, max_value=10**9)
terms = st.integers(min_value=1, max_value=400 * 86400)


@given(amounts, terms)
def test_proration_of_a_full_period_is_the_full_price(amount, length):
    assert R.unused(amount, T0, T0, T0 + length) == amount


@given(amounts, terms, st.integers(min_value=0, max_value=10**8))
def test_proration_never_exceeds_the_full_price(amount, length, offset):
    assert 0 <= R.unused(amount, T0 + offset, T0, T0 + length) <= amount


@given(amounts, terms, st.data())
def test_splitting_a_period_prorates_to_the_whole_within_rounding(amount, length, data):
    cut = T0 + data.draw(st.integers(min_value=0, max_value=length))
    end = T0 + length
    first = amount - R.unused(amount, cut, T0, end) if cut == end else prorate(amount, cut - T0, length)
    second = R.unused(amount, cut, T0, end)  # the part from the cut to the end
    assert abs(first + second - amount) <= 1


@given(st.integers(1, 10**6), st.integers(1, 10**6), st.integers(1, 50), st.integers(1, 50), terms, st.data())
def test_upgrade_then_downgrade_back_nets_to_zero(p_old, p_new, q_old, q_new, length, data):
    now = T0 + data.draw(st.integers(0, length))
    a, b = R.Item("plan", "x", p_old, q_old, "X"), R.Item("plan", "x", p_new, q_new, "X")
    assume(a != b)
    up = R.prorate_change([a], [b], now, T0, T0 + length)
    down = R.prorate_change([b], [a], now, T0, T0 + length)
    assert up.charge_total == down.credit and down.charge_total == up.credit


# ---- billing cycles ------------------------------------------------------------------------------------

def test_billing_cycles():
    assert R.start_term(None) == (None, False)
    assert R.start_term(3) == (2, False)
    assert R.start_term(1) == (0, True)
    assert R.start_term(0) == (0, True)
    assert R.status_for_cycles("active", 0, False) == "non_renewing"
    assert R.status_for_cycles("non_renewing", 2, False) == "active"
    assert R.status_for_cycles("non_renewing", 2, True) == "non_renewing"
    assert R.status_for_cycles("in_trial", 0, False) == "in_trial"


# ---- coupons -------------------------------------------------------------------------------------------

def line(entity_type: str, entity_id: str | None, unit: int, qty: int = 1) -> dict:
    return {"entity_type": entity_type, "entity_id": entity_id, "unit_amount": unit, "quantity": qty,
            "amount": unit * qty}


def coupon(id: str, **kw) -> dict:
    return {"id": id, "name": id, "discount_type": "percentage", "apply_on": "invoice_amount", **kw}


def test_coupon_discounts():
    lines = [line("plan", "basic", 1000), line("addon", "seat", 200, 3), line("adhoc", None, 500)]
    half_plan = coupon("half", discount_percentage=50, apply_on="each_specified_item", plan_constraint="specific",
                       plan_ids=["basic"], addon_constraint="none")
    seat_free = coupon("seat", discount_type="offer_quantity", discount_quantity=2, apply_on="each_specified_item",
                       plan_constraint="none", addon_constraint="all")
    fixed = coupon("fixed", discount_type="fixed_amount", discount_amount=300)
    ten = coupon("ten", discount_percentage=10)
    got = CR.discounts([ten, half_plan, fixed, seat_free], lines)
    # item coupons first: 500 off the plan, 2 x 200 off the seats; then the invoice: 10% of 1200, 300
    assert [(d["entity_id"], d["amount"]) for d in got] == [("half", 500), ("seat", 400), ("ten", 120),
                                                            ("fixed", 300)]
    assert CR.discounts([coupon("big", discount_type="fixed_amount", discount_amount=10**6)], lines)[0]["amount"] \
        == 2100
    assert CR.discounts([half_plan], [line("addon", "seat", 200)]) == []


def test_coupon_durations():
    one, forever = coupon("o", duration_type="one_time"), coupon("f", duration_type="forever")
    limited = coupon("l", duration_type="limited_period", duration_month=2)
    entry = CR.attach(limited, T0, "CODE-1")
    assert entry == {"coupon_id": "l", "apply_till": 1_772_323_200, "applied_count": 0, "coupon_code": "CODE-1"}
    assert CR.in_effect(entry, limited, T0) and not CR.in_effect(entry, limited, entry["apply_till"])
    assert CR.in_effect({"applied_count": 0}, one, T0) and not CR.in_effect({"applied_count": 1}, one, T0)
    assert CR.in_effect({"applied_count": 99}, forever, T0)


coupon_strategy = st.one_of(
    st.builds(lambda p: coupon("p", discount_percentage=p), st.integers(1, 100)),
    st.builds(lambda a: coupon("f", discount_type="fixed_amount", discount_amount=a), st.integers(1, 10**6)),
    st.builds(lambda p: coupon("i", discount_percentage=p, apply_on="each_specified_item", plan_constraint="all",
                               addon_constraint="all"), st.integers(1, 100)),
    st.builds(lambda q: coupon("q", discount_type="offer_quantity", discount_quantity=q,
                               apply_on="each_specified_item", plan_constraint="all", addon_constraint="none"),
              st.integers(1, 5)),
)
line_strategy = st.builds(line, st.sampled_from(["plan", "addon", "adhoc"]), st.sampled_from(["x", "y"]),
                          st.integers(0, 10**6), st.integers(1, 10))


@given(st.lists(line_strategy, max_size=6), st.lists(coupon_strategy, max_size=4))
def test_invoice_totals_add_up(lines, coupons):
    discounts = CR.discounts(coupons, lines)
    inv = recompute({"line_items": lines, "discounts": discounts})
    assert inv["sub_total"] == sum(li["amount"] for li in lines)
    assert all(d["amount"] > 0 for d in discounts)
    assert sum(d["amount"] for d in discounts) <= inv["sub_total"]
    assert inv["amount"] == inv["sub_total"] - sum(d["amount"] for d in discounts) + inv["tax"]
    assert inv["amount_due"] == inv["amount"]
