"""Estimates over HTTP: each equals what the real operation then bills (same compose code), and
none of them changes anything."""

from __future__ import annotations

import pytest

from tests.support import factories as F
from tests.support.subs import (
    DAY,
    GENESIS,
    addon,
    coupon,
    invoices,
    plan,
    start,
    subscribe,
    travel,
    ts,
)

FEB_1 = ts(2026, 2, 1)
JAN_16 = ts(2026, 1, 16)
SAME = ("sub_total", "amount", "line_items", "discounts")


@pytest.fixture
def tsite(site):
    start(site)
    plan(site)
    plan(site, "pro", 3000, setup_cost=250)
    addon(site, "support", 900)
    coupon(site, "ten", discount_percentage=10)
    return site


def same(estimate: dict, invoice: dict) -> None:
    for k in SAME:
        assert estimate[k] == invoice[k], k


def test_create_subscription_estimate_matches_the_creation(tsite):
    params = {"subscription[plan_id]": "pro", "subscription[coupon]": "ten", "addons[id][0]": "support"}
    est = tsite.api.post("/estimates/create_subscription", params)["estimate"]
    assert est["collect_now"] is True and est["subscription_status"] == "active" and est["term_ends_at"] == FEB_1
    assert est["amount"] == est["amount_due"] == 3735 and est["credits_applied"] == 0
    assert tsite.api.get("/subscriptions").body == {"list": []}
    assert tsite.api.get("/coupons/ten")["coupon"].get("redemptions", 0) == 0
    inv = subscribe(tsite, F.customer(tsite)["id"], "pro", coupon="ten", **{"addons[id][0]": "support"})["invoice"]
    same(est, inv)


def test_create_estimate_for_a_trial_is_the_trial_end_invoice(tsite):
    est = tsite.api.post("/estimates/create_subscription", {"subscription[plan_id]": "basic",
                                                           "subscription[trial_end]": GENESIS + 5 * DAY})["estimate"]
    assert est["collect_now"] is False and est["subscription_status"] == "active"
    assert est["line_items"][0]["date_from"] == GENESIS + 5 * DAY and est["amount"] == 1000
    r = tsite.api.post("/estimates/create_subscription", {"subscription[plan_id]": "nope"}, expect=404)
    assert r["param"] == "plan_id"


def test_create_subscription_for_customer_estimate_with_balances(tsite):
    cust = F.customer(tsite, refundable=400, promotional=100)
    est = tsite.api.get(f"/customers/{cust['id']}/create_subscription_estimate",
                        {"subscription[plan_id]": "basic", "use_customer_balances": "true"})["estimate"]
    assert est["discounts"] == [{"amount": 100, "description": "Promotional Credits", "type": "account_credits",
                                 "object": "discount"}]
    assert (est["amount"], est["credits_applied"], est["amount_due"]) == (900, 400, 500)
    inv = subscribe(tsite, cust["id"])["invoice"]
    assert (inv["amount"], inv["credits_applied"], inv["amount_paid"]) == (900, 400, 500)
    plain = tsite.api.get(f"/customers/{cust['id']}/create_subscription_estimate",
                          {"subscription[plan_id]": "basic"})["estimate"]
    assert plain["amount_due"] == 1000
    tsite.api.get("/customers/ghost/create_subscription_estimate", {"subscription[plan_id]": "basic"}, expect=404)


