"""Hostile input: every value beyond what billhive holds is a 400 naming the parameter, and changes
nothing (issue 10, items 6 and 8). Limits: docs/CHOICES.md, "Limits".

- filter values beyond int64 and timestamps beyond 9999; forged ``offset`` cursors; too many
  filters (SQLite's expression depth), too many [in] values; non-ASCII or endless digits;
- amounts and totals beyond money.MAX_AMOUNT (2^53 - 1 minor units): parameters, balances,
  price x quantity, sums of charges on an invoice and on a subscription's term;
- meta_data JSON nested deeper than the encoder (and the stores) can hold.
"""

from __future__ import annotations

import base64
import json
import time

import orjson
import pytest

from billhive.domain.money import MAX_AMOUNT
from billhive.services import credits
from billhive.store.lists import MAX_FILTER_VALUES, MAX_FILTERS, filter_fields
from billhive.store.resources import INVOICES
from tests.support import factories
from tests.support.customers import create_customer

INT64_MAX = 2**63 - 1
NESTED_300 = '{"a":' * 300 + "1" + "}" * 300


def state(site) -> dict:
    """Everything a failed request could have touched on the site (read through the API)."""
    api = site.api
    out = {name: api.get(f"/{name}", {"limit": 100}).body for name in
           ("customers", "subscriptions", "invoices", "transactions", "plans", "addons", "events")}
    out["ledger"] = site.app.db.read_sync(lambda tx: [credits.ledger(tx, site.pk, c["customer"]["id"])
                                                      for c in out["customers"]["list"]])
    return out


def refused(site, method: str, path: str, data: dict, param: str) -> dict:
    """``method path data`` answers 400 param_wrong_value naming ``param``, and changes nothing."""
    before = state(site)
    if method == "GET":
        body = site.api.get(path, data, expect=400).body
    else:
        body = site.api.post(path, data, expect=400).body
    assert (body["api_error_code"], body.get("param"), body["http_status_code"]) == \
        ("param_wrong_value", param, 400), body
    assert body["type"] == "invalid_request" and body["error_code"] == "param_wrong_value"
    assert state(site) == before
    return body


def offset(*values) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


# ---- list filters and cursors ---------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("amount[gt]", str(2**63)),
    ("amount[is]", "99999999999999999999"),
    ("amount[in]", f"[1,{2**63}]"),
    ("amount[between]", f"[1,{2**63}]"),
    ("created_at[after]", "99999999999999999999"),
    ("created_at[before]", str(2**63)),
    ("created_at[on]", "99999999999999"),
    ("created_at[on]", "-99999999999999"),
    ("created_at[between]", "[0,99999999999999]"),
    ("amount[is]", "1" * 5000),  # int() refuses more than 4,300 digits
    ("amount[is]", "\u0665"),  # ARABIC-INDIC DIGIT FIVE: int() takes it, the wire does not
    ("amount[gte]", " 5"),
    ("id[in]", '[{"a":1}]'),
    ("id[in]", "[null]"),
    ("id[in]", "[" + ",".join(f"x{i}" for i in range(MAX_FILTER_VALUES + 1)) + "]"),
])
def test_filter_values_beyond_what_columns_hold_are_400(site, key, value):
    refused(site, "GET", "/invoices", {key: value}, key)


def test_filter_on_day_and_bounds_still_work(api, site):
    cust = factories.customer(site, card=None, auto_collection="off")
    factories.pending_invoice(site, cust["id"])
    now = int(time.time())
    assert len(api.get("/invoices", {"created_at[on]": now}).body["list"]) == 1
    assert len(api.get("/invoices", {"created_at[on]": now - 2 * 86400}).body["list"]) == 0
    assert len(api.get("/invoices", {"amount[lt]": INT64_MAX, "created_at[after]": 0}).body["list"]) == 1
    values = "[" + ",".join(f"x{i}" for i in range(MAX_FILTER_VALUES - 1)) + f",{cust['id']}]"
    assert len(api.get("/invoices", {"customer_id[in]": values}).body["list"]) == 1


@pytest.mark.parametrize("token", [
    offset("created_at", 1, {"a": 1}, 1),
    offset("created_at", 1, [1], 1),
    offset("created_at", 1, None, 1),
    offset("created_at", 1, "x", 1),
    offset("created_at", 1, True, 1),
    offset("created_at", 1, 1.5, 1),
    offset("created_at", 1, 10**30, 1),
    offset("created_at", 1, 1, True),
    offset("created_at", 1, 1, None),
    offset("created_at", 2, 1, 1),
    offset("created_at", 1, 1, 1, 1),
])
def test_forged_offsets_are_400(site, token):
    factories.customer(site, card=None)
    refused(site, "GET", "/customers", {"offset": token}, "offset")


def test_a_real_offset_still_pages(api, site):
    for _ in range(3):
        factories.customer(site, card=None)
    first = api.get("/customers", {"limit": 2}).body
    rest = api.get("/customers", {"limit": 2, "offset": first["next_offset"]}).body
    assert len(first["list"]) == 2 and len(rest["list"]) == 1


