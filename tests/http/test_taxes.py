"""Taxes over HTTP (both stores): subscriptions, renewals, pending invoices, one-off invoices and
estimates taxed from the site's CSV tax rules (domain/taxes.py; choices and sources in
docs/CHOICES.md, "Taxes")."""

from __future__ import annotations

import io

import httpx
import pypdf
import pytest

from tests.support import factories as F
from tests.support.subs import DAY, addon, coupon, invoices, plan, start, subscribe, travel, ts

FEB_1 = ts(2026, 2, 1)
NY = {"billing_address[first_name]": "Ada", "billing_address[line1]": "1 Main St",
      "billing_address[city]": "New York", "billing_address[state_code]": "NY", "billing_address[zip]": "10001",
      "billing_address[country]": "US"}


@pytest.fixture
def tsite(site):
    start(site)
    plan(site)  # basic, 1000 a month
    return site


def tax_rule(site, **params) -> dict:
    body = {"country": "US", "state": "NY", "tax1_name": "Sales tax", "tax1_rate": "10", **params}
    return site.api.post("/csv_tax_rules", body)["csv_tax_rule"]


def ny_customer(site, address: dict | None = None, **fields) -> dict:
    cust = F.customer(site)
    if fields:
        site.api.post(f"/customers/{cust['id']}", fields)
    site.api.post(f"/customers/{cust['id']}/update_billing_info", address or NY)
    return cust


def test_a_subscription_is_taxed_from_the_rule_for_the_billing_address(tsite):
    tax_rule(tsite)
    cust = ny_customer(tsite)
    body = subscribe(tsite, cust["id"], id="sub-tax")
    inv = body["invoice"]
    assert (inv["sub_total"], inv["tax"], inv["amount"], inv["amount_paid"]) == (1000, 100, 1100, 1100)
    assert inv["price_type"] == "tax_exclusive" and inv["status"] == "paid"
    (li,) = inv["line_items"]
    assert (li["is_taxed"], li["tax"], li["tax_rate"]) == (True, 100, 10.0)
    assert inv["taxes"] == [{"amount": 100, "description": "Sales tax @ 10%", "object": "tax"}]
    (lt,) = inv["linked_transactions"]
    assert tsite.api.get(f"/transactions/{lt['txn_id']}")["transaction"]["amount"] == 1100


def test_no_rule_for_the_address_no_tax(tsite):
    tax_rule(tsite, state="CA")
    cust = ny_customer(tsite)
    inv = subscribe(tsite, cust["id"])["invoice"]
    assert inv["tax"] == 0 and inv["taxes"] == [] and inv["amount"] == 1000
    assert inv["line_items"][0]["is_taxed"] is False


def test_an_exempt_customer_and_an_untaxed_plan_pay_no_tax(tsite):
    # spec, customer.taxability: "exempt - Customer is exempted from tax"; plan.taxable:
    # "Specifies if the plan should be taxed or not".
    tax_rule(tsite)
    exempt = ny_customer(tsite, taxability="exempt")
    assert subscribe(tsite, exempt["id"])["invoice"]["tax"] == 0
    plan(tsite, "free-of-tax", 2000, taxable="false")
    inv = subscribe(tsite, ny_customer(tsite)["id"], "free-of-tax")["invoice"]
    assert inv["tax"] == 0 and inv["amount"] == 2000 and inv["line_items"][0]["is_taxed"] is False


def test_the_subscriptions_shipping_address_comes_first(tsite):
    # spec, customer.taxability: shipping_address first; billing_address if there is none.
    tax_rule(tsite)
    tax_rule(tsite, state="CA", tax1_name="CA tax", tax1_rate="7.25")
    cust = ny_customer(tsite)
    body = subscribe(tsite, cust["id"], **{"shipping_address[city]": "San Francisco",
                                           "shipping_address[state_code]": "CA", "shipping_address[country]": "US"})
    inv = body["invoice"]
    assert inv["taxes"] == [{"amount": 73, "description": "CA tax @ 7.25%", "object": "tax"}]  # 72.5 rounds half up
    assert inv["shipping_address"]["state_code"] == "CA" and inv["amount"] == 1073


