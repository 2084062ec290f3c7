"""POST /invoices, /invoices/charge, /invoices/charge_addon and /invoices/{id}/add_addon_charge:
one-off invoices closed at creation (number, credits, auto-collection), addons, coupons."""

from __future__ import annotations

import asyncio

import pytest

from billhive.services import credits, payments
from billhive.store.resources import COUPONS, CUSTOMERS, INVOICES
from tests.support import factories as F
from tests.support import invoice_factories as IF

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def tsite(site):
    """A test site whose clock is frozen at GENESIS (the time machine)."""
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


def types(site) -> list[str]:
    return [e["event_type"] for e in F.events_of(site)]


def charges(site) -> int:
    return site.app.gateways["chargebee"].charge_count(site.pk)


def customer_doc(site, customer_id: str) -> dict:
    return site.app.db.read_sync(lambda tx: CUSTOMERS.get(tx, site.pk, customer_id))


def invoice_count(site) -> int:
    return len(site.api.get("/invoices", {"limit": 100}).body["list"])


# ---- charge (one-time charge) ------------------------------------------------------------------------

def test_charge_collects_from_card_and_pays(tsite):
    cust = F.customer(tsite)
    inv = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 2500, "description": "Setup fee",
                                              "po_number": "PO-7"})["invoice"]
    assert inv["id"] == "1" and inv["status"] == "paid" and inv["recurring"] is False
    assert inv["customer_id"] == cust["id"] and "subscription_id" not in inv and inv["po_number"] == "PO-7"
    assert inv["start_date"] == inv["end_date"] == inv["paid_on"] == GENESIS
    (li,) = inv["line_items"]
    assert (li["entity_type"], li["description"], li["unit_amount"], li["quantity"], li["amount"]) == \
        ("adhoc", "Setup fee", 2500, 1, 2500)
    assert inv["sub_total"] == inv["amount"] == inv["amount_paid"] == 2500 and inv["amount_due"] == 0
    (lt,) = inv["linked_transactions"]
    assert lt["txn_status"] == "success" and lt["applied_amount"] == 2500
    assert types(tsite) == ["invoice_generated", "transaction_created", "payment_succeeded"]
    assert tsite.api.get("/invoices/1")["invoice"] == inv
    assert charges(tsite) == 1


def test_charge_with_auto_collection_off_is_payment_due(tsite):
    cust = F.customer(tsite, auto_collection="off")
    inv = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 900,
                                              "description": "Consulting"})["invoice"]
    assert inv["status"] == "payment_due" and inv["amount_due"] == 900 and inv["linked_transactions"] == []
    assert "dunning_status" not in inv
    assert types(tsite) == ["invoice_generated"] and charges(tsite) == 0


def test_credits_and_excess_apply_before_the_card(tsite):
    cust = F.customer(tsite, promotional=100, refundable=200, excess=300)
    inv = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 1000,
                                              "description": "Hardware"})["invoice"]
    assert inv["discounts"] == [{"amount": 100, "description": "Promotional Credits", "type": "account_credits",
                                 "object": "discount"}]
    assert inv["amount"] == 900 and inv["credits_applied"] == 200
    assert inv["amount_paid"] == 700 and inv["status"] == "paid"  # 300 excess + 400 by card
    assert charges(tsite) == 1
    doc = customer_doc(tsite, cust["id"])
    assert (doc["account_credits"], doc["refundable_credits"], doc["excess_payments"]) == (0, 0, 0)


def test_no_card_with_auto_collection_on_is_400_and_writes_nothing(tsite):
    cust = F.customer(tsite, card=None)
    r = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 500, "description": "x"}, expect=400)
    assert r["api_error_code"] == "payment_method_not_present" and r["type"] == "payment"
    assert invoice_count(tsite) == 0 and types(tsite) == []
    # covered by credits: nothing to charge, so no card is needed
    cust = F.customer(tsite, card=None, refundable=500)
    inv = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 500, "description": "x"})["invoice"]
    assert inv["id"] == "1" and inv["status"] == "paid"  # the failed call took no number