def _distinct_filters(n: int) -> list[tuple[str, str]]:
    """n distinct valid filters on invoices (each field x operator pair once)."""
    pairs = []
    for ff in filter_fields(INVOICES).values():
        one = ff.enum[0] if ff.enum else "1"
        for op in ff.ops:
            value = {"in": f"[{one}]", "not_in": f"[{one}]", "between": "[1,2]", "is_present": "true"}.get(op, one)
            pairs.append((f"{ff.name}[{op}]", value))
    assert len(pairs) > n, len(pairs)
    return pairs[:n]


def test_filters_beyond_the_cap_are_400(api, site):
    assert api.get("/invoices", _distinct_filters(MAX_FILTERS)).status == 200
    many = _distinct_filters(MAX_FILTERS + 1)
    refused(site, "GET", "/invoices", many, many[-1][0])


def test_1200_filters_are_400_not_sqlite_expression_depth(site):
    pairs = [("id[is_not]", f"x{i}") for i in range(1200)]
    refused(site, "GET", "/customers", pairs, "id[is_not]")


def test_a_filter_given_twice_is_400(site):
    refused(site, "GET", "/customers", [("id[is_not]", "a"), ("id[is_not]", "b")], "id[is_not]")


# ---- amounts and totals ------------------------------------------------------------------------------

@pytest.mark.parametrize("path, data, param", [
    ("/plans", {"id": "p", "name": "P", "price": INT64_MAX}, "price"),
    ("/plans", {"id": "p", "name": "P", "price": MAX_AMOUNT + 1}, "price"),
    ("/plans", {"id": "p", "name": "P", "price": 1, "setup_cost": 2**63}, "setup_cost"),
    ("/coupons", {"id": "c", "name": "C", "discount_type": "fixed_amount", "discount_amount": MAX_AMOUNT + 1,
                  "duration_type": "forever"}, "discount_amount"),
    ("/plans", {"id": "p", "name": "P", "price": "٥"}, "price"),
    ("/plans", {"id": "p", "name": "P", "price": "9" * 5000}, "price"),
])
def test_amount_parameters_beyond_the_maximum_are_400(site, path, data, param):
    refused(site, "POST", path, data, param)


def test_amount_at_the_maximum_is_accepted(api):
    assert api.post("/plans", {"id": "p", "name": "P", "price": MAX_AMOUNT})["plan"]["price"] == MAX_AMOUNT


def test_credits_beyond_the_maximum_balance_are_400(api, site):
    create_customer(api, id="c")
    api.post("/customers/c/add_account_credits", {"amount": MAX_AMOUNT - 10, "description": "a lot"})
    refused(site, "POST", "/customers/c/add_account_credits", {"amount": 11, "description": "one too many"}, "amount")
    refused(site, "POST", "/customers/c/add_account_credits", {"amount": INT64_MAX, "description": "x"}, "amount")
    assert api.post("/customers/c/add_account_credits", {"amount": 10, "description": "to the brim"}
                    )["customer"]["account_credits"] == MAX_AMOUNT


def test_overpayment_beyond_the_maximum_excess_balance_is_400(api, site):
    create_customer(api, id="c", auto_collection="off")
    charge = {"customer_id": "c", "charges[amount][0]": 1000, "charges[description][0]": "x"}
    first, second = (api.post("/invoices", charge)["invoice"]["id"] for _ in range(2))
    paid = {"payment_method": "cash", "paid_at": int(time.time()) - 60}
    api.post(f"/invoices/{first}/record_payment", {**paid, "amount": MAX_AMOUNT})  # excess: MAX - 1000
    refused(site, "POST", f"/invoices/{second}/record_payment", {**paid, "amount": 2001}, "amount")
    api.post(f"/invoices/{second}/record_payment", {**paid, "amount": 2000})
    assert api.get("/customers/c")["customer"]["excess_payments"] == MAX_AMOUNT


def test_price_times_quantity_beyond_the_maximum_is_400(api, site):
    create_customer(api, id="c", auto_collection="off")
    api.post("/plans", {"id": "huge", "name": "Huge", "price": MAX_AMOUNT})
    refused(site, "POST", "/customers/c/subscriptions", {"plan_id": "huge", "plan_quantity": 2}, "plan_quantity")
    refused(site, "POST", "/customers/c/subscriptions", {"plan_id": "huge", "plan_quantity": 2**31 - 1},
            "plan_quantity")
    # a trial bills nothing now, but its renewals would: refused all the same
    refused(site, "POST", "/customers/c/subscriptions",
            {"plan_id": "huge", "plan_quantity": 2, "trial_end": int(time.time()) + 86400}, "plan_quantity")
    assert api.post("/customers/c/subscriptions", {"plan_id": "huge"})["invoice"]["amount"] == MAX_AMOUNT


