"""/hosted_pages: the four checkout pages and retrieve, and the checkout page behind each page's url
(driven like a browser: open it, post its form, follow the redirect)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from billhive.services import payments
from billhive.services import subscriptions as subs
from billhive.services.hosted_pages import checkout as HC
from tests.support import factories as F
from tests.support.subs import (
    DAY,
    GENESIS,
    addon,
    coupon,
    plan,
    start,
    subscribe,
    travel,
)

TTL = 3 * 3600
GOOD = {"number": "4111 1111 1111 1111", "expiry_month": "12", "expiry_year": "2030", "cvv": "123",
        "first_name": "Ada", "last_name": "Lovelace"}


@pytest.fixture
def tsite(site):
    start(site)
    plan(site)
    plan(site, "pro", 3000)
    plan(site, "trial", 2000, trial_period=14, trial_period_unit="day")
    addon(site, "support", 500)
    addon(site, "kit", 1200, charge_type="non_recurring", type="quantity")
    addon(site, "setup", 2500, charge_type="non_recurring")
    coupon(site, "ten", discount_percentage=10)
    coupon(site, "once", discount_percentage=50, duration_type="one_time")
    return site


def browser(site) -> httpx.Client:
    """A browser that follows nothing by itself (the tests look at each redirect)."""
    return httpx.Client(timeout=30)


def create(site, kind: str, **params) -> dict:
    return site.api.post(f"/hosted_pages/{kind}", params)["hosted_page"]


def retrieve(site, page_id: str) -> dict:
    return site.api.get(f"/hosted_pages/{page_id}")["hosted_page"]


def landing(site) -> str:
    """A redirect target the test can follow: billhive's own /health, with a query of its own."""
    return f"{site.api.server.base_url}/health?from=checkout"


def checkout(site, page: dict, card: dict = GOOD, **fields) -> httpx.Response:
    """Open the page, then submit its form as a customer would."""
    b = browser(site)
    opened = b.get(page["url"])
    assert opened.status_code == 200, opened.text
    return b.post(page["url"], data={**card, **fields})


def charges(site) -> int:
    return site.app.gateways["chargebee"].charge_count(site.pk)


# ---- creating and retrieving pages ----------------------------------------------------------------------

def test_checkout_new_answers_a_page_and_changes_nothing(tsite):
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic", "customer[email]": "ada@example.com",
                                           "pass_thru_content": "campaign-7", "embed": "false",
                                           "redirect_url": "https://shop.example/done"})
    assert page["type"] == "checkout_new" and page["state"] == "created" and page["embed"] is False
    assert page["created_at"] == GENESIS and page["expires_at"] == GENESIS + TTL
    assert page["pass_thru_content"] == "campaign-7" and page["layout"] == "in_app" and page["content"] == {}
    assert page["url"] == f"{tsite.api.server.base_url}/hosted_pages/{tsite.name}/{page['id']}"
    assert len(page["id"]) >= 32 and page["object"] == "hosted_page"
    assert "redirect_url" not in page and "iframe_messaging" not in page
    assert retrieve(tsite, page["id"]) == page
    assert tsite.api.get("/subscriptions").body == {"list": []} and tsite.api.get("/customers").body == {"list": []}
    assert F.events_of(tsite) == [] and charges(tsite) == 0
    other = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic"})
    assert other["id"] != page["id"] and other["embed"] is True and "pass_thru_content" not in other