def test_declined_charge_creates_no_invoice_takes_no_balance_and_is_400(tsite):
    # Chargebee, POST /invoices: "The invoice will be generated only upon successful collection of
    # payments" (docs/PARITY.md row 1)
    cust = F.customer(tsite, card=F.DECLINE_CARD, promotional=100, refundable=200, excess=300)
    r = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 1000, "description": "Widget"},
                       expect=400)
    assert r["api_error_code"] == "payment_processing_failed" and r["type"] == "payment"
    assert invoice_count(tsite) == 0 and types(tsite) == []
    tsite.api.get("/invoices/1", expect=404)
    doc = customer_doc(tsite, cust["id"])
    assert (doc["account_credits"], doc["refundable_credits"], doc["excess_payments"]) == (100, 200, 300)
    for kind in credits.KINDS:
        assert tsite.app.db.read_sync(lambda tx, k=kind: credits.ledger_sum(tx, tsite.pk, cust["id"], k)) == \
            credits.balance(doc, kind)
    (excess_txn,) = [t["transaction"] for t in tsite.api.get(f"/customers/{cust['id']}/transactions").body["list"]]
    assert excess_txn["amount_unused"] == 300 and excess_txn["linked_invoices"] == []  # no failed transaction kept
    # the declined call took no number: the sequence stays gapless
    F.customer(tsite, customer_id="c2", auto_collection="off")
    assert tsite.api.post("/invoices/charge", {"customer_id": "c2", "amount": 5, "description": "y"})["invoice"][
        "id"] == "1"


def test_declined_charge_with_dunning_setting_keeps_payment_due(tsite):
    tsite.setting(one_off_charge_failure="dunning")
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    inv = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 1000,
                                              "description": "Widget"})["invoice"]
    assert inv["status"] == "payment_due" and inv["dunning_status"] == "in_progress"
    assert inv["next_retry"] == GENESIS + 86400
    assert types(tsite) == ["invoice_generated", "transaction_created", "payment_failed"]
    # and without a card, the invoice is simply left payment_due
    cust = F.customer(tsite, card=None)
    inv = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 10, "description": "x"})["invoice"]
    assert inv["status"] == "payment_due" and "dunning_status" not in inv


def test_gateway_timeout_answers_payment_due_and_recovery_settles_once(tsite):
    cust = F.customer(tsite, card=F.TIMEOUT_CARD)
    inv = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 700,
                                              "description": "Slow"})["invoice"]
    assert inv["status"] == "payment_due"
    assert types(tsite) == ["invoice_generated", "transaction_created", "payment_initiated"]
    asyncio.run(payments.recover_site(tsite.app, tsite.pk))
    assert tsite.api.get(f"/invoices/{inv['id']}")["invoice"]["status"] == "paid"
    assert charges(tsite) == 1 and types(tsite)[-1] == "payment_succeeded"


def test_charge_for_a_subscription_uses_its_auto_collection(tsite):
    cust = F.customer(tsite)
    sub = IF.subscription(tsite, cust["id"], auto_collection="off")
    inv = tsite.api.post("/invoices/charge", {"subscription_id": sub["id"], "amount": 300,
                                              "description": "Extra seats"})["invoice"]
    assert inv["subscription_id"] == sub["id"] and inv["customer_id"] == cust["id"]
    assert inv["status"] == "payment_due" and charges(tsite) == 0
    listed = tsite.api.get(f"/subscriptions/{sub['id']}/invoices").body["list"]
    assert [i["invoice"]["id"] for i in listed] == [inv["id"]]


