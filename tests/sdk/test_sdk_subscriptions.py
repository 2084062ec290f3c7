"""The unmodified chargebee 1.6.6 SDK against subscriptions and estimates."""

from __future__ import annotations

import chargebee
import pytest

from tests.support import sdk
from tests.support.subs import GENESIS, start, ts

FEB_1 = ts(2026, 2, 1)


@pytest.fixture
def cb(server, site):
    start(site)
    sdk.configure(server, site)
    chargebee.Plan.create({"id": "basic", "name": "Basic", "price": 1000, "period": 1, "period_unit": "month"})
    chargebee.Plan.create({"id": "pro", "name": "Pro", "price": 3000, "period": 1, "period_unit": "month"})
    chargebee.Addon.create({"id": "seat", "name": "Seat", "price": 200, "type": "quantity", "charge_type": "recurring",
                            "period": 1, "period_unit": "month"})
    chargebee.Coupon.create({"id": "ten", "name": "Ten", "discount_type": "percentage", "discount_percentage": 10,
                             "apply_on": "invoice_amount", "duration_type": "forever"})
    return site


def _create(**extra):
    params = {"plan_id": "basic", "customer": {"email": "sdk@example.com", "first_name": "Sam"},
              "card": {"number": "4111111111111111", "expiry_month": 12, "expiry_year": 2030, "cvv": "100"}}
    params.update(extra)
    return chargebee.Subscription.create(params)


def test_create_retrieve_list(cb):
    result = _create(addons=[{"id": "seat", "quantity": 2}], coupon="ten")
    sub, customer, card, invoice = result.subscription, result.customer, result.card, result.invoice
    assert sub.status == "active" and sub.plan_id == "basic" and sub.customer_id == customer.id
    assert sub.current_term_end == FEB_1 and sub.has_scheduled_changes is False
    assert sub.addons[0].id == "seat" and sub.addons[0].quantity == 2
    assert sub.coupons[0].coupon_id == "ten" and sub.coupons[0].applied_count == 1
    assert card.last4 == "1111" and customer.email == "sdk@example.com"
    assert invoice.status == "paid" and invoice.amount == 1260 and invoice.discounts[0].entity_id == "ten"
    got = chargebee.Subscription.retrieve(sub.id)
    assert got.subscription.id == sub.id and got.customer.id == customer.id
    listed = chargebee.Subscription.list({"limit": 5})
    assert [e.subscription.id for e in listed] == [sub.id] and listed[0].customer.id == customer.id
    mine = chargebee.Subscription.subscriptions_for_customer(customer.id, {"limit": 5})
    assert [e.subscription.id for e in mine] == [sub.id]


def test_update_cancel_reactivate(cb):
    sub = _create().subscription
    changed = chargebee.Subscription.update(sub.id, {"plan_id": "pro", "end_of_term": True})
    assert changed.subscription.has_scheduled_changes is True
    scheduled = chargebee.Subscription.retrieve_with_scheduled_changes(sub.id).subscription
    assert scheduled.plan_id == "pro"
    chargebee.Subscription.remove_scheduled_changes(sub.id)
    now = chargebee.Subscription.update(sub.id, {"plan_quantity": 2, "prorate": False})
    assert now.subscription.plan_quantity == 2 and now.invoice is None
    cancelled = chargebee.Subscription.cancel(sub.id, {"end_of_term": True}).subscription
    assert cancelled.status == "non_renewing"
    assert chargebee.Subscription.remove_scheduled_cancellation(sub.id).subscription.status == "active"
    assert chargebee.Subscription.cancel(sub.id).subscription.status == "cancelled"
    back = chargebee.Subscription.reactivate(sub.id)
    assert back.subscription.status == "active" and back.invoice.status == "paid"
    moved = chargebee.Subscription.change_term_end(sub.id, {"term_ends_at": GENESIS + 5 * 86400}).subscription
    assert moved.current_term_end == GENESIS + 5 * 86400


def test_charges_at_term_end_and_estimates(cb):
    sub = _create().subscription
    est = chargebee.Subscription.add_charge_at_term_end(sub.id, {"amount": 500, "description": "Usage"}).estimate
    assert est.sub_total == 1500 and est.line_items[1].entity_type == "adhoc"
    renewal = chargebee.Estimate.renewal_estimate(sub.id).estimate
    assert renewal.amount == 1500 and renewal.collect_now is False
    created = chargebee.Estimate.create_subscription({"subscription": {"plan_id": "pro", "coupon": "ten"}}).estimate
    assert created.amount == 2700 and created.collect_now is True and created.discounts[0].type == "coupon"
    updated = chargebee.Estimate.update_subscription({"subscription": {"id": sub.id, "plan_id": "pro"},
                                                      "end_of_term": True}).estimate
    assert updated.sub_total == 3000  # delayed charges only with include_delayed_charges
    updated = chargebee.Estimate.update_subscription({"subscription": {"id": sub.id, "plan_id": "pro"},
                                                      "end_of_term": True, "include_delayed_charges": True}).estimate
    assert updated.sub_total == 3500


def test_errors_are_typed(cb):
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Subscription.retrieve("nope")
    assert exc.value.http_status_code == 404 and exc.value.api_error_code == "resource_not_found"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        _create(plan_id="missing")
    assert exc.value.param == "plan_id"
    with pytest.raises(chargebee.PaymentError) as exc:
        chargebee.Subscription.create({"plan_id": "basic", "customer": {"email": "x@example.com"}})
    assert exc.value.api_error_code == "payment_method_not_present"
    sub = _create().subscription
    chargebee.Subscription.cancel(sub.id)
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Subscription.cancel(sub.id)
    assert exc.value.http_status_code == 409 and exc.value.api_error_code == "invalid_state_for_request"
    deleted = chargebee.Subscription.delete(sub.id).subscription
    assert deleted.id == sub.id


# Issue 12 item 1: Chargebee's create "will be created only if the payment was successful" (spec,
# POST /subscriptions) and answers a gateway decline with 400 type payment, api_error_code
# payment_processing_failed (apidocs.chargebee.com/docs/api/error-handling, "Sample error response 2").
def test_a_declined_signup_raises_a_payment_error_and_creates_nothing(cb):
    with pytest.raises(chargebee.PaymentError) as exc:
        _create(customer={"id": "dee", "email": "dee@example.com"},
                card={"number": "4005519200000004", "expiry_month": 12, "expiry_year": 2030, "cvv": "100"})
    assert exc.value.http_status_code == 400 and exc.value.api_error_code == "payment_processing_failed"
    assert list(chargebee.Subscription.list({"limit": 5})) == []
    assert list(chargebee.Invoice.list({"limit": 5})) == [] and list(chargebee.Event.list({"limit": 5})) == []
    with pytest.raises(chargebee.InvalidRequestError) as missing:
        chargebee.Customer.retrieve("dee")
    assert missing.value.http_status_code == 404
    # the same signup with a good card: created, paid, and its invoice takes the first number
    result = _create(customer={"id": "dee", "email": "dee@example.com"})
    assert result.subscription.status == "active" and result.invoice.status == "paid" and result.invoice.id == "1"