def test_checkout_new_full_browser_flow(tsite):
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "pro", "subscription[coupon]": "ten",
                                           "addons[id][0]": "support", "customer[email]": "ada@example.com",
                                           "redirect_url": landing(tsite), "pass_thru_content": "ref-1"})
    b = browser(tsite)
    opened = b.get(page["url"])
    assert opened.status_code == 200 and "Subscribe to Pro" in opened.text
    assert "USD 31.50" in opened.text  # (3000 + 500) - 10 %: the estimate of what the form will charge
    assert 'value="ada@example.com"' in opened.text
    assert opened.headers["cache-control"] == "no-store" and opened.headers["referrer-policy"] == "no-referrer"
    assert retrieve(tsite, page["id"])["state"] == "requested"

    posted = b.post(page["url"], data=GOOD)
    assert posted.status_code == 303
    target = urlparse(posted.headers["location"])
    assert parse_qs(target.query) == {"from": ["checkout"], "id": [page["id"]], "state": ["succeeded"]}
    followed = b.get(posted.headers["location"])
    assert followed.status_code == 200 and followed.json()["status"] == "ok"

    done = retrieve(tsite, parse_qs(target.query)["id"][0])
    assert done["state"] == "succeeded" and done["pass_thru_content"] == "ref-1"
    content = done["content"]
    assert set(content) == {"subscription", "customer", "card", "invoice"}
    sub = tsite.api.get(f"/subscriptions/{content['subscription']['id']}")
    assert sub["subscription"] == content["subscription"] and sub["subscription"]["status"] == "active"
    assert sub["subscription"]["plan_id"] == "pro" and sub["subscription"]["coupons"][0]["coupon_id"] == "ten"
    assert sub["customer"]["email"] == "ada@example.com" and sub["customer"]["first_name"] == "Ada"
    assert sub["card"]["last4"] == "1111" and "number" not in sub["card"] and content["card"] == sub["card"]
    inv = tsite.api.get(f"/invoices/{content['invoice']['id']}")["invoice"]
    assert inv == content["invoice"] and inv["status"] == "paid" and inv["amount_paid"] == 3150
    assert tsite.api.get("/coupons/ten")["coupon"]["redemptions"] == 1
    events = F.events_of(tsite)
    assert {e["event_type"] for e in events} >= {"customer_created", "card_added", "subscription_created",
                                                 "invoice_generated", "payment_succeeded"}
    assert {e["source"] for e in events} == {"hosted_page"}
    # the page is done: opening or posting it again does nothing more
    again = b.post(page["url"], data=GOOD)
    assert again.status_code == 200 and "Your checkout is complete" in again.text
    assert b.get(page["url"]).status_code == 200 and charges(tsite) == 1
    assert len(tsite.api.get("/subscriptions").body["list"]) == 1


def test_checkout_new_without_redirect_url_uses_the_plans_then_shows_thanks(tsite):
    tsite.api.post("/plans/pro", {"redirect_url": landing(tsite)})
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "pro", "subscription[id]": "sub-ada"})
    posted = checkout(tsite, page, email="ada@example.com")
    assert posted.status_code == 303 and posted.headers["location"].startswith(landing(tsite) + "&id=")
    content = retrieve(tsite, page["id"])["content"]
    # no customer[id]: the new customer takes subscription[id], as Chargebee documents
    assert content["subscription"]["id"] == "sub-ada" and content["customer"]["id"] == "sub-ada"
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic"})
    posted = checkout(tsite, page)
    assert posted.status_code == 200 and "Your checkout is complete" in posted.text
    assert retrieve(tsite, page["id"])["state"] == "succeeded"


def test_checkout_new_for_an_existing_customer(tsite):
    cust = F.customer(tsite, refundable=400)
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic", "customer[id]": cust["id"]})
    b = browser(tsite)
    assert "USD 6.00" in b.get(page["url"]).text  # the customer's credits count in what is due now
    assert b.post(page["url"], data={**GOOD, "number": "5555555555554444"}).status_code == 200
    content = retrieve(tsite, page["id"])["content"]
    assert content["customer"]["id"] == cust["id"] and content["card"]["last4"] == "4444"
    assert content["invoice"]["credits_applied"] == 400 and content["invoice"]["amount_paid"] == 600
    assert "card_updated" in [e["event_type"] for e in F.events_of(tsite)]


def test_checkout_new_with_a_trial_charges_nothing_now(tsite):
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "trial"})
    b = browser(tsite)
    opened = b.get(page["url"]).text
    assert "Due now" in opened and "Then USD 20.00 on 2026-01-15" in opened
    assert b.post(page["url"], data=GOOD).status_code == 200
    content = retrieve(tsite, page["id"])["content"]
    assert content["subscription"]["status"] == "in_trial" and "invoice" not in content
    assert content["card"]["last4"] == "1111" and charges(tsite) == 0