def test_charge_bad_input(tsite):
    cust = F.customer(tsite)
    other = F.customer(tsite)
    sub = IF.subscription(tsite, other["id"])
    cases = [
        ({"customer_id": cust["id"], "description": "x"}, 400, "param_wrong_value", "amount"),
        ({"customer_id": cust["id"], "amount": 0, "description": "x"}, 400, "param_wrong_value", "amount"),
        ({"customer_id": cust["id"], "amount": -5, "description": "x"}, 400, "param_wrong_value", "amount"),
        ({"customer_id": cust["id"], "amount": "ten", "description": "x"}, 400, "param_wrong_value", "amount"),
        ({"customer_id": cust["id"], "amount": 10}, 400, "param_wrong_value", "description"),
        ({"customer_id": cust["id"], "amount": 10, "description": "x" * 251}, 400, "param_wrong_value",
         "description"),
        ({"amount": 10, "description": "x"}, 400, "param_wrong_value", "customer_id"),
        ({"customer_id": "nobody", "amount": 10, "description": "x"}, 404, "resource_not_found", "customer_id"),
        ({"subscription_id": "sub_nope", "amount": 10, "description": "x"}, 404, "resource_not_found",
         "subscription_id"),
        ({"customer_id": cust["id"], "subscription_id": sub["id"], "amount": 10, "description": "x"}, 400,
         "param_wrong_value", "subscription_id"),
        ({"subscription_id": sub["id"], "coupon": "any", "amount": 10, "description": "x"}, 400,
         "param_wrong_value", "coupon"),
        ({"customer_id": cust["id"], "amount": 10, "description": "x", "bogus": "1"}, 400, "param_wrong_value",
         "bogus"),
    ]
    for data, status, code, param in cases:
        r = tsite.api.post("/invoices/charge", data, expect=status)
        assert (r["api_error_code"], r.body.get("param")) == (code, param), (data, r.body)
    assert invoice_count(tsite) == 0 and charges(tsite) == 0
    ro = tsite.api.with_key(tsite.read_only_key)
    ro.post("/invoices/charge", {"customer_id": cust["id"], "amount": 10, "description": "x"}, expect=403)


def test_idempotency_key_creates_one_invoice(tsite):
    cust = F.customer(tsite)
    data = {"customer_id": cust["id"], "amount": 1200, "description": "Once"}
    h = {"chargebee-idempotency-key": "charge-once-1"}
    first = tsite.api.post("/invoices/charge", data, headers=h)
    again = tsite.api.post("/invoices/charge", data, headers=h)
    assert again.headers.get("chargebee-idempotency-replayed") == "true"
    assert again["invoice"] == first["invoice"] and invoice_count(tsite) == 1 and charges(tsite) == 1


# ---- charge_addon -------------------------------------------------------------------------------------

def test_charge_addon_quantity_based(tsite):
    cust = F.customer(tsite)
    addon = IF.addon(tsite, price=250, type="quantity", invoice_name="Extra GB", unit="GB")
    inv = tsite.api.post("/invoices/charge_addon", {"customer_id": cust["id"], "addon_id": addon["id"],
                                                    "addon_quantity": 4})["invoice"]
    (li,) = inv["line_items"]
    assert (li["entity_type"], li["entity_id"], li["description"]) == ("addon", addon["id"], "Extra GB")
    assert (li["unit_amount"], li["quantity"], li["amount"], li["type"]) == (250, 4, 1000, "charge")
    assert inv["status"] == "paid" and inv["amount_paid"] == 1000


def test_charge_addon_on_off_uses_name_and_one_unit(tsite):
    cust = F.customer(tsite, auto_collection="off")
    addon = IF.addon(tsite, price=1999, name="Setup")
    inv = tsite.api.post("/invoices/charge_addon", {"customer_id": cust["id"], "addon_id": addon["id"]})["invoice"]
    (li,) = inv["line_items"]
    assert (li["description"], li["quantity"], li["amount"]) == ("Setup", 1, 1999)
    assert inv["status"] == "payment_due"


