"""Promotional (account) credits over HTTP: add, deduct, set; the ledger; bad money."""

from __future__ import annotations

import pytest

from billhive.services import credits
from tests.support.customers import VISA, card, create_customer, events


def ledger(site, customer_id: str) -> list[dict]:
    return site.app.db.read_sync(lambda tx: credits.ledger(tx, site.pk, customer_id))


def ledger_sum(site, customer_id: str) -> int:
    return site.app.db.read_sync(lambda tx: credits.ledger_sum(tx, site.pk, customer_id, "promotional"))


def test_add_deduct_set(api, site):
    create_customer(api, id="c", **card(VISA))
    cust = api.post("/customers/c/add_account_credits", {"amount": 1000, "description": "welcome"}).body
    assert set(cust) == {"customer"} and cust["customer"]["account_credits"] == 1000
    cust = api.post("/customers/c/deduct_account_credits", {"amount": 300, "description": "used"})["customer"]
    assert cust["account_credits"] == 700
    cust = api.post("/customers/c/set_account_credits", {"amount": 50, "description": "reset"})["customer"]
    assert cust["account_credits"] == 50
    assert cust["refundable_credits"] == 0 and cust["excess_payments"] == 0
    assert api.get("/customers/c")["customer"]["account_credits"] == 50
    rows = ledger(site, "c")
    assert [(r["kind"], r["amount"], r["balance_after"], r["reason"], r["description"]) for r in rows] == [
        ("promotional", 1000, 1000, "add", "welcome"),
        ("promotional", -300, 700, "deduct", "used"),
        ("promotional", -650, 50, "set", "reset"),
    ]
    assert all(r["source"] == "api" and r["user"] == "full_access_key" for r in rows)
    assert ledger_sum(site, "c") == 50
    changed = events(api, "customer_changed")
    assert [e["content"]["customer"]["account_credits"] for e in changed] == [50, 700, 1000]
    assert changed[0]["content"]["card"]["last4"] == "1111"


def test_deduct_beyond_balance_changes_nothing(api, site):
    create_customer(api, id="c")
    api.post("/customers/c/add_account_credits", {"amount": 100, "description": "x"})
    r = api.post("/customers/c/deduct_account_credits", {"amount": 101, "description": "too much"}, expect=400)
    assert r["api_error_code"] == "invalid_request" and r["param"] == "amount"
    assert "100" in r["message"]
    assert api.get("/customers/c")["customer"]["account_credits"] == 100
    assert len(ledger(site, "c")) == 1 and len(events(api, "customer_changed")) == 1


def test_set_to_zero_and_to_the_same_value(api, site):
    create_customer(api, id="c")
    assert api.post("/customers/c/set_account_credits", {"amount": 0, "description": "noop"})["customer"][
        "account_credits"] == 0
    assert ledger(site, "c") == [] and events(api, "customer_changed") == []
    api.post("/customers/c/set_account_credits", {"amount": 75, "description": "set"})
    assert api.post("/customers/c/set_account_credits", {"amount": 0, "description": "clear"})["customer"][
        "account_credits"] == 0
    assert ledger_sum(site, "c") == 0 and len(events(api, "customer_changed")) == 2


@pytest.mark.parametrize("op", ["add_account_credits", "deduct_account_credits", "set_account_credits"])
@pytest.mark.parametrize("amount", ["-1", "1.5", "ten", "1e3", "9223372036854775808"])
def test_bad_money(api, op, amount):
    create_customer(api, id="c")
    r = api.post(f"/customers/c/{op}", {"amount": amount, "description": "x"}, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == "amount"


@pytest.mark.parametrize("op", ["add_account_credits", "deduct_account_credits"])
def test_zero_is_not_an_amount_to_add_or_deduct(api, op):
    create_customer(api, id="c")
    r = api.post(f"/customers/c/{op}", {"amount": 0, "description": "x"}, expect=400)
    assert r["param"] == "amount"


@pytest.mark.parametrize("op", ["add_account_credits", "deduct_account_credits", "set_account_credits"])
def test_required_params(api, op):
    create_customer(api, id="c")
    r = api.post(f"/customers/c/{op}", {"description": "x"}, expect=400)
    assert r["param"] == "amount" and r["error_code"] == "param_not_present"
    r = api.post(f"/customers/c/{op}", {"amount": 1}, expect=400)
    assert r["param"] == "description" and r["error_code"] == "param_not_present"
    r = api.post(f"/customers/c/{op}", {"amount": 1, "description": "x" * 251}, expect=400)
    assert r["param"] == "description"
    assert api.post(f"/customers/nobody/{op}", {"amount": 1, "description": "x"}, expect=404)[
        "api_error_code"] == "resource_not_found"
    assert api.get("/customers/c")["customer"]["account_credits"] == 0


def test_other_sites_credits_untouched(api, make_site):
    other = make_site()
    create_customer(other.api, id="theirs")
    other.api.post("/customers/theirs/add_account_credits", {"amount": 500, "description": "x"})
    for op in ("add_account_credits", "deduct_account_credits", "set_account_credits"):
        r = api.post(f"/customers/theirs/{op}", {"amount": 1, "description": "x"}, expect=404)
        assert "500" not in str(r.body)
    assert other.api.get("/customers/theirs")["customer"]["account_credits"] == 500