def test_renewal_uses_the_rule_valid_on_its_date_and_the_estimate_agrees(tsite):
    tax_rule(tsite, valid_till=str(FEB_1))
    tax_rule(tsite, tax1_rate="12", valid_from=str(FEB_1), overwrite="true")
    cust = ny_customer(tsite)
    sub = subscribe(tsite, cust["id"], id="sub-renew")["subscription"]
    assert invoices(tsite, sub["id"])[0]["tax"] == 100
    est = tsite.api.get(f"/subscriptions/{sub['id']}/renewal_estimate")["estimate"]
    assert sum(t["amount"] for t in est["taxes"]) == 120  # a v1 estimate has taxes[], no tax field
    assert est["amount"] == 1120
    travel(tsite, FEB_1 + DAY)
    renewal = invoices(tsite, sub["id"])[1]
    assert renewal["start_date"] == FEB_1 and renewal["tax"] == 120 and renewal["amount_paid"] == 1120
    assert renewal["taxes"] == est["taxes"]
    assert [li["tax"] for li in renewal["line_items"]] == [li["tax"] for li in est["line_items"]]


def test_create_estimate_shows_what_the_subscription_charges(tsite):
    tax_rule(tsite, tax1_name="State", tax1_rate="4", tax2_name="City", tax2_rate="4.875")
    cust = ny_customer(tsite)
    est = tsite.api.get(f"/customers/{cust['id']}/create_subscription_estimate",
                        {"subscription[plan_id]": "basic"})["estimate"]
    inv = subscribe(tsite, cust["id"])["invoice"]
    assert est["amount"] == inv["amount"] == 1089  # 1000 + 40 + 48.75 (rounds to 49)
    assert est["taxes"] == inv["taxes"] == [{"amount": 40, "description": "State @ 4%", "object": "tax"},
                                            {"amount": 49, "description": "City @ 4.875%", "object": "tax"}]


def test_estimate_for_a_new_customer_is_taxed_from_its_billing_address(tsite):
    tax_rule(tsite)
    ny = {f"billing_address[{k}]": NY[f"billing_address[{k}]"] for k in ("state_code", "zip", "country")}
    est = tsite.api.post("/estimates/create_subscription", {"subscription[plan_id]": "basic", **ny})["estimate"]
    assert est["amount"] == 1100
    exempt = tsite.api.post("/estimates/create_subscription", {"subscription[plan_id]": "basic",
                                                               "customer[taxability]": "exempt", **ny})["estimate"]
    assert exempt["amount"] == 1000 and exempt["taxes"] == []
    shipped = tsite.api.post("/estimates/create_subscription", {
        "subscription[plan_id]": "basic", "shipping_address[country]": "US", "shipping_address[state_code]": "NY",
        "billing_address[country]": "FR"})["estimate"]
    assert shipped["amount"] == 1100


def test_tax_inclusive_prices(tsite):
    # support.chargebee.com article 238142: a $110 price with 10% tax shows $100 and a carved tax
    # of $10; the customer pays the price.
    tsite.setting(price_type="tax_inclusive")
    tax_rule(tsite)
    plan(tsite, "incl", 1100)
    inv = subscribe(tsite, ny_customer(tsite)["id"], "incl")["invoice"]
    assert inv["price_type"] == "tax_inclusive"
    assert (inv["sub_total"], inv["tax"], inv["amount"], inv["amount_paid"]) == (1100, 100, 1100, 1100)
    assert inv["taxes"] == [{"amount": 100, "description": "Sales tax @ 10%", "object": "tax"}]


def test_promotional_credits_come_off_before_tax_at_collect(tsite):
    # SEMANTICS.md / Chargebee: promotional credits are a discount before tax; refundable credits
    # pay the taxed amount.
    tax_rule(tsite)
    cust = F.customer(tsite, promotional=300, refundable=200)
    tsite.api.post(f"/customers/{cust['id']}/update_billing_info", NY)
    draft = F.pending_invoice(tsite, cust["id"], ((1000, "Usage"),))
    assert draft["tax"] == 100 and draft["amount"] == 1100
    charged = tsite.api.post(f"/invoices/{draft['id']}/add_charge", {"amount": 500, "description": "More"})["invoice"]
    assert charged["tax"] == 150 and charged["amount"] == 1650
    inv = tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    assert inv["discounts"] == [{"amount": 300, "description": "Promotional Credits", "type": "account_credits",
                                 "object": "discount"}]
    assert inv["tax"] == 120 and inv["amount"] == 1320 and inv["credits_applied"] == 200
    assert inv["amount_paid"] == 1120 and inv["status"] == "paid"