def test_charge_addon_bad_input(tsite):
    cust = F.customer(tsite)
    qty = IF.addon(tsite, type="quantity")
    on_off = IF.addon(tsite)
    recurring = IF.addon(tsite, charge_type="recurring")
    archived = IF.addon(tsite, status="archived")
    cases = [
        ({"customer_id": cust["id"]}, 400, "param_wrong_value", "addon_id"),
        ({"customer_id": cust["id"], "addon_id": "nope"}, 404, "resource_not_found", "addon_id"),
        ({"customer_id": cust["id"], "addon_id": recurring["id"]}, 400, "param_wrong_value", "addon_id"),
        ({"customer_id": cust["id"], "addon_id": archived["id"]}, 400, "param_wrong_value", "addon_id"),
        ({"customer_id": cust["id"], "addon_id": qty["id"]}, 400, "param_wrong_value", "addon_quantity"),
        ({"customer_id": cust["id"], "addon_id": qty["id"], "addon_quantity": 0}, 400, "param_wrong_value",
         "addon_quantity"),
        ({"customer_id": cust["id"], "addon_id": on_off["id"], "addon_quantity": 3}, 400, "param_wrong_value",
         "addon_quantity"),
        ({"addon_id": on_off["id"]}, 400, "param_wrong_value", "customer_id"),
        ({"customer_id": "ghost", "addon_id": on_off["id"]}, 404, "resource_not_found", "customer_id"),
    ]
    for data, status, code, param in cases:
        r = tsite.api.post("/invoices/charge_addon", data, expect=status)
        assert (r["api_error_code"], r.body.get("param")) == (code, param), (data, r.body)
    assert invoice_count(tsite) == 0


# ---- create (addons + charges + coupon) ----------------------------------------------------------------

def test_create_invoice_with_addons_charges_coupon_and_shipping(tsite):
    cust = F.customer(tsite)
    gb = IF.addon(tsite, price=300, type="quantity", name="Storage")
    setup = IF.addon(tsite, price=2000, name="Setup")
    coupon = IF.coupon(tsite, percentage=12.5, max_redemptions=2)
    inv = tsite.api.post("/invoices", {
        "customer_id": cust["id"], "coupon": coupon["id"], "po_number": "PO-1",
        "addons[id][0]": gb["id"], "addons[quantity][0]": 5, "addons[id][1]": setup["id"],
        "charges[amount][0]": 1000, "charges[description][0]": "Consulting",
        "shipping_address[first_name]": "Ada", "shipping_address[city]": "London",
        "shipping_address[country]": "GB",
    })["invoice"]
    assert [(li["entity_type"], li.get("entity_id"), li["amount"]) for li in inv["line_items"]] == \
        [("addon", gb["id"], 1500), ("addon", setup["id"], 2000), ("adhoc", None, 1000)]
    assert inv["sub_total"] == 4500
    # 12.5% of 4500 = 562.5, rounded half up
    assert inv["discounts"] == [{"amount": 563, "description": coupon["name"], "type": "coupon",
                                 "entity_id": coupon["id"], "object": "discount"}]
    assert inv["amount"] == 3937 and inv["amount_paid"] == 3937 and inv["status"] == "paid"
    assert inv["shipping_address"]["first_name"] == "Ada" and inv["shipping_address"]["country"] == "GB"
    assert inv["po_number"] == "PO-1"
    stored = tsite.app.db.read_sync(lambda tx: COUPONS.get(tx, tsite.pk, coupon["id"]))
    assert stored["redemptions"] == 1 and stored["status"] == "active"


def test_coupon_redemptions_run_out(tsite):
    cust = F.customer(tsite, auto_collection="off")
    coupon = IF.coupon(tsite, discount_type="fixed_amount", percentage=None, amount=300, max_redemptions=1)
    data = {"customer_id": cust["id"], "coupon": coupon["id"], "charges[amount][0]": 200,
            "charges[description][0]": "Small"}
    inv = tsite.api.post("/invoices", data)["invoice"]
    assert inv["discounts"][0]["amount"] == 200 and inv["amount"] == 0 and inv["status"] == "paid"
    r = tsite.api.post("/invoices", data, expect=400)
    assert (r["api_error_code"], r["param"]) == ("resource_limit_exhausted", "coupon")


def test_coupon_code_is_redeemed_once(tsite):
    cust = F.customer(tsite, auto_collection="off")
    coupon = IF.coupon(tsite, percentage=50.0)
    tsite.api.post("/coupon_codes", {"coupon_id": coupon["id"], "coupon_set_name": "launch", "code": "HALF-1"})
    data = {"customer_id": cust["id"], "coupon": "HALF-1", "amount": 1000, "description": "Launch kit"}
    inv = tsite.api.post("/invoices/charge", data)["invoice"]
    assert inv["discounts"][0]["entity_id"] == coupon["id"] and inv["amount"] == 500
    r = tsite.api.post("/invoices/charge", data, expect=400)
    assert (r["api_error_code"], r["param"]) == ("resource_limit_exhausted", "coupon")
    assert tsite.api.get(f"/coupons/{coupon['id']}")["coupon"]["redemptions"] == 1