def test_declined_card_shows_the_error_and_the_page_stays_requested(tsite):
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic", "redirect_url": landing(tsite)})
    b = browser(tsite)
    b.get(page["url"])
    refused = b.post(page["url"], data={**GOOD, "number": "4119862760338320", "email": "ada@example.com"})
    assert refused.status_code == 400 and "Do not honour" in refused.text
    assert 'value="ada@example.com"' in refused.text and "4119862760338320" not in refused.text
    for bad, message in (({"number": "4111111111111112"}, "Card number: invalid card number"),
                         ({"expiry_month": "13"}, "Expiry month: must be between 1 and 12"),
                         ({"expiry_year": "2025"}, "The card has expired"),
                         ({"email": "not-an-email"}, "Email: invalid email address")):
        r = b.post(page["url"], data={**GOOD, **bad})
        assert r.status_code == 400 and message in r.text, (bad, r.text)
    assert retrieve(tsite, page["id"])["state"] == "requested"
    assert tsite.api.get("/subscriptions").body == {"list": []} and tsite.api.get("/customers").body == {"list": []}
    assert F.events_of(tsite) == []
    ok = b.post(page["url"], data=GOOD)
    assert ok.status_code == 303 and retrieve(tsite, page["id"])["state"] == "succeeded"


def test_a_card_that_stores_but_fails_to_pay_creates_nothing_like_the_api(tsite):
    # create_a_subscription answers 400 payment_processing_failed and creates nothing: the page shows
    # the decline and stays requested (the spec's checkout_new: "web hook events will be fired only
    # after ... successful creation of subscription"); another card then succeeds
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic"})
    b = browser(tsite)
    b.get(page["url"])
    refused = b.post(page["url"], data={**GOOD, "number": "4005519200000004", "email": "ada@example.com"})
    assert refused.status_code == 400 and "Insufficient funds" in refused.text
    assert retrieve(tsite, page["id"])["state"] == "requested"
    assert tsite.api.get("/subscriptions").body == {"list": []} and tsite.api.get("/customers").body == {"list": []}
    assert tsite.api.get("/invoices").body == {"list": []} and F.events_of(tsite) == []
    ok = b.post(page["url"], data={**GOOD, "email": "ada@example.com"})
    assert ok.status_code == 200  # no redirect_url: the page's own success view
    done = retrieve(tsite, page["id"])
    assert done["state"] == "succeeded" and done["content"]["invoice"]["status"] == "paid"
    assert done["content"]["invoice"]["id"] == "1"
    assert sorted(tsite.app.gateways["chargebee"].charges(tsite.pk).values()) == ["failure", "success"]


def test_a_refusal_at_submission_is_shown(tsite):
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic", "subscription[id]": "taken"})
    b = browser(tsite)
    b.get(page["url"])
    subscribe(tsite, F.customer(tsite)["id"], id="taken")  # someone took the id meanwhile
    r = b.post(page["url"], data=GOOD)
    assert r.status_code == 400 and "taken is already present" in r.text
    assert retrieve(tsite, page["id"])["state"] == "requested"


# ---- checkout_existing ---------------------------------------------------------------------------------

def test_checkout_existing_upgrades_a_trial_with_a_card(tsite):
    cust = F.customer(tsite, card=None)
    sub = subscribe(tsite, cust["id"], "trial")["subscription"]
    page = create(tsite, "checkout_existing", **{"subscription[id]": sub["id"], "subscription[plan_id]": "pro",
                                                "redirect_url": landing(tsite)})
    assert page["type"] == "checkout_existing" and page["layout"] == "in_app"
    assert tsite.api.get(f"/subscriptions/{sub['id']}")["subscription"]["plan_id"] == "trial"
    b = browser(tsite)
    assert "Update your subscription" in b.get(page["url"]).text
    posted = b.post(page["url"], data=GOOD)
    assert posted.status_code == 303 and "state=succeeded" in posted.headers["location"]
    content = retrieve(tsite, page["id"])["content"]
    got = tsite.api.get(f"/subscriptions/{sub['id']}")
    assert got["subscription"]["plan_id"] == "pro" and content["subscription"] == got["subscription"]
    assert got["subscription"]["status"] == "in_trial" and "invoice" not in content  # billed at the trial end
    assert got["card"]["last4"] == "1111" and content["card"] == got["card"]
    assert "subscription_changed" in [e["event_type"] for e in F.events_of(tsite)]


