"""The unmodified chargebee 1.6.6 SDK: hosted pages (checkout_new, checkout_existing, retrieve) and the
create_invoice estimate (the SDK's request helper: 1.6.6 has no Estimate.create_invoice method)."""

from __future__ import annotations

import chargebee
import httpx
import pytest
from chargebee import request

from tests.support import factories as F
from tests.support import sdk
from tests.support.subs import GENESIS, addon, plan, start


@pytest.fixture
def cb(server, site):
    start(site)
    sdk.configure(server, site)
    plan(site)
    addon(site, "kit", 700, charge_type="non_recurring")
    return site


def test_checkout_new_then_retrieve_the_result(cb):
    page = chargebee.HostedPage.checkout_new({
        "subscription": {"plan_id": "basic"}, "customer": {"email": "sdk@example.com"},
        "pass_thru_content": "order-17", "embed": False}).hosted_page
    assert page.type == "checkout_new" and page.state == "created" and page.embed is False
    assert page.expires_at == GENESIS + 3 * 3600 and page.pass_thru_content == "order-17"
    assert page.content is not None and page.content.subscription is None
    b = httpx.Client(timeout=30)
    assert b.get(page.url).status_code == 200
    assert chargebee.HostedPage.retrieve(page.id).hosted_page.state == "requested"
    b.post(page.url, data={"number": "4111111111111111", "expiry_month": "12", "expiry_year": "2030",
                           "first_name": "Sam", "last_name": "Doe"})
    done = chargebee.HostedPage.retrieve(page.id).hosted_page
    assert done.state == "succeeded"
    sub, customer, card, invoice = (done.content.subscription, done.content.customer, done.content.card,
                                    done.content.invoice)
    assert sub.plan_id == "basic" and sub.status == "active" and customer.email == "sdk@example.com"
    assert card.last4 == "1111" and invoice.status == "paid" and invoice.subscription_id == sub.id
    assert chargebee.Subscription.retrieve(sub.id).subscription.customer_id == customer.id


def test_checkout_existing_and_errors(cb):
    cust = F.customer(cb)
    sub = chargebee.Subscription.create_for_customer(cust["id"], {"plan_id": "basic"}).subscription
    page = chargebee.HostedPage.checkout_existing({"subscription": {"id": sub.id, "plan_quantity": 2}}).hosted_page
    assert page.type == "checkout_existing" and page.state == "created"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.HostedPage.checkout_new({"subscription": {"plan_id": "nope"}})
    assert exc.value.http_status_code == 404 and exc.value.param == "subscription[plan_id]"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.HostedPage.retrieve("nope")
    assert exc.value.api_error_code == "resource_not_found"


def test_create_invoice_estimate(cb):
    cust = F.customer(cb)
    params = {"addons": [{"id": "kit"}], "charges": [{"amount": 300, "description": "Fitting"}]}
    est = request.send("post", request.uri_path("estimates", "create_invoice"),
                       {"invoice": {"customer_id": cust["id"]}, **params}).estimate
    assert est.collect_now is True and est.recurring is False and est.amount == est.amount_due == 1000
    assert [li.entity_type for li in est.line_items] == ["addon", "adhoc"]
    invoice = chargebee.Invoice.create({"customer_id": cust["id"], **params}).invoice
    assert invoice.amount == est.amount and invoice.sub_total == est.sub_total