def test_item_coupon_discounts_only_its_addon(tsite):
    cust = F.customer(tsite, auto_collection="off")
    gb = IF.addon(tsite, price=300, type="quantity")
    other = IF.addon(tsite, price=1000)
    coupon = IF.coupon(tsite, discount_type="offer_quantity", percentage=None, quantity=2,
                       apply_on="each_specified_item", addon_ids=(gb["id"],))
    inv = tsite.api.post("/invoices", {"customer_id": cust["id"], "coupon": coupon["id"],
                                       "addons[id][0]": gb["id"], "addons[quantity][0]": 3,
                                       "addons[id][1]": other["id"]})["invoice"]
    assert inv["sub_total"] == 1900 and inv["discounts"][0]["amount"] == 600 and inv["amount"] == 1300
    r = tsite.api.post("/invoices", {"customer_id": cust["id"], "coupon": coupon["id"],
                                     "addons[id][0]": other["id"]}, expect=400)
    assert r["param"] == "coupon"


def test_create_bad_input(tsite):
    cust = F.customer(tsite)
    addon = IF.addon(tsite)
    forever = IF.coupon(tsite, duration_type="forever")
    archived = IF.coupon(tsite, status="archived")
    expired = IF.coupon(tsite, valid_till=GENESIS - 1)
    base = {"customer_id": cust["id"]}
    cases = [
        ({}, 400, "invalid_request", "addons[id][0]"),
        ({"charges[amount][0]": 100}, 400, "param_wrong_value", "charges[description][0]"),
        ({"charges[description][0]": "x"}, 400, "param_wrong_value", "charges[amount][0]"),
        ({"charges[amount][0]": 0, "charges[description][0]": "x"}, 400, "param_wrong_value", "charges[amount][0]"),
        ({"addons[quantity][0]": 2}, 400, "param_wrong_value", "addons[id][0]"),
        ({"addons[id][0]": addon["id"], "addons[id][1]": "nope"}, 404, "resource_not_found", "addons[id][1]"),
        ({"addons[id][0]": addon["id"], "addons[id][1]": addon["id"]}, 400, "param_wrong_value", "addons[id][1]"),
        ({"addons[id][0]": addon["id"], "addons[quantity][0]": 2}, 400, "param_wrong_value", "addons[quantity][0]"),
        ({"addons[id][0]": addon["id"], "coupon": "nope"}, 404, "resource_not_found", "coupon"),
        ({"addons[id][0]": addon["id"], "coupon": forever["id"]}, 400, "param_wrong_value", "coupon"),
        ({"addons[id][0]": addon["id"], "coupon": archived["id"]}, 409, "invalid_state_for_request", "coupon"),
        ({"addons[id][0]": addon["id"], "coupon": expired["id"]}, 400, "resource_limit_exhausted", "coupon"),
        ({"addons[id][0]": addon["id"], "payment_intent[id]": "pi_1"}, 400, "invalid_request",
         "payment_intent[id]"),
        ({"addons[id][0]": addon["id"], "shipping_address[email]": "not-an-email"}, 400, "param_wrong_value",
         "shipping_address[email]"),
    ]
    for extra, status, code, param in cases:
        r = tsite.api.post("/invoices", {**base, **extra}, expect=status)
        assert (r["api_error_code"], r.body.get("param")) == (code, param), (extra, r.body)
    assert invoice_count(tsite) == 0 and charges(tsite) == 0


# ---- add_addon_charge (pending invoices) ---------------------------------------------------------------

