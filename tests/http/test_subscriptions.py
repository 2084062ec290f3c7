"""Subscriptions over HTTP: create (with or for a customer), retrieve, list, delete, and bad input."""

from __future__ import annotations

import pytest

from tests.support import factories as F
from tests.support.subs import (
    GENESIS,
    addon,
    coupon,
    events,
    invoices,
    plan,
    start,
    subscribe,
    ts,
    types,
)

FEB_1 = ts(2026, 2, 1)


@pytest.fixture
def tsite(site):
    start(site)
    plan(site)
    return site


def test_create_for_customer_bills_the_first_term_and_charges_the_card(tsite):
    cust = F.customer(tsite)
    body = subscribe(tsite, cust["id"], id="sub-1", po_number="PO-7", invoice_notes="Thanks",
                     **{"meta_data[team]": "ops"})
    sub = body["subscription"]
    assert sub == {
        "id": "sub-1", "plan_id": "basic", "plan_quantity": 1, "po_number": "PO-7", "status": "active",
        "current_term_start": GENESIS, "current_term_end": FEB_1, "created_at": GENESIS, "started_at": GENESIS,
        "activated_at": GENESIS, "has_scheduled_changes": False, "invoice_notes": "Thanks",
        "due_invoices_count": 0,  # nothing due (Chargebee's v1 samples; docs/PARITY.md)
        "meta_data": {"team": "ops"}, "object": "subscription", "customer_id": cust["id"]}
    assert body["customer"]["id"] == cust["id"] and body["card"]["customer_id"] == cust["id"]
    inv = body["invoice"]
    assert inv["status"] == "paid" and inv["first_invoice"] is True and inv["recurring"] is True
    assert inv["subscription_id"] == "sub-1" and inv["id"] == "1" and inv["amount_paid"] == 1000
    (line,) = inv["line_items"]
    assert line == {"date_from": GENESIS, "date_to": FEB_1, "unit_amount": 1000, "quantity": 1, "amount": 1000,
                    "is_taxed": False, "tax": 0, "description": "Basic", "type": "charge", "entity_type": "plan",
                    "entity_id": "basic", "object": "line_item"}
    assert inv["notes"] == [{"note": "Thanks", "entity_type": "subscription", "entity_id": "sub-1"}]
    assert inv["po_number"] == "PO-7"
    assert types(tsite) == ["subscription_created", "invoice_generated", "transaction_created", "payment_succeeded"]
    created = events(tsite, "subscription_created")[0]["content"]
    # the event shows the state it stands for, as the API answered it: the paid invoice, nothing due
    # (issue 12 item 2; docs/PARITY.md)
    assert created["subscription"] == sub and created["invoice"] == inv
    assert created["invoice"]["status"] == "paid" and created["card"]
    got = tsite.api.get("/subscriptions/sub-1").body
    assert got["subscription"] == sub and got["customer"]["id"] == cust["id"] and "invoice" not in got


def test_create_with_customer_and_card_inline(tsite):
    body = tsite.api.post("/subscriptions", {
        "plan_id": "basic", "customer[id]": "acme", "customer[email]": "ap@acme.test",
        "customer[first_name]": "Ada", "card[number]": "4111111111111111", "card[expiry_month]": 12,
        "card[expiry_year]": 2030, "card[cvv]": "123", "billing_address[city]": "Paris",
        "billing_address[country]": "FR"}).body
    assert body["customer"]["id"] == "acme" and body["customer"]["email"] == "ap@acme.test"
    assert body["customer"]["billing_address"] == {"city": "Paris", "country": "FR", "object": "billing_address"}
    assert body["customer"]["payment_method"]["type"] == "card"
    assert body["card"]["last4"] == "1111" and body["card"]["masked_number"].endswith("1111")
    assert body["subscription"]["customer_id"] == "acme" and body["invoice"]["status"] == "paid"
    assert types(tsite)[:3] == ["customer_created", "card_added", "subscription_created"]
    listed = tsite.api.get("/customers/acme/subscriptions").body["list"]
    assert [s["subscription"]["id"] for s in listed] == [body["subscription"]["id"]]


def test_inline_customer_without_card_needs_auto_collection_off(tsite):
    r = tsite.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": "nocard"}, expect=400)
    assert r["api_error_code"] == "payment_method_not_present" and r["type"] == "payment"
    assert tsite.api.get("/subscriptions").body == {"list": []}
    assert types(tsite) == []
    body = tsite.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": "nocard",
                                             "customer[auto_collection]": "off"}).body
    assert body["invoice"]["status"] == "payment_due" and body["invoice"]["amount_due"] == 1000
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 0


def test_declined_card_creates_no_subscription(tsite):
    # Chargebee: "created only if the payment was successful" (more in tests/http/test_declined_charges.py)
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    r = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic"}, expect=400).body
    assert r["api_error_code"] == "payment_processing_failed" and r["type"] == "payment"
    assert tsite.api.get("/subscriptions").body == {"list": []} and types(tsite) == []