def test_setup_cost_and_addons_beyond_the_maximum_are_400(api, site):
    create_customer(api, id="c", auto_collection="off")
    api.post("/plans", {"id": "setup", "name": "S", "price": 1, "setup_cost": MAX_AMOUNT})
    refused(site, "POST", "/customers/c/subscriptions", {"plan_id": "setup"}, "plan_id")
    api.post("/plans", {"id": "basic", "name": "B", "price": 100})
    api.post("/addons", {"id": "big", "name": "Big", "charge_type": "non_recurring", "type": "quantity",
                         "price": MAX_AMOUNT // 2})
    refused(site, "POST", "/customers/c/subscriptions",
            {"plan_id": "basic", "addons[id][0]": "big", "addons[quantity][0]": 2}, "addons[quantity][0]")
    refused(site, "POST", "/invoices", {"customer_id": "c", "addons[id][0]": "big", "addons[quantity][0]": 3},
            "addons[quantity][0]")
    refused(site, "POST", "/invoices/charge_addon", {"customer_id": "c", "addon_id": "big", "addon_quantity": 3},
            "addon_quantity")


def test_subscription_changes_beyond_the_maximum_are_400(api, site):
    create_customer(api, id="c", auto_collection="off")
    api.post("/plans", {"id": "basic", "name": "B", "price": 100})
    api.post("/plans", {"id": "huge", "name": "H", "price": MAX_AMOUNT})
    sub = api.post("/customers/c/subscriptions", {"plan_id": "basic"})["subscription"]["id"]
    refused(site, "POST", f"/subscriptions/{sub}", {"plan_id": "huge", "plan_quantity": 2}, "plan_quantity")
    refused(site, "POST", f"/subscriptions/{sub}", {"plan_id": "huge", "plan_quantity": 2, "end_of_term": "true"},
            "plan_quantity")
    refused(site, "POST", f"/subscriptions/{sub}/add_charge_at_term_end",
            {"amount": MAX_AMOUNT, "description": "with the plan's 100: one too many"}, "amount")
    api.post(f"/subscriptions/{sub}/add_charge_at_term_end", {"amount": MAX_AMOUNT - 100, "description": "fits"})
    refused(site, "POST", f"/subscriptions/{sub}/add_charge_at_term_end", {"amount": 1, "description": "x"}, "amount")


def test_charges_on_one_invoice_beyond_the_maximum_are_400(api, metered_site):
    site = metered_site
    cust = factories.customer(site, card=None, auto_collection="off")
    inv = factories.pending_invoice(site, cust["id"], lines=((MAX_AMOUNT - 1000, "big"),))
    refused(site, "POST", f"/invoices/{inv['id']}/add_charge", {"amount": 1001, "description": "x"}, "amount")
    refused(site, "POST", f"/invoices/{inv['id']}/add_charge", {"amount": INT64_MAX, "description": "x"}, "amount")
    after = site.api.post(f"/invoices/{inv['id']}/add_charge", {"amount": 1000, "description": "x"}).body["invoice"]
    assert after["sub_total"] == after["amount"] == MAX_AMOUNT
    refused(site, "POST", "/invoices", {"customer_id": cust["id"], "charges[amount][0]": MAX_AMOUNT,
                                        "charges[description][0]": "a", "charges[amount][1]": MAX_AMOUNT,
                                        "charges[description][1]": "b"}, "charges[amount][1]")
    refused(site, "POST", "/invoices", {"customer_id": cust["id"], "charges[amount][0]": INT64_MAX,
                                        "charges[description][0]": "a", "charges[amount][1]": INT64_MAX,
                                        "charges[description][1]": "b"}, "charges[amount][0]")


# ---- timestamps and JSON --------------------------------------------------------------------------------

@pytest.mark.parametrize("path, data, param", [
    ("/time_machines/delorean/travel_forward", {"destination_time": 99999999999999}, "destination_time"),
    ("/time_machines/delorean/start_afresh", {"genesis_time": INT64_MAX}, "genesis_time"),
])
def test_timestamps_beyond_year_9999_are_400(site, path, data, param):
    refused(site, "POST", path, data, param)


def test_subscription_dates_beyond_year_9999_are_400(api, site):
    create_customer(api, id="c", auto_collection="off")
    api.post("/plans", {"id": "basic", "name": "B", "price": 100})
    refused(site, "POST", "/customers/c/subscriptions", {"plan_id": "basic", "start_date": 99999999999999},
            "start_date")
    refused(site, "POST", "/customers/c/subscriptions", {"plan_id": "basic", "trial_end": INT64_MAX}, "trial_end")
    refused(site, "GET", "/events", {"start_time": 2**63}, "start_time")


@pytest.mark.parametrize("meta", [NESTED_300, "[" * 300 + "]" * 300, '{"a":[' * 200 + "1" + "]}" * 200,
                                  '{"a":' * 33 + "1" + "}" * 33])
def test_meta_data_nested_too_deep_is_400(site, meta):
    refused(site, "POST", "/customers", {"first_name": "a", "meta_data": meta}, "meta_data")


def test_meta_data_nested_32_deep_is_kept(api):
    meta = '{"a":' * 32 + "1" + "}" * 32
    cust = api.post("/customers", {"first_name": "a", "meta_data": meta})["customer"]
    assert api.get(f"/customers/{cust['id']}")["customer"]["meta_data"] == orjson.loads(meta)