def test_checkout_existing_with_a_charge_now(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    travel(tsite, GENESIS + 15 * DAY)
    page = create(tsite, "checkout_existing", **{"subscription[id]": sub["id"], "addons[id][0]": "setup"})
    assert "USD 25.00" in browser(tsite).get(page["url"]).text
    assert checkout(tsite, page).status_code == 200
    inv = retrieve(tsite, page["id"])["content"]["invoice"]
    assert inv["status"] == "paid" and inv["amount_paid"] == 2500
    assert tsite.api.get(f"/invoices/{inv['id']}")["invoice"] == inv


# ---- one-time checkouts --------------------------------------------------------------------------------

def test_checkout_onetime_charge(tsite):
    sub = subscribe(tsite, F.customer(tsite, card=None, auto_collection="on")["id"], "trial")["subscription"]
    page = create(tsite, "checkout_onetime_charge", **{"subscription[id]": sub["id"], "amount": 4200,
                                                      "description": "Onboarding"})
    assert page["type"] == "checkout_onetime_charge" and "layout" not in page
    b = browser(tsite)
    opened = b.get(page["url"]).text
    assert "Pay for Onboarding" in opened and "USD 42.00" in opened
    posted = b.post(page["url"], data=GOOD)
    assert posted.status_code == 200 and "Your checkout is complete" in posted.text
    done = retrieve(tsite, page["id"])
    content = done["content"]
    assert done["state"] == "succeeded" and set(content) == {"subscription", "customer", "card", "invoice"}
    inv = tsite.api.get(f"/invoices/{content['invoice']['id']}")["invoice"]
    assert inv == content["invoice"] and inv["status"] == "paid" and inv["recurring"] is False
    assert inv["subscription_id"] == sub["id"] and inv["line_items"][0]["description"] == "Onboarding"
    assert content["card"]["last4"] == "1111"


def test_onetime_charge_declined_creates_no_invoice_and_reopens_the_page(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    page = create(tsite, "checkout_onetime_charge", **{"subscription[id]": sub["id"], "amount": 700,
                                                      "description": "Repair"})
    b = browser(tsite)
    b.get(page["url"])
    failed = b.post(page["url"], data={**GOOD, "number": "4005519200000004"})
    assert failed.status_code == 400 and "Insufficient funds" in failed.text
    assert retrieve(tsite, page["id"])["state"] == "requested"
    # as POST /invoices/charge: no invoice (only the subscription's first one), no number taken
    assert [i["invoice"]["id"] for i in tsite.api.get("/invoices").body["list"]] == ["1"]
    ok = b.post(page["url"], data=GOOD)
    inv = retrieve(tsite, page["id"])["content"]["invoice"]
    assert ok.status_code == 200 and inv["status"] == "paid" and inv["id"] == "2"


def test_onetime_charge_timeout_succeeds_as_the_api_answers(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    page = create(tsite, "checkout_onetime_charge", **{"subscription[id]": sub["id"], "amount": 900,
                                                      "description": "Slow"})
    assert checkout(tsite, page, {**GOOD, "number": "4000000000000119"}).status_code == 200
    done = retrieve(tsite, page["id"])
    assert done["state"] == "succeeded" and done["content"]["invoice"]["status"] == "payment_due"


def test_checkout_onetime_addons_with_a_coupon(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    page = create(tsite, "checkout_onetime_addons", **{"subscription[id]": sub["id"], "addons[id][0]": "kit",
                                                      "addons[quantity][0]": 2, "addons[id][1]": "setup",
                                                      "coupon": "once", "pass_thru_content": "p"})
    assert "USD 24.50" in browser(tsite).get(page["url"]).text  # (2400 + 2500) / 2
    assert tsite.api.get("/coupons/once")["coupon"]["redemptions"] == 0
    assert checkout(tsite, page).status_code == 200
    inv = retrieve(tsite, page["id"])["content"]["invoice"]
    assert [li.get("entity_id") for li in inv["line_items"]] == ["kit", "setup"]
    assert inv["amount"] == inv["amount_paid"] == 2450 and inv["discounts"][0]["entity_id"] == "once"
    assert tsite.api.get("/coupons/once")["coupon"]["redemptions"] == 1


# ---- cancel, expiry ------------------------------------------------------------------------------------

def test_cancel_goes_to_cancel_url(tsite):
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic",
                                           "cancel_url": "https://shop.example/cart?step=2"})
    b = browser(tsite)
    b.get(page["url"])
    r = b.post(page["url"] + "/cancel")
    assert r.status_code == 303
    assert parse_qs(urlparse(r.headers["location"]).query) == {"step": ["2"], "id": [page["id"]],
                                                              "state": ["cancelled"]}
    done = retrieve(tsite, page["id"])
    assert done["state"] == "cancelled" and done["content"] == {}
    assert "cancelled" in b.get(page["url"]).text
    assert b.post(page["url"], data=GOOD).status_code == 200  # the cancelled page
    assert b.post(page["url"] + "/cancel").status_code == 200
    assert tsite.api.get("/subscriptions").body == {"list": []} and retrieve(tsite, page["id"]) == done
    other = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic"})
    r = b.post(other["url"] + "/cancel")
    assert r.status_code == 200 and "Checkout cancelled" in r.text


def test_pages_expire_after_three_hours_on_the_site_clock(tsite):
    fresh = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic"})
    opened = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic"})
    b = browser(tsite)
    b.get(opened["url"])
    travel(tsite, GENESIS + TTL - 1)
    assert b.get(fresh["url"]).status_code == 200
    travel(tsite, GENESIS + TTL)
    for page in (fresh, opened):
        assert b.get(page["url"]).status_code == 410
        assert b.post(page["url"], data=GOOD).status_code == 410
        assert b.post(page["url"] + "/cancel").status_code == 410
    assert retrieve(tsite, fresh["id"])["state"] == "requested"  # opened just before it expired
    assert retrieve(tsite, opened["id"])["state"] == "requested"
    assert tsite.api.get("/subscriptions").body == {"list": []} and charges(tsite) == 0


def test_embedding_follows_embed(tsite):
    framed = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic"})
    alone = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic", "embed": "false"})
    b = browser(tsite)
    r = b.get(framed["url"])
    assert "frame-ancestors *" in r.headers["content-security-policy"] and "x-frame-options" not in r.headers
    r = b.get(alone["url"])
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"


# ---- bad input, other sites ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind, params, status, code, param", [
    ("checkout_new", {}, 400, "param_wrong_value", "subscription[plan_id]"),
    ("checkout_new", {"subscription[plan_id]": "nope"}, 404, "resource_not_found", "subscription[plan_id]"),
    ("checkout_new", {"subscription[plan_id]": "basic", "subscription[coupon]": "nope"}, 404, "resource_not_found",
     "subscription[coupon]"),
    ("checkout_new", {"subscription[plan_id]": "basic", "addons[id][0]": "nope"}, 404, "resource_not_found",
     "addons[id][0]"),
    ("checkout_new", {"subscription[plan_id]": "basic", "subscription[id]": "SUB"}, 400, "duplicate_entry",
     "subscription[id]"),
    ("checkout_new", {"subscription[plan_id]": "basic", "subscription[id]": "a b"}, 400, "param_wrong_value",
     "subscription[id]"),
    ("checkout_new", {"subscription[plan_id]": "basic", "subscription[id]": "CUST"}, 400, "duplicate_entry",
     "customer[id]"),
    ("checkout_new", {"subscription[plan_id]": "basic", "subscription[trial_end]": GENESIS - 10}, 400,
     "param_wrong_value", "subscription[trial_end]"),
    ("checkout_new", {"subscription[plan_id]": "basic", "redirect_url": "javascript:alert(1)"}, 400,
     "param_wrong_value", "redirect_url"),
    ("checkout_new", {"subscription[plan_id]": "basic", "cancel_url": "ftp://x"}, 400, "param_wrong_value",
     "cancel_url"),
    ("checkout_new", {"subscription[plan_id]": "basic", "card[gateway]": "stripe"}, 400,
     "configuration_incompatible", "card[gateway]"),
    ("checkout_existing", {"subscription[id]": "nope"}, 404, "resource_not_found", "subscription[id]"),
    ("checkout_existing", {"subscription[id]": "SUB", "subscription[plan_id]": "nope"}, 404, "resource_not_found",
     "subscription[plan_id]"),
    ("checkout_existing", {"subscription[id]": "CANCELLED"}, 409, "invalid_state_for_request", None),
    ("checkout_onetime_charge", {"subscription[id]": "nope", "amount": 100, "description": "x"}, 404,
     "resource_not_found", "subscription[id]"),
    ("checkout_onetime_charge", {"subscription[id]": "SUB", "description": "x"}, 400, "param_wrong_value", "amount"),
    ("checkout_onetime_charge", {"subscription[id]": "SUB", "amount": 0, "description": "x"}, 400,
     "param_wrong_value", "amount"),
    ("checkout_onetime_addons", {"subscription[id]": "SUB", "addons[id][0]": "support"}, 400, "param_wrong_value",
     "addons[id][0]"),
    ("checkout_onetime_addons", {"subscription[id]": "SUB", "addons[id][0]": "setup", "coupon": "ten"}, 400,
     "param_wrong_value", "coupon"),
    ("checkout_onetime_addons", {"subscription[id]": "SUB"}, 400, "param_wrong_value", "addons[id][0]"),
])
def test_bad_input(tsite, kind, params, status, code, param):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"])["subscription"]
    gone = subscribe(tsite, cust["id"])["subscription"]
    tsite.api.post(f"/subscriptions/{gone['id']}/cancel")
    values = {"SUB": sub["id"], "CUST": cust["id"], "CANCELLED": gone["id"]}
    params = {k: values.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    r = tsite.api.post(f"/hosted_pages/{kind}", params, expect=status)
    assert (r["api_error_code"], r.body.get("param")) == (code, param), r.body
    assert tsite.api.get("/coupons/ten")["coupon"]["redemptions"] == 0


def test_unknown_pages_and_other_sites(tsite, make_site):
    page = create(tsite, "checkout_new", **{"subscription[plan_id]": "basic"})
    other = make_site()
    r = other.api.get(f"/hosted_pages/{page['id']}", expect=404)
    assert r["api_error_code"] == "resource_not_found"
    tsite.api.get("/hosted_pages/nope", expect=404)
    b = browser(tsite)
    base = tsite.api.server.base_url
    for url in (f"{base}/hosted_pages/{other.name}/{page['id']}", f"{base}/hosted_pages/{tsite.name}/nope",
                f"{base}/hosted_pages/no-such-site/{page['id']}", f"{base}/hosted_pages/BAD_SITE/{page['id']}"):
        assert b.get(url).status_code == 404
        assert b.post(url, data=GOOD).status_code == 404
        assert b.post(url + "/cancel").status_code == 404
    assert retrieve(tsite, page["id"])["state"] == "created"


def test_event_headers_of_the_creation_apply_to_the_checkout(tsite):
    r = tsite.api.post("/hosted_pages/checkout_new", {"subscription[plan_id]": "basic"},
                       headers={"chargebee-event-webhook": "all-disabled",
                                "chargebee-request-origin-user": "buyer@example.com"})
    assert checkout(tsite, r["hosted_page"]).status_code == 200
    events = F.events_of(tsite)
    assert events and {e["webhook_status"] for e in events} == {"skipped"}
    assert {e["source"] for e in events} == {"hosted_page"}
    assert events[0]["origin"]["user"] == "buyer@example.com" and events[0]["origin"]["ip"] == "127.0.0.1"


def test_a_one_off_charge_interrupted_before_its_settlement_finishes_later(tsite):
    """A crash between recording the charge and settling it: the page waits ("processing"), payment
    recovery settles the transaction, and the page succeeds as soon as it is opened or retrieved."""
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    page = create(tsite, "checkout_onetime_charge", **{"subscription[id]": sub["id"], "amount": 1500,
                                                      "description": "Audit"})
    b = browser(tsite)
    b.get(page["url"])
    ctx = tsite.ctx()
    pay = asyncio.run(subs.prepare_payment(ctx, {"card": {"number": GOOD["number"], "expiry_month": 12,
                                                         "expiry_year": 2030}}))
    _, plan = ctx.write_sync(HC.complete_one_off, page["id"], pay)  # ... and the process dies here
    assert plan is not None
    waiting = b.get(page["url"])
    assert waiting.status_code == 200 and "being processed" in waiting.text
    assert b.post(page["url"], data=GOOD).status_code == 200 and retrieve(tsite, page["id"])["state"] == "requested"
    assert b.post(page["url"] + "/cancel").status_code == 200 and retrieve(tsite, page["id"])["state"] == "requested"
    asyncio.run(payments.recover_site(tsite.app, tsite.pk))  # (or the server's own recovery pass, if first)
    done = retrieve(tsite, page["id"])
    assert done["state"] == "succeeded" and done["content"]["invoice"]["status"] == "paid"
    assert charges(tsite) == 2  # the signup and this one, once