def test_one_off_invoice_and_its_estimate_agree(tsite):
    tax_rule(tsite, zip_code="10001", tax1_rate="8.875")
    tax_rule(tsite)
    cust = ny_customer(tsite)
    params = {"charges[amount][0]": 999, "charges[description][0]": "Setup"}
    est = tsite.api.post("/estimates/create_invoice", {"invoice[customer_id]": cust["id"], **params})["estimate"]
    inv = tsite.api.post("/invoices", {"customer_id": cust["id"], **params})["invoice"]
    assert inv["tax"] == 89 and inv["amount"] == 1088  # the zip code's rule: 999 x 8.875% = 88.66
    assert est["amount"] == inv["amount"] and est["taxes"] == inv["taxes"]


def test_the_pdf_prints_each_tax(tsite):
    tax_rule(tsite, tax1_name="State", tax1_rate="4", tax2_name="City", tax2_rate="4.5")
    inv = subscribe(tsite, ny_customer(tsite)["id"])["invoice"]
    text = pdf_text(tsite, inv["id"])
    for expected in ("Sub total USD 10.00", "State @ 4% USD 0.40", "City @ 4.5% USD 0.45", "Total USD 10.85"):
        assert expected in text, (expected, text)
    tsite.setting(price_type="tax_inclusive")
    plan(tsite, "incl", 1085)
    inv = subscribe(tsite, ny_customer(tsite)["id"], "incl")["invoice"]
    assert inv["tax"] == 85 and inv["amount"] == 1085
    text = pdf_text(tsite, inv["id"])
    for expected in ("Total USD 10.85", "Includes State @ 4% USD 0.40", "Includes City @ 4.5% USD 0.45"):
        assert expected in text, (expected, text)


def pdf_text(site, invoice_id: str) -> str:
    url = site.api.post(f"/invoices/{invoice_id}/pdf")["download"]["download_url"]
    reader = pypdf.PdfReader(io.BytesIO(httpx.get(url, timeout=30).content))
    return "\n".join(page.extract_text() for page in reader.pages)


@pytest.mark.parametrize("price_type, tax, amount", [("tax_exclusive", 100, 1350), ("tax_inclusive", 91, 1250)])
def test_a_coupon_on_an_untaxed_addon_leaves_the_plans_tax_whole(tsite, price_type, tax, amount):
    # A 50 % coupon limited to the addon (apply_on each_specified_item) takes 250 off the addon
    # line only (docs/CHOICES.md, "Taxes": discounts before tax); the addon is not taxable, so
    # the plan is taxed on its full 1000: 10 % on top (100), or carved out of it (1000 x 10 / 110
    # = 90.9 -> 91). The estimates show what the subscription and its renewal then charge.
    tsite.setting(price_type=price_type)
    tax_rule(tsite)
    addon(tsite, "gift", 500, taxable="false")
    coupon(tsite, "gift-half", apply_on="each_specified_item", discount_percentage=50, plan_constraint="none",
           addon_constraint="specific", **{"addon_ids[0]": "gift"})
    cust = ny_customer(tsite)
    params = {"addons[id][0]": "gift", "coupon": "gift-half"}
    est = tsite.api.get(f"/customers/{cust['id']}/create_subscription_estimate",
                        {"subscription[plan_id]": "basic", "subscription[coupon]": "gift-half",
                         "addons[id][0]": "gift"})["estimate"]
    body = subscribe(tsite, cust["id"], id="sub-gift", **params)
    inv = body["invoice"]
    assert [d["amount"] for d in inv["discounts"]] == [250]
    assert [li["tax"] for li in inv["line_items"]] == [tax, 0]
    assert (inv["sub_total"], inv["tax"], inv["amount"], inv["amount_paid"]) == (1500, tax, amount, amount)
    assert est["amount"] == amount and est["taxes"] == inv["taxes"]
    assert [li["tax"] for li in est["line_items"]] == [tax, 0]
    renewal_est = tsite.api.get("/subscriptions/sub-gift/renewal_estimate")["estimate"]
    travel(tsite, FEB_1 + DAY)
    renewal = invoices(tsite, "sub-gift")[1]
    assert (renewal["tax"], renewal["amount"]) == (tax, amount)
    assert renewal_est["amount"] == amount and renewal_est["taxes"] == renewal["taxes"]


