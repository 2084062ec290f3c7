"""Changing subscriptions over HTTP: plan, quantity and addon changes with proration, changes at the
end of the term, coupons, charges at the term end, billing details."""

from __future__ import annotations

import pytest

from tests.support import factories as F
from tests.support.subs import (
    DAY,
    GENESIS,
    addon,
    coupon,
    events,
    invoices,
    plan,
    start,
    subscribe,
    travel,
    ts,
    types,
)

FEB_1, MAR_1, APR_1 = ts(2026, 2, 1), ts(2026, 3, 1), ts(2026, 4, 1)
JAN_16 = ts(2026, 1, 16)  # 15 of January's 31 days used, 16 left


@pytest.fixture
def tsite(site):
    start(site)
    plan(site)
    plan(site, "pro", 3000)
    return site


def change(site, sub_id: str, expect: int = 200, **params) -> dict:
    return site.api.post(f"/subscriptions/{sub_id}", params, expect=expect).body


def customer_of(site, customer_id: str) -> dict:
    from billhive.store.resources import CUSTOMERS

    return site.app.db.read_sync(lambda tx: CUSTOMERS.get(tx, site.pk, customer_id))


def test_upgrade_mid_term_is_prorated(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    travel(tsite, JAN_16)
    body = change(tsite, sub["id"], plan_id="pro")
    assert body["subscription"]["plan_id"] == "pro" and body["subscription"]["current_term_end"] == FEB_1
    inv = body["invoice"]
    (line,) = inv["line_items"]
    assert (line["type"], line["entity_id"], line["amount"]) == ("prorated_charge", "pro", 1548)  # 3000 x 16/31
    assert (line["date_from"], line["date_to"]) == (JAN_16, FEB_1)
    assert inv["discounts"] == [{"amount": 516, "description": "Prorated credits for the unused period",
                                 "type": "credit_adjustment", "object": "discount"}]  # 1000 x 16/31
    assert inv["amount"] == 1032 and inv["status"] == "paid" and inv["first_invoice"] is False
    (ev,) = events(tsite, "subscription_changed")
    assert ev["content"]["invoice"]["id"] == inv["id"]
    travel(tsite, FEB_1 + 60)
    assert invoices(tsite, sub["id"])[-1]["sub_total"] == 3000


def test_downgrade_leaves_refundable_credits_for_the_renewal(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"], "pro")["subscription"]
    travel(tsite, JAN_16)
    inv = change(tsite, sub["id"], plan_id="basic")["invoice"]
    assert inv["line_items"][0]["amount"] == 516 and inv["discounts"][0]["amount"] == 516
    assert inv["amount"] == 0 and inv["status"] == "paid"
    assert customer_of(tsite, cust["id"])["refundable_credits"] == 1548 - 516
    travel(tsite, FEB_1 + 60)
    renewal = invoices(tsite, sub["id"])[-1]
    assert renewal["sub_total"] == 1000 and renewal["credits_applied"] == 1000 and renewal["status"] == "paid"
    assert customer_of(tsite, cust["id"])["refundable_credits"] == 32


def test_quantity_change_and_no_proration(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    travel(tsite, JAN_16)
    inv = change(tsite, sub["id"], plan_quantity=3)["invoice"]
    assert inv["line_items"][0]["amount"] == 1548 and inv["line_items"][0]["quantity"] == 3
    body = change(tsite, sub["id"], plan_quantity=4, prorate="false")
    assert "invoice" not in body and body["subscription"]["plan_quantity"] == 4
    tsite.setting(prorate_subscription_changes="false")
    assert "invoice" not in change(tsite, sub["id"], plan_quantity=5)
    inv = change(tsite, sub["id"], plan_quantity=6, prorate="true")["invoice"]
    assert inv["line_items"][0]["amount"] == 3097 and inv["discounts"][0]["amount"] == 2581  # 6 and 5 x 16/31
    assert inv["amount"] == 516


def test_change_to_another_billing_period_restarts_the_term(tsite):
    plan(tsite, "annual", 10000, period=1, period_unit="year")
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    travel(tsite, JAN_16)
    body = change(tsite, sub["id"], plan_id="annual")
    s = body["subscription"]
    assert (s["current_term_start"], s["current_term_end"]) == (JAN_16, ts(2027, 1, 16))
    inv = body["invoice"]
    assert inv["line_items"][0]["type"] == "charge" and inv["line_items"][0]["amount"] == 10000
    assert inv["amount"] == 10000 - 516
    travel(tsite, ts(2026, 6, 1))
    assert len(invoices(tsite, sub["id"])) == 2


def test_addon_changes_follow_their_proration_type(tsite):
    addon(tsite, "support", 900)
    addon(tsite, "sla", 900, proration_type="full_term")
    addon(tsite, "seat", 100, type="quantity")
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    travel(tsite, JAN_16)
    inv = change(tsite, sub["id"], **{"addons[id][0]": "support"})["invoice"]
    assert [(li["entity_id"], li["amount"]) for li in inv["line_items"]] == [("support", 465)]  # 900 x 16/31
    inv = change(tsite, sub["id"], **{"addons[id][0]": "sla"})["invoice"]
    assert [(li["entity_id"], li["type"], li["amount"]) for li in inv["line_items"]] == [("sla", "charge", 900)]
    body = change(tsite, sub["id"], **{"addons[id][0]": "seat", "addons[quantity][0]": 2,
                                       "addons[proration_type][0]": "none"})
    assert "invoice" not in body
    assert body["subscription"]["addons"] == [{"id": "support", "quantity": 1}, {"id": "sla", "quantity": 1},
                                              {"id": "seat", "quantity": 2, "proration_type": "none"}]
    body = change(tsite, sub["id"], replace_addon_list="true", **{"addons[id][0]": "seat", "addons[quantity][0]": 5})
    assert body["subscription"]["addons"] == [{"id": "seat", "quantity": 5}]
    assert body["invoice"]["line_items"][0]["amount"] == 258  # 500 x 16/31; removed addons are credited
    assert body["invoice"]["discounts"][0]["type"] == "credit_adjustment"


def test_change_on_a_metered_site_creates_a_pending_invoice(metered_site):
    start(metered_site)
    plan(metered_site)
    plan(metered_site, "pro", 3000)
    sub = subscribe(metered_site, F.customer(metered_site)["id"])["subscription"]
    travel(metered_site, JAN_16)
    inv = change(metered_site, sub["id"], plan_id="pro")["invoice"]
    assert inv["status"] == "pending" and inv["id"].startswith("draft_inv_")
    assert types(metered_site).count("invoice_created") == 1
    closed = metered_site.api.post(f"/invoices/{inv['id']}/collect")["invoice"]
    assert closed["amount"] == 1032 and closed["status"] == "paid"


def test_changes_at_end_of_term(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    body = change(tsite, sub["id"], plan_id="pro", plan_quantity=2, end_of_term="true", po_number="PO-1")
    assert "invoice" not in body
    s = body["subscription"]
    assert s["plan_id"] == "basic" and s["has_scheduled_changes"] is True and s["po_number"] == "PO-1"
    scheduled = tsite.api.get(f"/subscriptions/{sub['id']}/retrieve_with_scheduled_changes")["subscription"]
    assert (scheduled["plan_id"], scheduled["plan_quantity"], scheduled["status"]) == ("pro", 2, "active")
    removed = tsite.api.post(f"/subscriptions/{sub['id']}/remove_scheduled_changes")["subscription"]
    assert removed["has_scheduled_changes"] is False
    tsite.api.post(f"/subscriptions/{sub['id']}/remove_scheduled_changes", expect=409)
    change(tsite, sub["id"], plan_id="pro", end_of_term="true")
    travel(tsite, FEB_1 + 60)
    s = tsite.api.get(f"/subscriptions/{sub['id']}")["subscription"]
    assert s["plan_id"] == "pro" and s["has_scheduled_changes"] is False
    renewal = invoices(tsite, sub["id"])[-1]
    assert renewal["line_items"][0]["entity_id"] == "pro" and renewal["sub_total"] == 3000
    applied = events(tsite, "subscription_changed")[-1]
    assert applied["occurred_at"] == FEB_1 and applied["content"]["subscription"]["plan_id"] == "pro"


def test_changes_during_trial_and_future(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"], trial_end=GENESIS + 10 * DAY)["subscription"]
    body = change(tsite, sub["id"], plan_id="pro", trial_end=GENESIS + 20 * DAY)
    assert "invoice" not in body and body["subscription"]["trial_end"] == GENESIS + 20 * DAY
    assert body["subscription"]["current_term_end"] == GENESIS + 20 * DAY
    assert "subscription_trial_extended" in types(tsite)
    travel(tsite, GENESIS + 21 * DAY)
    assert invoices(tsite, sub["id"])[0]["sub_total"] == 3000
    r = change(tsite, sub["id"], 400, trial_end=GENESIS + 30 * DAY)
    assert r["param"] == "trial_end"
    fut = subscribe(tsite, F.customer(tsite)["id"], start_date=GENESIS + 30 * DAY)["subscription"]
    s = change(tsite, fut["id"], start_date=GENESIS + 40 * DAY)["subscription"]
    assert s["start_date"] == GENESIS + 40 * DAY
    assert change(tsite, fut["id"], 400, start_date=GENESIS)["param"] == "start_date"


def test_cancelled_subscription_cannot_change(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel")
    r = change(tsite, sub["id"], 409, plan_id="pro")
    assert r["api_error_code"] == "invalid_state_for_request"
    assert change(tsite, "nope", 404, plan_id="pro")["api_error_code"] == "resource_not_found"


def test_billing_details_card_and_shipping_address(tsite):
    cust = F.customer(tsite, card=None, auto_collection="off")
    sub = subscribe(tsite, cust["id"])["subscription"]
    body = change(tsite, sub["id"], **{"card[number]": "5555555555554444", "card[expiry_month]": 1,
                                       "card[expiry_year]": 2031, "billing_address[city]": "Lyon",
                                       "customer[vat_number]": "FR123", "shipping_address[line1]": "1 Rue"})
    assert body["card"]["last4"] == "4444"
    assert body["customer"]["billing_address"] == {"city": "Lyon", "object": "billing_address"}
    assert body["customer"]["vat_number"] == "FR123"
    assert body["subscription"]["shipping_address"] == {"line1": "1 Rue", "object": "shipping_address"}
    ev = types(tsite)
    assert {"card_added", "customer_changed", "subscription_shipping_address_updated",
            "subscription_changed"} <= set(ev)
    r = change(tsite, sub["id"], 400, **{"card[number]": "4111111111111112", "card[expiry_month]": 1,
                                         "card[expiry_year]": 2031})
    assert r["param"] == "card[number]"


# ---- coupons -------------------------------------------------------------------------------------------------

def test_forever_percentage_coupon(tsite):
    coupon(tsite, "ten", discount_percentage=10)
    sub = subscribe(tsite, F.customer(tsite)["id"], coupon="ten")["subscription"]
    assert sub["coupons"] == [{"coupon_id": "ten", "applied_count": 1}]
    travel(tsite, FEB_1 + 60)
    first, renewal = invoices(tsite, sub["id"])
    for inv in (first, renewal):
        assert inv["discounts"] == [{"amount": 100, "description": "ten", "type": "coupon", "entity_id": "ten",
                                    "object": "discount"}]
        assert inv["amount"] == 900
    assert tsite.api.get("/coupons/ten")["coupon"]["redemptions"] == 1


def test_one_time_and_limited_period_coupons(tsite):
    coupon(tsite, "welcome", discount_type="fixed_amount", discount_amount=300, duration_type="one_time")
    coupon(tsite, "two-months", discount_percentage=50, duration_type="limited_period", duration_month=2)
    cust = F.customer(tsite)
    one = subscribe(tsite, cust["id"], coupon="welcome")["subscription"]
    two = subscribe(tsite, cust["id"], coupon="two-months")["subscription"]
    assert two["coupons"] == [{"coupon_id": "two-months", "apply_till": MAR_1, "applied_count": 1}]
    travel(tsite, APR_1 + 60)
    assert [i["amount"] for i in invoices(tsite, one["id"])] == [700, 1000, 1000, 1000]
    assert [i["amount"] for i in invoices(tsite, two["id"])] == [500, 500, 1000, 1000]
    assert "coupons" not in tsite.api.get(f"/subscriptions/{one['id']}")["subscription"]


def test_item_coupons_and_offer_quantity(tsite):
    addon(tsite, "support", 900)
    addon(tsite, "seat", 100, type="quantity")
    coupon(tsite, "half-plan", discount_percentage=50, apply_on="each_specified_item", plan_constraint="specific",
           **{"plan_ids[0]": "basic"}, addon_constraint="none")
    coupon(tsite, "free-seat", discount_type="offer_quantity", discount_quantity=1, apply_on="each_specified_item",
           plan_constraint="none", addon_constraint="all")
    cust = F.customer(tsite)
    inv = subscribe(tsite, cust["id"], coupon="half-plan", **{"addons[id][0]": "support"})["invoice"]
    assert inv["discounts"] == [{"amount": 500, "description": "half-plan", "type": "coupon", "entity_id": "half-plan",
                                 "object": "discount"}]
    inv = subscribe(tsite, cust["id"], coupon="free-seat", **{"addons[id][0]": "seat",
                                                              "addons[quantity][0]": 3})["invoice"]
    assert inv["discounts"][0]["amount"] == 100 and inv["amount"] == 1200


def test_coupon_redemption_limits_and_codes(tsite):
    coupon(tsite, "once", max_redemptions=1)
    cust = F.customer(tsite)
    subscribe(tsite, cust["id"], coupon="once")
    r = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic", "coupon": "once"}, expect=400)
    assert (r["api_error_code"], r["param"]) == ("resource_limit_exhausted", "coupon")
    coupon(tsite, "promo")
    tsite.api.post("/coupon_codes", {"coupon_id": "promo", "coupon_set_name": "launch", "code": "LAUNCH-1"})
    sub = subscribe(tsite, cust["id"], coupon="LAUNCH-1")["subscription"]
    assert sub["coupons"] == [{"coupon_id": "promo", "applied_count": 1, "coupon_code": "LAUNCH-1"}]
    r = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic", "coupon": "LAUNCH-1"},
                       expect=400)
    assert r["api_error_code"] == "resource_limit_exhausted"


def test_coupon_added_by_update(tsite):
    coupon(tsite, "ten", discount_percentage=10)
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    travel(tsite, JAN_16)
    body = change(tsite, sub["id"], coupon="ten")
    assert "invoice" not in body and body["subscription"]["coupons"] == [{"coupon_id": "ten", "applied_count": 0}]
    travel(tsite, FEB_1 + 60)
    assert invoices(tsite, sub["id"])[-1]["amount"] == 900


# ---- charges at the term end --------------------------------------------------------------------------------

def test_add_charge_at_term_end(tsite):
    coupon(tsite, "ten", discount_percentage=10)
    sub = subscribe(tsite, F.customer(tsite)["id"], coupon="ten")["subscription"]
    est = tsite.api.post(f"/subscriptions/{sub['id']}/add_charge_at_term_end",
                         {"amount": 500, "description": "Extra storage"})["estimate"]
    assert est["collect_now"] is False and est["subscription_id"] == sub["id"]
    assert est["sub_total"] == 1500 and est["amount"] == 1350 and est["term_ends_at"] == MAR_1
    assert [li["entity_type"] for li in est["line_items"]] == ["plan", "adhoc"]
    r = tsite.api.post(f"/subscriptions/{sub['id']}/add_charge_at_term_end", {"description": "x"}, expect=400)
    assert r["param"] == "amount"
    travel(tsite, FEB_1 + 60)
    renewal = invoices(tsite, sub["id"])[-1]
    assert renewal["sub_total"] == 1500 and renewal["amount"] == 1350
    assert renewal["line_items"][1]["description"] == "Extra storage"
    travel(tsite, MAR_1 + 60)
    assert invoices(tsite, sub["id"])[-1]["sub_total"] == 1000  # billed once


def test_charge_addon_at_term_end(metered_site):
    start(metered_site)
    plan(metered_site)
    addon(metered_site, "install", 4000, charge_type="non_recurring", type="quantity")
    addon(metered_site, "support", 900)
    sub = subscribe(metered_site, F.customer(metered_site)["id"])["subscription"]
    r = metered_site.api.post(f"/subscriptions/{sub['id']}/charge_addon_at_term_end", {"addon_id": "support"},
                              expect=400)
    assert r["param"] == "addon_id"
    r = metered_site.api.post(f"/subscriptions/{sub['id']}/charge_addon_at_term_end", {"addon_id": "install"},
                              expect=400)
    assert r["param"] == "addon_quantity"
    est = metered_site.api.post(f"/subscriptions/{sub['id']}/charge_addon_at_term_end",
                                {"addon_id": "install", "addon_quantity": 2})["estimate"]
    assert est["sub_total"] == 9000
    travel(metered_site, FEB_1 + 60)
    pending = invoices(metered_site, sub["id"])[-1]
    assert pending["status"] == "pending" and pending["sub_total"] == 9000
    metered_site.api.post(f"/subscriptions/{sub['id']}/cancel")
    metered_site.api.post(f"/subscriptions/{sub['id']}/add_charge_at_term_end",
                          {"amount": 5, "description": "late"}, expect=409)


def test_delayed_charges_are_billed_when_cancelling_now(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    tsite.api.post(f"/subscriptions/{sub['id']}/add_charge_at_term_end", {"amount": 700, "description": "Usage"})
    body = tsite.api.post(f"/subscriptions/{sub['id']}/cancel").body
    assert body["invoice"]["sub_total"] == 700 and body["invoice"]["status"] == "paid"
    assert body["subscription"]["status"] == "cancelled"
