"""Taxes (domain/taxes.py): rule selection, tax-exclusive and tax-inclusive arithmetic, stacking,
exemption, taxable items; through domain/invoices.recompute and domain/closing.close."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import closing
from billhive.domain import invoices as D
from billhive.domain import taxes as T
from billhive.domain.tax_rules import build_rule

NY = {"country": "US", "state_code": "NY", "zip": "10001"}
DAY = 86400


def rule(**params) -> dict:
    return build_rule({"tax1_name": "Tax", "tax1_rate": 10, **params})


def invoice(*amounts: int, discounts: tuple[tuple[str, int], ...] = (), entity: str = "plan") -> dict:
    lines = [{"amount": a, "unit_amount": a, "quantity": 1, "entity_type": entity, "entity_id": f"p{i}",
              "description": "x", "type": "charge", "date_from": 0, "date_to": 0} for i, a in enumerate(amounts)]
    return {"id": "draft_inv_1", "line_items": lines, "status": "pending", "start_date": 0,
            "discounts": [{"amount": a, "type": t, "description": t} for t, a in discounts]}


def basis(*rates, price_type=T.EXCLUSIVE, **kw) -> T.Basis:
    return T.Basis(price_type=price_type, taxes=tuple(T.Tax(f"T{i}", T.exact_rate(r)) for i, r in enumerate(rates)),
                   **kw)


# ---- worked examples from Chargebee's documentation ---------------------------------------------

def test_tax_exclusive_price_gets_the_tax_on_top():
    # https://www.chargebee.com/docs/tax.html (price types): "Basic Plan_usd | 100 | USD |
    # Exclusive | 5%" - the tax is applied on top of the product price: 100 + 5.
    inv = D.recompute(invoice(10000), taxes=basis(5))
    assert (inv["sub_total"], inv["tax"], inv["amount"]) == (10000, 500, 10500)
    assert inv["price_type"] == "tax_exclusive"
    li = inv["line_items"][0]
    assert (li["is_taxed"], li["tax"], li["tax_rate"]) == (True, 500, 5.0)
    assert inv["taxes"] == [{"amount": 500, "description": "T0 @ 5%", "object": "tax"}]


def test_tax_inclusive_price_carves_the_tax_out():
    # support.chargebee.com article 238142 ("How to configure inclusive or exclusive taxes"):
    # "if the plan price is $110 and the tax rate is 10%, the invoice would show the plan price
    # to be $100 and a carved tax of $10". The customer pays the price: amount 110.
    inv = D.recompute(invoice(11000), taxes=basis(10, price_type=T.INCLUSIVE))
    assert (inv["sub_total"], inv["tax"], inv["amount"]) == (11000, 1000, 11000)
    assert inv["price_type"] == "tax_inclusive"
    assert inv["taxes"] == [{"amount": 1000, "description": "T0 @ 10%", "object": "tax"}]


def test_several_taxes_of_a_rule_stack_on_the_same_amount():
    # support.chargebee.com article 223398 ("Uploading customized tax settings (CSV)"): a row
    # carries up to four tax rates (state, county, city, GST/PST), each for its jurisdiction.
    # New York City: 4% state + 4.5% city + 0.375% MCTD = 8.875%, each on the line amount.
    r = build_rule({"country": "US", "state": "NY", "tax1_name": "NY State Tax", "tax1_rate": 4,
                    "tax2_name": "NYC Tax", "tax2_rate": 4.5, "tax3_name": "MCTD", "tax3_rate": 0.375})
    inv = D.recompute(invoice(10000), taxes=T.basis_for(r))
    assert inv["taxes"] == [{"amount": 400, "description": "NY State Tax @ 4%", "object": "tax"},
                            {"amount": 450, "description": "NYC Tax @ 4.5%", "object": "tax"},
                            {"amount": 38, "description": "MCTD @ 0.375%", "object": "tax"}]  # 37.5 rounds half up
    assert inv["tax"] == 888 and inv["amount"] == 10888
    assert inv["line_items"][0]["tax_rate"] == 8.875


def test_state_wide_rule_and_a_zip_code_of_its_own():
    # article 223398: "New York State and * - the tax rate of 4% will apply to all ZIP codes in
    # New York State"; a single ZIP code with a different rate gets a row of its own, which wins.
    state = rule(country="US", state="NY", tax1_rate=4)
    zip_rule = rule(country="US", state="NY", zip_code="10001", tax1_rate=8.875)
    assert T.select_rule([zip_rule, state], NY, 0) is zip_rule
    assert T.select_rule([state, zip_rule], {**NY, "zip": "12201"}, 0) is state


# ---- which rule applies -------------------------------------------------------------------------

def test_the_most_specific_rule_wins():
    country = rule(country="US")
    state = rule(country="US", state="NY")
    wide = rule(country="US", state="NY", zip_code_start=10000, zip_code_end=10999)
    narrow = rule(country="US", state="NY", zip_code_start=10000, zip_code_end=10010)
    code = rule(country="US", state="NY", zip_code="10001")
    all_rules = [code, narrow, wide, state, country]
    assert T.select_rule(all_rules, NY, 0) is code
    assert T.select_rule(all_rules, {**NY, "zip": "10002"}, 0) is narrow
    assert T.select_rule(all_rules, {**NY, "zip": "10500"}, 0) is wide
    assert T.select_rule(all_rules, {**NY, "zip": "14850"}, 0) is state
    assert T.select_rule(all_rules, {"country": "US", "state_code": "CA", "zip": "94105"}, 0) is country
    assert T.select_rule(all_rules, {"country": "CA", "state_code": "ON"}, 0) is None


def test_zip_plus_four_and_full_state_codes_match():
    code = rule(country="US", state="NY", zip_code="10001")
    rng = rule(country="US", state="NY", zip_code_start=10000, zip_code_end=10010)
    assert T.select_rule([code], {"country": "us", "state_code": "US-NY", "zip": "10001-1234"}, 0) is code
    assert T.select_rule([rng], {"country": "US", "state_code": "NY", "zip": "10005-0001"}, 0) is rng
    assert T.select_rule([rng], {"country": "US", "state_code": "NY"}, 0) is None


def test_validity_window_on_the_invoice_date():
    old = rule(country="US", valid_till=10 * DAY, tax1_rate=5)
    new = rule(country="US", valid_from=10 * DAY, tax1_rate=6, overwrite=True)
    later = rule(country="US", valid_from=20 * DAY, valid_till=30 * DAY, state="NY")
    rules = [old, new, later]
    assert T.select_rule(rules, NY, 10 * DAY - 1) is old
    assert T.select_rule(rules, NY, 10 * DAY) is new  # valid_till is exclusive, valid_from inclusive
    assert T.select_rule(rules, NY, 25 * DAY) is later
    assert T.select_rule(rules, NY, 30 * DAY) is new


def test_tax_profile_rules_never_apply_and_service_type_breaks_ties():
    profiled = rule(country="US", tax_profile_name="Books")
    assert T.select_rule([profiled], NY, 0) is None
    digital = rule(country="US", service_type="digital")
    plain = rule(country="US")
    assert T.select_rule([plain, digital], NY, 0) is plain
    assert T.select_rule([digital], NY, 0) is digital
    newer = rule(country="US")
    assert T.select_rule([plain, newer], NY, 0) is newer


def test_shipping_address_first_then_billing():
    # spec, customer.taxability: "shipping_address is needed. If not provided, then
    # billing_address is used to compute tax. If that's not available either, the tax is zero."
    ship, bill = {"country": "US", "state_code": "NY"}, {"country": "DE"}
    assert T.taxable_address(ship, bill) is ship
    assert T.taxable_address({"city": "x"}, bill) is bill
    assert T.taxable_address(None, None) is None
    assert T.select_rule([rule(country="US")], None, 0) is None


# ---- who and what is taxed ----------------------------------------------------------------------

def test_an_exempt_customer_pays_no_tax():
    inv = D.recompute(invoice(10000), taxes=T.basis_for(rule(country="US"), exempt=True))
    assert inv["tax"] == 0 and inv["taxes"] == [] and inv["amount"] == 10000
    assert inv["line_items"][0]["is_taxed"] is False and "tax_rate" not in inv["line_items"][0]


def test_lines_of_untaxed_plans_and_addons_are_not_taxed():
    inv = invoice(10000, 2000)
    inv["line_items"][1]["entity_type"] = "addon"
    inv["line_items"].append({**inv["line_items"][0], "entity_type": "plan_setup", "amount": 500})
    inv["line_items"].append({**inv["line_items"][0], "entity_type": "adhoc", "amount": 300, "entity_id": None})
    b = T.basis_for(rule(country="US"), untaxed=frozenset({("plan", "p0")}))
    D.recompute(inv, taxes=b)
    assert [li["tax"] for li in inv["line_items"]] == [0, 200, 0, 30]  # the setup fee is its plan's
    assert [li["is_taxed"] for li in inv["line_items"]] == [False, True, False, True]
    assert inv["tax"] == 230 and inv["amount"] == 12800 + 230


def test_no_basis_keeps_the_tax_the_lines_carry():
    inv = D.recompute(invoice(10000), taxes=basis(5))
    inv["amount_paid"] = 500
    D.recompute(inv)
    assert inv["tax"] == 500 and inv["amount_due"] == 10000


# ---- discounts, promotional credits, closing ----------------------------------------------------

def test_discounts_come_off_before_tax_shared_by_amount():
    inv = D.recompute(invoice(6000, 4000, discounts=(("coupon", 1000),)), taxes=basis(10))
    assert [li["tax"] for li in inv["line_items"]] == [540, 360]
    assert inv["tax"] == 900 and inv["amount"] == 10000 - 1000 + 900


def test_inclusive_price_with_a_discount():
    inv = D.recompute(invoice(11000, discounts=(("coupon", 1100),)), taxes=basis(10, price_type=T.INCLUSIVE))
    assert inv["tax"] == 900 and inv["amount"] == 9900


def test_closing_takes_promotional_credits_before_tax():
    # SEMANTICS.md: promotional credits act as a discount before tax; refundable credits and
    # excess payments are applied to the taxed amount.
    inv = D.recompute(invoice(10000), taxes=basis(10))
    assert inv["amount"] == 11000
    payer = closing.Payer(auto_collection=True, card_usable=True)
    out = closing.close(inv, balances=closing.Balances(promotional=2000, refundable=500), payer=payer, now=5,
                        taxes=basis(10))
    closed = out.invoice
    assert out.promotional == 2000 and out.refundable == 500
    assert closed["tax"] == 800 and closed["amount"] == 8800 and closed["amount_due"] == 8300
    assert out.charge == 8300


def test_promotional_credits_cover_at_most_the_pre_tax_amount():
    out = closing.close(D.recompute(invoice(10000), taxes=basis(10)),
                        balances=closing.Balances(promotional=50000, refundable=50000),
                        payer=closing.Payer(auto_collection=True, card_usable=True), now=5, taxes=basis(10))
    assert out.promotional == 10000 and out.invoice["tax"] == 0 and out.refundable == 0
    assert out.invoice["status"] == "paid"


def test_discount_shares_add_up():
    assert T.discount_shares([1, 1, 1], 2) == [1, 1, 0]
    assert T.discount_shares([100, 0, 300], 1000) == [100, 0, 300]
    assert T.discount_shares([], 5) == []


# ---- properties -----------------------------------------------------------------------------------

rates = st.lists(st.decimals(min_value=0, max_value=100, places=3), min_size=1, max_size=4)
amounts = st.lists(st.integers(0, 10**9), min_size=1, max_size=6)


@given(amounts, rates, st.integers(0, 2 * 10**9), st.sampled_from(T.PRICE_TYPES))
def test_totals_add_up_and_never_go_negative(lines, rs, discount, price_type):
    b = T.Basis(price_type=price_type, taxes=tuple(T.Tax(f"T{i}", Fraction(r)) for i, r in enumerate(rs)))
    inv = D.recompute(invoice(*lines, discounts=(("coupon", discount),)), taxes=b)
    line_taxes = [li["tax"] for li in inv["line_items"]]
    assert min(line_taxes) >= 0 and inv["tax"] == sum(line_taxes) == sum(t["amount"] for t in inv["taxes"])
    taxable = max(0, sum(lines) - discount)
    rate = b.rate
    bound = Fraction(len(lines) * len(rs), 2)  # half a minor unit per line and tax
    if price_type == T.EXCLUSIVE:
        assert inv["amount"] == taxable + inv["tax"]
        assert abs(inv["tax"] - Fraction(taxable) * rate / 100) <= bound
    else:
        assert inv["amount"] == taxable
        assert inv["tax"] <= inv["amount"] or inv["amount"] == 0
        assert abs(inv["tax"] - Fraction(taxable) * rate / (100 + rate)) <= bound
    assert inv["amount_due"] >= 0


@given(amounts, st.integers(0, 2 * 10**9))
def test_shares_are_exact_and_within_each_line(lines, discount):
    shares = T.discount_shares(lines, discount)
    assert sum(shares) == min(discount, sum(lines))
    assert all(0 <= s <= a for s, a in zip(shares, lines))


@given(amounts, rates, st.integers(0, 10**9), st.integers(0, 10**9), st.sampled_from(T.PRICE_TYPES))
def test_closing_never_charges_more_than_the_taxed_amount(lines, rs, promo, refundable, price_type):
    b = T.Basis(price_type=price_type, taxes=tuple(T.Tax(f"T{i}", Fraction(r)) for i, r in enumerate(rs)))
    inv = D.recompute(invoice(*lines), taxes=b)
    out = closing.close(inv, balances=closing.Balances(promo, refundable),
                        payer=closing.Payer(auto_collection=True, card_usable=True), now=1, taxes=b)
    closed = out.invoice
    assert 0 <= closed["amount"] <= inv["amount"]
    assert closed["amount_due"] == closed["amount"] - out.refundable >= 0
    assert out.charge == closed["amount_due"]
