"""Catalog rules (billhive.domain.catalog): pure, no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import catalog as rules
from billhive.errors import BillhiveError

NOW = 1_700_000_000


def _err(fn, *args, **kw) -> BillhiveError:
    with pytest.raises(BillhiveError) as exc:
        fn(*args, **kw)
    return exc.value


def _plan(**kw) -> dict:
    return {"id": "p", "name": "P", "price": 0, "period": 1, "period_unit": "month", "charge_model": "flat_fee",
            "free_quantity": 0, "status": "active", **kw}


def _addon(**kw) -> dict:
    return {"id": "a", "name": "A", "type": "on_off", "charge_type": "recurring", "price": 0, "status": "active", **kw}


def _coupon(**kw) -> dict:
    return {"id": "c", "name": "C", "discount_type": "percentage", "duration_type": "forever",
            "apply_on": "invoice_amount", "status": "active", "redemptions": 0, **kw}


# ---- ids ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["basic", "pro-2024_annual", "gold#1", "a.b@c+d", "é"])
def test_ids_accepted(value):
    rules.check_id(value, "id")


@pytest.mark.parametrize("value", ["", "a b", "a/b", "a\\b", "50%", " lead", "tab\t", "nl\n", "\x00"])
def test_ids_refused(value):
    assert _err(rules.check_id, value, "code").param == "code"


# ---- plans ---------------------------------------------------------------------------------------

def test_trial_needs_both_period_and_unit():
    assert _err(rules.normalize_plan, _plan(trial_period=3), {"trial_period"}).param == "trial_period_unit"
    assert _err(rules.normalize_plan, _plan(trial_period_unit="day"), {"trial_period_unit"}).param == "trial_period"
    ok = rules.normalize_plan(_plan(trial_period=3, trial_period_unit="day"), {"trial_period", "trial_period_unit"})
    assert ok["trial_period"] == 3


def test_trial_period_zero_removes_the_trial():
    plan = _plan(trial_period=3, trial_period_unit="day")
    out = rules.normalize_plan({**plan, "trial_period": 0}, {"trial_period"})
    assert "trial_period" not in out and "trial_period_unit" not in out
    assert plan["trial_period"] == 3  # the argument is not changed


def test_free_quantity_needs_per_unit():
    assert _err(rules.normalize_plan, _plan(free_quantity=2), {"free_quantity"}).param == "free_quantity"
    assert _err(rules.normalize_plan, _plan(free_quantity=2), {"charge_model"}).param == "charge_model"
    assert rules.normalize_plan(_plan(free_quantity=2, charge_model="per_unit"), set())["free_quantity"] == 2


def test_plan_update_rules():
    assert _err(rules.check_plan_update, _plan(status="archived"), {}, in_use=False).http_status == 409
    rules.check_plan_update(_plan(), {"period": 3, "taxable": False}, in_use=False)
    rules.check_plan_update(_plan(), {"price": 5, "name": "N", "period": 1}, in_use=True)  # period unchanged
    assert _err(rules.check_plan_update, _plan(), {"period": 3}, in_use=True).param == "period"


# ---- addons --------------------------------------------------------------------------------------

def test_recurring_addon_needs_a_period_unit():
    assert _err(rules.normalize_addon, _addon(), set()).param == "period_unit"
    err = _err(rules.normalize_addon, _addon(period_unit="not_applicable"), {"period_unit"})
    assert err.param == "period_unit"
    assert rules.normalize_addon(_addon(period_unit="week"), {"period_unit"})["period"] == 1


def test_non_recurring_addon_has_no_period():
    out = rules.normalize_addon(_addon(charge_type="non_recurring"), {"charge_type"})
    assert out["period_unit"] == "not_applicable" and "period" not in out
    # leftovers of a recurring addon are dropped; given values are refused
    old = _addon(period=2, period_unit="month")
    out = rules.normalize_addon({**old, "charge_type": "non_recurring"}, {"charge_type"})
    assert out["period_unit"] == "not_applicable" and "period" not in out
    assert _err(rules.normalize_addon, {**old, "charge_type": "non_recurring"}, {"charge_type", "period"}).param \
        == "period"
    assert _err(rules.normalize_addon, {**old, "charge_type": "non_recurring"},
                {"charge_type", "period_unit"}).param == "period_unit"


def test_unit_only_for_quantity_addons():
    q = _addon(charge_type="non_recurring", type="quantity", unit="seat")
    assert rules.normalize_addon(q, {"unit"})["unit"] == "seat"
    assert _err(rules.normalize_addon, {**q, "type": "on_off"}, {"type", "unit"}).param == "unit"
    assert "unit" not in rules.normalize_addon({**q, "type": "on_off"}, {"type"})


def test_addon_update_rules():
    assert _err(rules.check_addon_update, _addon(status="archived"), {}, in_use=False).http_status == 409
    rules.check_addon_update(_addon(), {"name": "x", "invoice_name": "y", "price": 9}, in_use=True)
    assert _err(rules.check_addon_update, _addon(), {"description": "d"}, in_use=True).param == "description"


# ---- coupons -------------------------------------------------------------------------------------

def test_discount_value_must_match_discount_type():
    assert _err(rules.normalize_coupon, _coupon(), now=NOW).param == "discount_percentage"
    assert _err(rules.normalize_coupon, _coupon(discount_type="fixed_amount"), now=NOW).param == "discount_amount"
    err = _err(rules.normalize_coupon, _coupon(discount_percentage=5, discount_quantity=1), now=NOW)
    assert err.param == "discount_quantity"
    assert _err(rules.normalize_coupon, _coupon(discount_type="fixed_amount", discount_amount=0), now=NOW).param \
        == "discount_amount"
    out = rules.normalize_coupon(_coupon(discount_percentage=12.5), now=NOW)
    assert out["plan_constraint"] == out["addon_constraint"] == "not_applicable"


def test_duration_month_only_for_limited_period():
    assert _err(rules.normalize_coupon, _coupon(discount_percentage=1, duration_type="limited_period"),
                now=NOW).param == "duration_month"
    assert _err(rules.normalize_coupon, _coupon(discount_percentage=1, duration_month=3), now=NOW).param \
        == "duration_month"
    ok = rules.normalize_coupon(_coupon(discount_percentage=1, duration_type="limited_period", duration_month=3),
                                now=NOW)
    assert ok["duration_month"] == 3


def test_valid_till_in_the_future():
    assert _err(rules.normalize_coupon, _coupon(discount_percentage=1, valid_till=NOW), now=NOW).param == "valid_till"
    rules.normalize_coupon(_coupon(discount_percentage=1, valid_till=NOW + 1), now=NOW)


def test_each_specified_item_constraints():
    base = _coupon(discount_percentage=1, apply_on="each_specified_item")
    assert _err(rules.normalize_coupon, base, now=NOW).param == "plan_constraint"
    assert _err(rules.normalize_coupon, {**base, "plan_constraint": "all"}, now=NOW).param == "addon_constraint"
    spec = {**base, "plan_constraint": "specific", "addon_constraint": "none"}
    assert _err(rules.normalize_coupon, spec, now=NOW).param == "plan_ids[0]"
    assert _err(rules.normalize_coupon, {**spec, "plan_ids": ["a", "b", "a"]}, now=NOW).param == "plan_ids[2]"
    assert _err(rules.normalize_coupon, {**spec, "plan_ids": ["a"], "addon_ids": ["x"]}, now=NOW).param \
        == "addon_ids[0]"
    assert rules.normalize_coupon({**spec, "plan_ids": ["a"]}, now=NOW)["plan_ids"] == ["a"]
    inv = _coupon(discount_percentage=1, plan_ids=["a"])
    assert _err(rules.normalize_coupon, inv, now=NOW).param == "plan_ids"


def test_offer_quantity_applies_to_items():
    c = _coupon(discount_type="offer_quantity", discount_quantity=1)
    assert _err(rules.normalize_coupon, c, now=NOW).param == "apply_on"
    rules.normalize_coupon({**c, "apply_on": "each_specified_item", "plan_constraint": "all",
                            "addon_constraint": "none"}, now=NOW)


def test_coupon_status_and_redeemable():
    c = _coupon(valid_till=NOW)
    assert rules.coupon_status(c, NOW) == "active"
    assert rules.coupon_status(c, NOW + 1) == "expired"
    assert _err(rules.check_redeemable, c, NOW + 1, param="coupon").api_error_code == "resource_limit_exhausted"
    assert rules.coupon_status(_coupon(status="archived", valid_till=NOW), NOW + 1) == "archived"
    assert _err(rules.check_redeemable, _coupon(status="archived"), NOW, param="coupon").http_status == 409
    full = _coupon(max_redemptions=1, redemptions=1)
    assert _err(rules.check_redeemable, full, NOW, param="coupon").api_error_code == "resource_limit_exhausted"


@given(max_r=st.integers(1, 20), attempts=st.integers(0, 40))
def test_redemptions_never_pass_max(max_r, attempts):
    coupon = _coupon(max_redemptions=max_r)
    done = 0
    for _ in range(attempts):
        try:
            rules.check_redeemable(coupon, NOW, param="coupon")
        except BillhiveError:
            continue
        coupon = rules.redeemed(coupon)
        done += 1
    assert coupon["redemptions"] == done == min(attempts, max_r)
    assert (coupon["status"] == "expired") == (done == max_r)


def test_applicability():
    c = _coupon(plan_constraint="specific", plan_ids=["basic"], addon_constraint="all")
    assert rules.applies_to_plan(c, "basic") and not rules.applies_to_plan(c, "pro")
    assert rules.applies_to_addon(c, "anything")
    inv = _coupon(plan_constraint="not_applicable", addon_constraint="not_applicable")
    assert not rules.applies_to_plan(inv, "basic") and not rules.applies_to_addon(inv, "x")
    none = _coupon(plan_constraint="none", addon_constraint="specific", addon_ids=["a"])
    assert not rules.applies_to_plan(none, "basic") and rules.applies_to_addon(none, "a")