def test_a_coupon_on_the_plan_reduces_only_the_plans_tax(tsite):
    # A fixed 200 off the plan only, an untaxed addon of 500 and a taxed one of 300: the plan is
    # taxed on 800 (80), the taxed addon on its full 300 (30). A one-off invoice's estimate agrees.
    tax_rule(tsite)
    addon(tsite, "gift", 500, taxable="false")
    addon(tsite, "extra", 300)
    coupon(tsite, "plan-200", apply_on="each_specified_item", discount_type="fixed_amount", discount_amount=200,
           plan_constraint="specific", addon_constraint="none", **{"plan_ids[0]": "basic"})
    cust = ny_customer(tsite)
    est = tsite.api.get(f"/customers/{cust['id']}/create_subscription_estimate", {
        "subscription[plan_id]": "basic", "subscription[coupon]": "plan-200", "addons[id][0]": "gift",
        "addons[id][1]": "extra"})["estimate"]
    inv = subscribe(tsite, cust["id"], **{"coupon": "plan-200", "addons[id][0]": "gift",
                                          "addons[id][1]": "extra"})["invoice"]
    assert [li["tax"] for li in inv["line_items"]] == [80, 0, 30]
    assert (inv["tax"], inv["amount"]) == (110, 1800 - 200 + 110)
    assert est["amount"] == inv["amount"] and est["taxes"] == inv["taxes"]


@pytest.mark.parametrize("price_type", ["tax_exclusive", "tax_inclusive"])
def test_a_downgrade_gives_back_the_tax_with_the_credits_beyond_its_invoice(tsite, price_type):
    # pro (2000) -> basic (1000) on Jan 16 (16 of 31 days left): the unused pro (1032) is
    # credited, 516 of it pays the prorated basic on the change's invoice, the rest becomes
    # refundable credits. Tax-exclusive, the customer paid 10 % on top of the pro term, so the
    # credits carry that tax: 516 + 52 (51.6 half up). Tax-inclusive the prices held the tax: 516.
    tsite.setting(price_type=price_type)
    tax_rule(tsite)
    plan(tsite, "pro", 2000)
    cust = ny_customer(tsite)
    first = subscribe(tsite, cust["id"], "pro", id="sub-down")["invoice"]
    assert first["tax"] == (200 if price_type == "tax_exclusive" else 182)
    travel(tsite, ts(2026, 1, 16))
    inv = tsite.api.post("/subscriptions/sub-down", {"plan_id": "basic"})["invoice"]
    assert inv["line_items"][0]["amount"] == 516 and inv["discounts"][0]["amount"] == 516
    assert inv["tax"] == 0 and inv["amount"] == 0
    expected = 516 + 52 if price_type == "tax_exclusive" else 516
    assert refundable(tsite, cust["id"]) == expected
    # the renewal (basic, 1000 + 100 tax exclusive) takes the credits after tax
    travel(tsite, FEB_1 + DAY)
    renewal = invoices(tsite, "sub-down")[-1]
    assert renewal["credits_applied"] == expected


def test_credits_of_an_untaxed_plan_carry_no_tax(tsite):
    tax_rule(tsite)
    plan(tsite, "pro", 2000, taxable="false")
    cust = ny_customer(tsite)
    assert subscribe(tsite, cust["id"], "pro", id="sub-free")["invoice"]["tax"] == 0
    travel(tsite, ts(2026, 1, 16))
    tsite.api.post("/subscriptions/sub-free", {"plan_id": "basic"})
    assert refundable(tsite, cust["id"]) == 516


def refundable(site, customer_id: str) -> int:
    return site.api.get(f"/customers/{customer_id}")["customer"]["refundable_credits"]