def test_add_addon_charge_to_pending_invoice_then_collect(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"], ((1000, "Usage"),))
    gb = IF.addon(tsite, price=150, type="quantity", name="GB")
    inv = tsite.api.post(f"/invoices/{draft['id']}/add_addon_charge", {"addon_id": gb["id"],
                                                                       "addon_quantity": 3})["invoice"]
    assert inv["id"] == draft["id"] and inv["status"] == "pending"
    li = inv["line_items"][-1]
    assert (li["entity_type"], li["entity_id"], li["quantity"], li["amount"]) == ("addon", gb["id"], 3, 450)
    assert inv["sub_total"] == 1450 and inv["amount_due"] == 1450
    assert types(tsite)[-1] == "invoice_updated"
    closed = tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    assert closed["status"] == "paid" and closed["amount_paid"] == 1450
    r = tsite.api.post(f"/invoices/{closed['id']}/add_addon_charge", {"addon_id": gb["id"], "addon_quantity": 1},
                       expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"


def test_add_addon_charge_bad_input(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"])
    qty = IF.addon(tsite, type="quantity")
    recurring = IF.addon(tsite, charge_type="recurring")
    path = f"/invoices/{draft['id']}/add_addon_charge"
    assert tsite.api.post("/invoices/draft_inv_nope/add_addon_charge", {"addon_id": qty["id"], "addon_quantity": 1},
                          expect=404)["api_error_code"] == "resource_not_found"
    cases = [
        ({}, 400, "addon_id"),
        ({"addon_id": "nope"}, 404, "addon_id"),
        ({"addon_id": recurring["id"]}, 400, "addon_id"),
        ({"addon_id": qty["id"]}, 400, "addon_quantity"),
        ({"addon_id": qty["id"], "addon_quantity": -1}, 400, "addon_quantity"),
    ]
    for data, status, param in cases:
        assert tsite.api.post(path, data, expect=status).body.get("param") == param, data
    assert tsite.api.get(f"/invoices/{draft['id']}")["invoice"] == draft
    # voided and payment_due invoices are not pending either
    cust_off = F.customer(tsite, auto_collection="off")
    due = tsite.api.post("/invoices/charge", {"customer_id": cust_off["id"], "amount": 10,
                                              "description": "x"})["invoice"]
    tsite.api.post(f"/invoices/{due['id']}/add_addon_charge", {"addon_id": qty["id"], "addon_quantity": 1},
                   expect=409)
    tsite.api.post(f"/invoices/{due['id']}/void")
    tsite.api.post(f"/invoices/{due['id']}/add_addon_charge", {"addon_id": qty["id"], "addon_quantity": 1},
                   expect=409)


# ---- tenant isolation ----------------------------------------------------------------------------------

def test_another_sites_customers_addons_coupons_and_invoices_are_404(tsite, make_site):
    other = make_site()
    their_cust = F.customer(other)
    their_addon = IF.addon(other)
    their_coupon = IF.coupon(other)
    their_draft = F.pending_invoice(other, their_cust["id"])
    mine = F.customer(tsite)
    mine_addon = IF.addon(tsite)
    r = tsite.api.post("/invoices/charge", {"customer_id": their_cust["id"], "amount": 10, "description": "x"},
                       expect=404)
    assert r["param"] == "customer_id"
    r = tsite.api.post("/invoices/charge_addon", {"customer_id": mine["id"], "addon_id": their_addon["id"]},
                       expect=404)
    assert r["param"] == "addon_id"
    r = tsite.api.post("/invoices", {"customer_id": mine["id"], "addons[id][0]": mine_addon["id"],
                                     "coupon": their_coupon["id"]}, expect=404)
    assert r["param"] == "coupon"
    tsite.api.post(f"/invoices/{their_draft['id']}/add_addon_charge", {"addon_id": mine_addon["id"]}, expect=404)
    assert other.api.get(f"/invoices/{their_draft['id']}")["invoice"] == their_draft
    assert invoice_count(tsite) == 0 and invoice_count(other) == 1  # their draft only
    stored = other.app.db.read_sync(lambda tx: COUPONS.get(tx, other.pk, their_coupon["id"]))
    assert stored["redemptions"] == 0
    assert other.app.db.read_sync(lambda tx: INVOICES.find(tx, tsite.pk)) == []