def test_credits_pay_the_first_invoice(tsite):
    cust = F.customer(tsite, card=None, refundable=1500)
    inv = subscribe(tsite, cust["id"])["invoice"]
    assert inv["status"] == "paid" and inv["credits_applied"] == 1000


def test_plan_quantity_and_per_unit_free_quantity(tsite):
    plan(tsite, "seats", 500, charge_model="per_unit", free_quantity=2)
    cust = F.customer(tsite)
    inv = subscribe(tsite, cust["id"], "seats", plan_quantity=5)["invoice"]
    (line,) = inv["line_items"]
    assert (line["unit_amount"], line["quantity"], line["amount"]) == (500, 5, 1500)
    inv = subscribe(tsite, cust["id"], "basic", plan_quantity=3)["invoice"]
    assert inv["sub_total"] == 3000  # flat_fee: price x quantity


def test_addons_setup_cost_and_one_time_addons_on_the_first_invoice(tsite):
    plan(tsite, "pro", 3000, setup_cost=700)
    addon(tsite, "seat", 200, type="quantity")
    addon(tsite, "support", 900)
    addon(tsite, "onboarding", 5000, charge_type="non_recurring")
    cust = F.customer(tsite)
    body = subscribe(tsite, cust["id"], "pro", **{"addons[id][0]": "seat", "addons[quantity][0]": 4,
                                                  "addons[id][1]": "support", "addons[id][2]": "onboarding"})
    assert body["subscription"]["addons"] == [{"id": "seat", "quantity": 4}, {"id": "support", "quantity": 1}]
    lines = {(li["entity_id"], li["type"]): li["amount"] for li in body["invoice"]["line_items"]}
    assert lines == {("pro", "charge"): 3000, ("seat", "charge"): 800, ("support", "charge"): 900,
                     ("pro", "setup_charge"): 700, ("onboarding", "charge"): 5000}
    assert body["invoice"]["sub_total"] == 10400


@pytest.mark.parametrize("params, status, code, param", [
    ({"plan_id": "nope"}, 404, "resource_not_found", "plan_id"),
    ({"plan_id": "basic", "plan_quantity": 0}, 400, "param_wrong_value", "plan_quantity"),
    ({"plan_id": "basic", "addons[id][0]": "nope"}, 404, "resource_not_found", "addons[id][0]"),
    ({"plan_id": "basic", "addons[id][0]": "support", "addons[quantity][0]": 2}, 400, "param_wrong_value",
     "addons[quantity][0]"),
    ({"plan_id": "basic", "addons[id][0]": "support", "addons[id][1]": "support"}, 400, "param_wrong_value",
     "addons[id][1]"),
    ({"plan_id": "basic", "addons[id][0]": "yearly"}, 400, "invalid_request", "addons[id][0]"),
    ({"plan_id": "basic", "trial_end": GENESIS - 10}, 400, "param_wrong_value", "trial_end"),
    ({"plan_id": "basic", "start_date": GENESIS - 40 * 86400}, 400, "param_wrong_value", "start_date"),
    ({"plan_id": "basic", "coupon": "nope"}, 404, "resource_not_found", "coupon"),
    ({"plan_id": "basic", "coupon": "pro-only"}, 400, "invalid_request", "coupon"),
    ({"plan_id": "basic", "id": "has space"}, 400, "param_wrong_value", "id"),
    ({"plan_id": "basic", "payment_intent[id]": "pi_nope"}, 404, "resource_not_found", "payment_intent[id]"),
])
def test_bad_input_creates_nothing(tsite, params, status, code, param):
    plan(tsite, "pro", 3000)
    addon(tsite, "support", 900)
    addon(tsite, "yearly", 900, period_unit="year")
    coupon(tsite, "pro-only", apply_on="each_specified_item", plan_constraint="specific", **{"plan_ids[0]": "pro"},
           addon_constraint="none")
    cust = F.customer(tsite)
    r = tsite.api.post(f"/customers/{cust['id']}/subscriptions", params, expect=status)
    assert (r["api_error_code"], r.body.get("param")) == (code, param), r
    assert tsite.api.get("/subscriptions").body == {"list": []}
    assert tsite.api.get("/coupons/pro-only")["coupon"].get("redemptions", 0) == 0


def test_archived_plan_unknown_customer_and_duplicate_id(tsite):
    cust = F.customer(tsite)
    plan(tsite, "old", 100)
    tsite.api.post("/plans/old/delete")
    r = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "old"}, expect=400)
    assert r["param"] == "plan_id"
    tsite.api.post("/customers/ghost/subscriptions", {"plan_id": "basic"}, expect=404)
    subscribe(tsite, cust["id"], id="dup")
    r = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic", "id": "dup"}, expect=400)
    assert (r["api_error_code"], r["param"]) == ("duplicate_entry", "id")
    r = tsite.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": cust["id"]}, expect=400)
    assert (r["api_error_code"], r["param"]) == ("duplicate_entry", "customer[id]")