def test_update_subscription_estimate_matches_the_change(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    travel(tsite, JAN_16)
    params = {"subscription[id]": sub["id"], "subscription[plan_id]": "pro", "addons[id][0]": "support"}
    est = tsite.api.post("/estimates/update_subscription", params)["estimate"]
    assert est["collect_now"] is True
    assert tsite.api.get(f"/subscriptions/{sub['id']}")["subscription"]["plan_id"] == "basic"
    inv = tsite.api.post(f"/subscriptions/{sub['id']}", {"plan_id": "pro", "addons[id][0]": "support"})["invoice"]
    same(est, inv)
    later = tsite.api.post("/estimates/update_subscription", {"subscription[id]": sub["id"],
                                                              "subscription[plan_id]": "basic",
                                                              "end_of_term": "true"})["estimate"]
    assert later["collect_now"] is False and later["sub_total"] == 1900
    assert later["line_items"][0]["date_from"] == FEB_1


def test_renewal_estimate_matches_the_renewal(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"], coupon="ten")["subscription"]
    tsite.api.post(f"/subscriptions/{sub['id']}/add_charge_at_term_end", {"amount": 300, "description": "Usage"})
    est = tsite.api.get(f"/subscriptions/{sub['id']}/renewal_estimate")["estimate"]
    without = tsite.api.get(f"/subscriptions/{sub['id']}/renewal_estimate",
                            {"include_delayed_charges": "false"})["estimate"]
    assert est["sub_total"] == 1300 and without["sub_total"] == 1000
    assert est["collect_now"] is False and est["subscription_status"] == "active"
    travel(tsite, FEB_1 + 60)
    same(est, invoices(tsite, sub["id"])[-1])
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel")
    tsite.api.get(f"/subscriptions/{sub['id']}/renewal_estimate", expect=409)
    tsite.api.get("/subscriptions/nope/renewal_estimate", expect=404)


def test_renewal_estimate_of_non_renewing_shows_only_delayed_charges(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel", {"end_of_term": "true"})
    est = tsite.api.get(f"/subscriptions/{sub['id']}/renewal_estimate")["estimate"]
    assert est["line_items"] == [] and est["amount"] == 0
    tsite.api.post(f"/subscriptions/{sub['id']}/add_charge_at_term_end", {"amount": 300, "description": "Usage"})
    est = tsite.api.get(f"/subscriptions/{sub['id']}/renewal_estimate")["estimate"]
    assert est["amount"] == 300
    travel(tsite, FEB_1 + 60)
    same(est, invoices(tsite, sub["id"])[-1])


# ---- POST /estimates/create_invoice: the estimate of POST /invoices -----------------------------------

def _in_use(site, addon_id: str) -> int:
    from sqlalchemy import select

    from billhive.store import schema as S
    t = S.addons
    return site.app.db.read_sync(lambda tx: tx.scalar(select(t.c.in_use).where(t.c.site_id == site.pk,
                                                                               t.c.id == addon_id)))


def test_create_invoice_estimate_matches_the_invoice(tsite):
    cust = F.customer(tsite)
    addon(tsite, "kit", 1200, type="quantity", charge_type="non_recurring")
    coupon(tsite, "once", duration_type="one_time", discount_percentage=25)
    params = {"coupon": "once", "addons[id][0]": "kit", "addons[quantity][0]": 2,
              "charges[amount][0]": 600, "charges[description][0]": "Installation"}
    est = tsite.api.post("/estimates/create_invoice", {"invoice[customer_id]": cust["id"], "invoice[po_number]": "PO-9",
                                                      "customer[vat_number]": "GB123", **params})["estimate"]
    assert est["collect_now"] is True and est["recurring"] is False and "subscription_id" not in est
    assert (est["sub_total"], est["amount"], est["amount_due"], est["credits_applied"]) == (3000, 2250, 2250, 0)
    assert [(li["entity_type"], li.get("entity_id"), li["amount"]) for li in est["line_items"]] == \
        [("addon", "kit", 2400), ("adhoc", None, 600)]
    # nothing happened: no invoice, no redemption, the addon is not in use
    assert tsite.api.get("/invoices").body == {"list": []}
    assert tsite.api.get("/coupons/once")["coupon"]["redemptions"] == 0 and _in_use(tsite, "kit") == 0
    inv = tsite.api.post("/invoices", {"customer_id": cust["id"], "po_number": "PO-9", **params})["invoice"]
    same(est, inv)
    assert inv["amount_due"] == 0 and inv["status"] == "paid" and est["amount_due"] == inv["amount_paid"]


def test_create_invoice_estimate_for_a_subscription_ignores_balances(tsite):
    cust = F.customer(tsite, refundable=1500, auto_collection="off")  # 1000 go to the signup
    sub = subscribe(tsite, cust["id"])["subscription"]
    est = tsite.api.post("/estimates/create_invoice", {"invoice[subscription_id]": sub["id"],
                                                      "charges[amount][0]": 800,
                                                      "charges[description][0]": "Extra"})["estimate"]
    assert est["subscription_id"] == sub["id"] and est["amount_due"] == 800 and est["credits_applied"] == 0
    inv = tsite.api.post("/invoices", {"subscription_id": sub["id"], "charges[amount][0]": 800,
                                       "charges[description][0]": "Extra"})["invoice"]
    same(est, inv)
    assert inv["credits_applied"] == 500  # the operation applies balances when it closes the invoice


@pytest.mark.parametrize("params, status, code, param", [
    ({"charges[amount][0]": 100, "charges[description][0]": "x"}, 400, "param_wrong_value", "invoice[customer_id]"),
    ({"invoice[customer_id]": "ghost", "charges[amount][0]": 100, "charges[description][0]": "x"}, 404,
     "resource_not_found", "invoice[customer_id]"),
    ({"invoice[subscription_id]": "ghost", "charges[amount][0]": 100, "charges[description][0]": "x"}, 404,
     "resource_not_found", "invoice[subscription_id]"),
    ({"invoice[customer_id]": "CUST"}, 400, "invalid_request", "addons[id][0]"),
    ({"invoice[customer_id]": "CUST", "charges[amount][0]": 100}, 400, "param_wrong_value",
     "charges[description][0]"),
    ({"invoice[customer_id]": "CUST", "addons[id][0]": "nope"}, 404, "resource_not_found", "addons[id][0]"),
    ({"invoice[customer_id]": "CUST", "addons[id][0]": "support"}, 400, "param_wrong_value", "addons[id][0]"),
    ({"invoice[customer_id]": "CUST", "addons[id][0]": "kit", "coupon": "ten"}, 400, "param_wrong_value", "coupon"),
    ({"invoice[customer_id]": "CUST", "addons[id][0]": "kit", "coupon": "nope"}, 404, "resource_not_found",
     "coupon"),
    ({"invoice[customer_id]": "CUST", "addons[id][0]": "kit", "billing_address[country]": "XX"}, 400,
     "param_wrong_value", "billing_address[country]"),
])
def test_create_invoice_estimate_bad_input(tsite, params, status, code, param):
    cust = F.customer(tsite)
    addon(tsite, "kit", 1200, charge_type="non_recurring")
    params = {k: (cust["id"] if v == "CUST" else v) for k, v in params.items()}
    r = tsite.api.post("/estimates/create_invoice", params, expect=status)
    assert (r["api_error_code"], r["param"]) == (code, param)