TAXED_SAME = ("sub_total", "tax", "amount", "line_items", "discounts", "taxes")


def same_taxes(estimate: dict, invoice: dict) -> None:
    """A v1 estimate has no ``tax`` field: its taxes[] add up to the invoice's."""
    for k in TAXED_SAME:
        if k == "tax":
            assert sum(t["amount"] for t in estimate["taxes"]) == invoice["tax"]
        else:
            assert estimate[k] == invoice[k], k


@pytest.mark.parametrize("price_type", ["tax_exclusive", "tax_inclusive"])
def test_update_estimate_with_an_item_coupon_is_what_the_change_charges(tsite, price_type):
    # Mid-term upgrade to pro with an untaxed addon and a 20 % coupon limited to pro; the
    # prorated credit is shared over what the coupon leaves. The estimate equals the change.
    tsite.setting(price_type=price_type)
    tax_rule(tsite)
    plan(tsite, "pro", 3000)
    addon(tsite, "gift", 500, taxable="false")
    coupon(tsite, "pro-20", apply_on="each_specified_item", discount_percentage=20, plan_constraint="specific",
           addon_constraint="none", **{"plan_ids[0]": "pro"})
    cust = ny_customer(tsite)
    subscribe(tsite, cust["id"], id="sub-up")
    travel(tsite, ts(2026, 1, 16))
    est = tsite.api.post("/estimates/update_subscription", {
        "subscription[id]": "sub-up", "subscription[plan_id]": "pro", "subscription[coupon]": "pro-20",
        "addons[id][0]": "gift"})["estimate"]
    inv = tsite.api.post("/subscriptions/sub-up", {"plan_id": "pro", "coupon": "pro-20",
                                                   "addons[id][0]": "gift"})["invoice"]
    same_taxes(est, inv)
    pro, gift = inv["line_items"]
    assert (pro["entity_id"], pro["amount"], gift["entity_id"], gift["amount"]) == ("pro", 1548, "gift", 258)
    assert [(d["type"], d["amount"]) for d in inv["discounts"]] == [("coupon", 310), ("credit_adjustment", 516)]
    assert gift["is_taxed"] is False and gift["tax"] == 0
    # pro is taxed on 1548 - 310 - its share of the 516 (516 x 1238 / 1496 = 427): 811
    expected = 81 if price_type == "tax_exclusive" else 74  # 81.1; 811 x 10 / 110 = 73.7
    assert pro["tax"] == inv["tax"] == expected


@pytest.mark.parametrize("price_type", ["tax_exclusive", "tax_inclusive"])
def test_invoice_estimate_with_an_item_coupon_is_what_the_invoice_charges(tsite, price_type):
    # A one-off invoice: a kit (non-recurring addon, 2 x 1200) with a one-time 25 % coupon on the
    # kit only, and an ad hoc charge of 600 (taxed too): the coupon's 600 comes off the kit
    # alone, the charge is taxed whole. The estimate equals the invoice.
    tsite.setting(price_type=price_type)
    tax_rule(tsite)
    addon(tsite, "kit", 1200, type="quantity", charge_type="non_recurring")
    coupon(tsite, "kit-25", apply_on="each_specified_item", duration_type="one_time", discount_percentage=25,
           plan_constraint="none", addon_constraint="specific", **{"addon_ids[0]": "kit"})
    cust = ny_customer(tsite)
    params = {"coupon": "kit-25", "addons[id][0]": "kit", "addons[quantity][0]": 2,
              "charges[amount][0]": 600, "charges[description][0]": "Installation"}
    est = tsite.api.post("/estimates/create_invoice", {"invoice[customer_id]": cust["id"], **params})["estimate"]
    inv = tsite.api.post("/invoices", {"customer_id": cust["id"], **params})["invoice"]
    same_taxes(est, inv)
    assert [d["amount"] for d in inv["discounts"]] == [600]
    # kit taxed on 2400 - 600 = 1800, the charge on 600
    expected = [180, 60] if price_type == "tax_exclusive" else [164, 55]  # 163.6, 54.5 half up
    assert [li["tax"] for li in inv["line_items"]] == expected
    assert inv["amount"] == 3000 - 600 + (240 if price_type == "tax_exclusive" else 0)
