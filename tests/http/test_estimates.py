"""Estimates over HTTP: each equals what the real operation then bills (same compose code), and
none of them changes anything."""

from __future__ import annotations

import pytest

from tests.support import factories as F
from tests.support.subs import DAY, GENESIS, addon, coupon, invoices, plan, start, subscribe, travel, ts

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
    assert est["discounts"] == [{"amount": 100, "description": "Promotional Credits", "type": "account_credits"}]
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