def test_retrieve_unknown_and_other_sites_subscription_is_404(tsite, make_site):
    tsite.api.get("/subscriptions/nope", expect=404)
    other = start(make_site())
    plan(other)
    theirs = subscribe(other, F.customer(other)["id"])["subscription"]
    r = tsite.api.get(f"/subscriptions/{theirs['id']}", expect=404)
    assert r["api_error_code"] == "resource_not_found"
    tsite.api.post(f"/subscriptions/{theirs['id']}/cancel", expect=404)
    assert other.api.get(f"/subscriptions/{theirs['id']}")["subscription"]["status"] == "active"


def test_list_with_filters_and_pagination(tsite):
    a, b = F.customer(tsite), F.customer(tsite)
    ids = [subscribe(tsite, c["id"])["subscription"]["id"] for c in (a, b, a)]
    tsite.api.post(f"/subscriptions/{ids[0]}/cancel")
    page1 = tsite.api.get("/subscriptions", {"limit": 2}).body
    page2 = tsite.api.get("/subscriptions", {"limit": 2, "offset": page1["next_offset"]}).body
    got = [s["subscription"]["id"] for s in page1["list"] + page2["list"]]
    assert sorted(got) == sorted(ids) and "next_offset" not in page2
    assert all(s["customer"]["id"] in (a["id"], b["id"]) and s["card"] for s in page1["list"])
    active = tsite.api.get("/subscriptions", {"status[is]": "active"}).body["list"]
    assert sorted(s["subscription"]["id"] for s in active) == sorted(ids[1:])
    mine = tsite.api.get(f"/customers/{a['id']}/subscriptions").body["list"]
    assert sorted(s["subscription"]["id"] for s in mine) == sorted([ids[0], ids[2]])
    r = tsite.api.get("/subscriptions", {"status[is]": "bogus"}, expect=400)
    assert r["param"] == "status[is]"
    r = tsite.api.get("/subscriptions", {"internal[is]": "x"}, expect=400)
    assert r["param"] == "internal[is]"


def test_delete_removes_the_subscription_and_its_invoices(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"])["subscription"]
    assert len(invoices(tsite, sub["id"])) == 1
    body = tsite.api.post(f"/subscriptions/{sub['id']}/delete").body
    assert body["subscription"]["id"] == sub["id"] and body["customer"]["id"] == cust["id"]
    tsite.api.get(f"/subscriptions/{sub['id']}", expect=404)
    assert tsite.api.get("/invoices").body["list"] == []
    tsite.api.get(f"/subscriptions/{sub['id']}/transactions", expect=404)  # gone with it
    assert types(tsite)[-1] == "subscription_deleted"
    tsite.api.post(f"/subscriptions/{sub['id']}/delete", expect=404)


def test_payment_intent_gives_the_card_for_the_first_charge(tsite):
    from tests.support.customers import VISA, card

    pi = tsite.api.post("/payment_intents", {"amount": 1000, "currency_code": "USD"})["payment_intent"]
    tsite.api.post(f"/payment_intents/{pi['id']}/authorize", card(VISA, prefix=""))
    body = tsite.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": "pi-cust",
                                             "payment_intent[id]": pi["id"]}).body
    assert body["card"]["last4"] == VISA[-4:] and body["invoice"]["status"] == "paid"
    assert tsite.api.get(f"/payment_intents/{pi['id']}")["payment_intent"]["status"] == "consumed"
    # for an existing customer without a card
    cust = F.customer(tsite, card=None)
    pi = tsite.api.post("/payment_intents", {"amount": 1000, "currency_code": "USD"})["payment_intent"]
    tsite.api.post(f"/payment_intents/{pi['id']}/authorize", card(VISA, prefix=""))
    body = subscribe(tsite, cust["id"], **{"payment_intent[id]": pi["id"]})
    assert body["card"]["customer_id"] == cust["id"] and body["invoice"]["status"] == "paid"
    assert "card_added" in types(tsite)
    r = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic",
                                                                  "payment_intent[id]": pi["id"]}, expect=400)
    assert r["param"] == "payment_intent[id]"  # consumed already


def test_card_and_payment_intent_together_are_refused(tsite):
    r = tsite.api.post("/subscriptions", {"plan_id": "basic", "payment_intent[id]": "pi_1",
                                          "card[number]": "4111111111111111", "card[expiry_month]": 1,
                                          "card[expiry_year]": 2031}, expect=400)
    assert r["api_error_code"] == "invalid_request"
