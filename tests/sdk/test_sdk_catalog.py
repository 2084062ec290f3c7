"""The unmodified chargebee 1.6.6 SDK against the catalog: plans, addons, coupons, coupon codes."""

from __future__ import annotations

import chargebee
import pytest

from tests.support import sdk


@pytest.fixture
def cb(server, site):
    sdk.configure(server, site)
    return site


def test_plan_lifecycle(cb):
    plan = chargebee.Plan.create({"id": "basic", "name": "Basic", "price": 1500, "period": 1, "period_unit": "month",
                                  "trial_period": 14, "trial_period_unit": "day", "taxable": False,
                                  "meta_data": {"tier": "entry"}}).plan
    assert plan.id == "basic" and plan.price == 1500 and plan.trial_period == 14
    assert plan.taxable is False and plan.enabled_in_portal is True and plan.meta_data == {"tier": "entry"}
    plan = chargebee.Plan.update("basic", {"price": 1800, "invoice_name": "Basic plan"}).plan
    assert plan.price == 1800 and plan.invoice_name == "Basic plan"
    assert chargebee.Plan.retrieve("basic").plan.price == 1800
    plan = chargebee.Plan.delete("basic").plan
    assert plan.status == "archived" and plan.archived_at
    assert chargebee.Plan.retrieve("basic").plan.status == "archived"


def test_plan_list_and_pagination(cb):
    for i in range(3):
        chargebee.Plan.create({"id": f"p{i}", "name": f"P{i}", "price": 100 * i})
    first = chargebee.Plan.list({"limit": 2})
    assert [e.plan.id for e in first] == ["p2", "p1"] and first.next_offset
    second = chargebee.Plan.list({"limit": 2, "offset": first.next_offset})
    assert [e.plan.id for e in second] == ["p0"] and second.next_offset is None
    assert [e.plan.id for e in chargebee.Plan.list({"price[gte]": 100, "sort_by[asc]": "price"})] == ["p1", "p2"]


def test_plan_errors(cb):
    chargebee.Plan.create({"id": "basic", "name": "Basic"})
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Plan.create({"id": "basic", "name": "Again"})
    assert exc.value.api_error_code == "duplicate_entry" and exc.value.param == "id"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Plan.create({"id": "neg", "name": "Neg", "price": -1})
    assert exc.value.param == "price" and exc.value.http_status_code == 400
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Plan.create({"name": "No id"})
    assert exc.value.param == "id" and exc.value.error_code == "param_not_present"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Plan.retrieve("missing")
    assert exc.value.api_error_code == "resource_not_found" and exc.value.http_status_code == 404
    chargebee.Plan.delete("basic")
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Plan.update("basic", {"name": "X"})
    assert exc.value.api_error_code == "invalid_state_for_request" and exc.value.http_status_code == 409


def test_addon_lifecycle(cb):
    addon = chargebee.Addon.create({"id": "seats", "name": "Seats", "charge_type": "recurring", "type": "quantity",
                                    "unit": "seat", "price": 300, "period": 1, "period_unit": "month"}).addon
    assert addon.type == "quantity" and addon.unit == "seat" and addon.status == "active"
    once = chargebee.Addon.create({"id": "setup", "name": "Setup", "charge_type": "non_recurring",
                                   "price": 5000}).addon
    assert once.period_unit == "not_applicable"
    assert chargebee.Addon.update("seats", {"price": 350}).addon.price == 350
    assert chargebee.Addon.retrieve("seats").addon.price == 350
    assert [e.addon.id for e in chargebee.Addon.list({"charge_type[is]": "non_recurring"})] == ["setup"]
    assert chargebee.Addon.delete("setup").addon.status == "archived"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Addon.create({"id": "bad", "name": "Bad", "charge_type": "recurring"})
    assert exc.value.param == "period_unit"


def test_coupon_and_codes(cb):
    chargebee.Plan.create({"id": "basic", "name": "Basic", "price": 1000})
    coupon = chargebee.Coupon.create({"id": "spring", "name": "Spring", "discount_type": "percentage",
                                      "discount_percentage": 12.5, "apply_on": "each_specified_item",
                                      "plan_constraint": "specific", "plan_ids": ["basic"],
                                      "addon_constraint": "none", "duration_type": "limited_period",
                                      "duration_month": 3, "max_redemptions": 100}).coupon
    assert coupon.discount_percentage == 12.5 and coupon.plan_ids == ["basic"] and coupon.status == "active"
    assert coupon.redemptions == 0
    assert chargebee.Coupon.retrieve("spring").coupon.duration_month == 3
    fixed = chargebee.Coupon.create({"id": "five", "name": "Five", "discount_type": "fixed_amount",
                                     "discount_amount": 500, "apply_on": "invoice_amount"}).coupon
    assert fixed.plan_constraint == "not_applicable"
    assert [e.coupon.id for e in chargebee.Coupon.list({"limit": 10})] == ["five", "spring"]
    assert [e.coupon.id for e in chargebee.Coupon.list({"discount_type[is]": "fixed_amount"})] == ["five"]
    code = chargebee.CouponCode.create({"coupon_id": "spring", "coupon_set_name": "launch", "code": "SPRING-001"})
    assert code.coupon_code.code == "SPRING-001" and code.coupon_code.coupon_id == "spring"
    assert chargebee.CouponCode.retrieve("SPRING-001").coupon_code.coupon_set_name == "launch"


def test_coupon_errors(cb):
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Coupon.create({"id": "c", "name": "C", "discount_type": "fixed_amount",
                                 "apply_on": "invoice_amount"})
    assert exc.value.param == "discount_amount" and exc.value.api_error_code == "param_wrong_value"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Coupon.create({"id": "c", "name": "C", "discount_percentage": 10, "apply_on": "each_specified_item",
                                 "plan_constraint": "specific", "plan_ids": ["ghost"], "addon_constraint": "none"})
    assert exc.value.param == "plan_ids[0]" and exc.value.http_status_code == 404
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.CouponCode.create({"coupon_id": "ghost", "coupon_set_name": "s", "code": "X1"})
    assert exc.value.param == "coupon_id" and exc.value.api_error_code == "resource_not_found"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Coupon.retrieve("ghost")
    assert exc.value.http_status_code == 404
