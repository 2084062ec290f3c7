"""Payment intents over HTTP: create/update/retrieve, the test gateway's authorize step (billhive
extension), and storing the card with credit_card_using_payment_intent or create_a_customer."""

from __future__ import annotations

import pytest

from tests.support.customers import (
    GENESIS,
    MASTERCARD,
    REFUSED,
    VISA,
    card,
    create_customer,
    events,
    start_afresh,
    travel,
)


def new_intent(api, **params) -> dict:
    return api.post("/payment_intents", {"amount": 1000, "currency_code": "USD", **params})["payment_intent"]


def authorize(api, intent_id: str, number: str = VISA, **kw) -> dict:
    return api.post(f"/payment_intents/{intent_id}/authorize", card(number, prefix="", **kw))["payment_intent"]


def test_create_retrieve_update(api):
    start_afresh(api)
    pi = new_intent(api, success_url="https://example.com/ok")
    assert pi["status"] == "inited" and pi["amount"] == 1000 and pi["currency_code"] == "USD"
    assert pi["object"] == "payment_intent" and pi["gateway"] == "chargebee"
    assert pi["created_at"] == pi["modified_at"] == GENESIS and pi["expires_at"] == GENESIS + 1800
    assert pi["customer_id"] and pi["success_url"] == "https://example.com/ok"
    assert pi["gateway_account_id"] == "gw_chargebee"
    assert api.get(f"/payment_intents/{pi['id']}")["payment_intent"] == pi
    upd = api.post(f"/payment_intents/{pi['id']}", {"amount": 2500, "failure_url": "https://example.com/no"})[
        "payment_intent"]
    assert upd["amount"] == 2500 and upd["failure_url"] == "https://example.com/no" and upd["status"] == "inited"
    assert api.get(f"/payment_intents/{pi['id']}")["payment_intent"] == upd


def test_three_ds_flow_stores_the_card(api):
    create_customer(api, id="c")
    pi = new_intent(api, customer_id="c")
    assert pi["customer_id"] == "c"
    pi = authorize(api, pi["id"], MASTERCARD, first_name="Ada")
    assert pi["status"] == "authorized"
    attempt = pi["active_payment_attempt"]
    assert attempt["status"] == "authorized" and attempt["id_at_gateway"].startswith("tok_")
    body = api.post("/customers/c/credit_card_using_payment_intent", {"payment_intent_id": pi["id"]}).body
    assert body["card"]["card_type"] == "mastercard" and body["card"]["first_name"] == "Ada"
    assert body["card"]["reference_id"] == attempt["id_at_gateway"]
    assert body["customer"]["payment_method"]["reference_id"] == attempt["id_at_gateway"]
    assert api.get(f"/payment_intents/{pi['id']}")["payment_intent"]["status"] == "consumed"
    assert events(api, "card_added")[0]["content"] == body
    r = api.post("/customers/c/credit_card_using_payment_intent", {"payment_intent_id": pi["id"]}, expect=400)
    assert r["api_error_code"] == "payment_intent_invalid" and r["param"] == "payment_intent_id"


def test_unbound_intent_serves_any_customer_and_create_customer(api):
    pi = authorize(api, new_intent(api)["id"])
    body = api.post("/customers", {"id": "new", "payment_intent[id]": pi["id"]}).body
    assert body["card"]["last4"] == "1111" and body["customer"]["payment_method"]["type"] == "card"
    assert [e["event_type"] for e in events(api)] == ["card_added", "customer_created"]


def test_intent_of_another_customer_or_not_authorized_is_refused(api):
    create_customer(api, id="a")
    create_customer(api, id="b")
    pi = new_intent(api, customer_id="a")
    r = api.post("/customers/b/credit_card_using_payment_intent", {"payment_intent_id": pi["id"]}, expect=400)
    assert r["api_error_code"] == "payment_intent_invalid"
    authorize(api, pi["id"])
    r = api.post("/customers/b/credit_card_using_payment_intent", {"payment_intent_id": pi["id"]}, expect=400)
    assert r["api_error_code"] == "payment_intent_invalid"
    r = api.post("/customers", {"id": "c", "payment_intent[id]": pi["id"]}, expect=400)
    assert r["param"] == "payment_intent[id]"
    api.get("/customers/c", expect=404)
    api.get("/cards/b", expect=404)


def test_refused_card_leaves_the_intent_inited(api):
    pi = new_intent(api)
    r = api.post(f"/payment_intents/{pi['id']}/authorize", card(REFUSED, prefix=""), expect=400)
    assert r["api_error_code"] == "payment_method_verification_failed" and r["param"] == "number"
    assert api.get(f"/payment_intents/{pi['id']}")["payment_intent"]["status"] == "inited"
    authorize(api, pi["id"])
    r = api.post(f"/payment_intents/{pi['id']}/authorize", card(VISA, prefix=""), expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"


def test_intents_expire_after_30_minutes(api):
    start_afresh(api)
    create_customer(api, id="c")
    pi = authorize(api, new_intent(api)["id"])
    travel(api, GENESIS + 1801)
    assert api.get(f"/payment_intents/{pi['id']}")["payment_intent"]["status"] == "expired"
    r = api.post(f"/payment_intents/{pi['id']}", {"amount": 1}, expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"
    r = api.post("/customers/c/credit_card_using_payment_intent", {"payment_intent_id": pi["id"]}, expect=400)
    assert r["api_error_code"] == "payment_intent_invalid"


@pytest.mark.parametrize("params, param", [
    ({"currency_code": "USD"}, "amount"),
    ({"amount": 100}, "currency_code"),
    ({"amount": -1, "currency_code": "USD"}, "amount"),
    ({"amount": "1.5", "currency_code": "USD"}, "amount"),
    ({"amount": 100, "currency_code": "EUR"}, "currency_code"),
    ({"amount": 100, "currency_code": "USDX"}, "currency_code"),
    ({"amount": 100, "currency_code": "USD", "gateway_account_id": "gw_stripe"}, "gateway_account_id"),
])
def test_create_bad_input(api, params, param):
    r = api.post("/payment_intents", params, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == param


def test_bad_input_on_update_authorize_and_use(api):
    pi = new_intent(api)
    assert api.post(f"/payment_intents/{pi['id']}", {"amount": -5}, expect=400)["param"] == "amount"
    assert api.post(f"/payment_intents/{pi['id']}", {"currency_code": "GBP"}, expect=400)["param"] == "currency_code"
    r = api.post(f"/payment_intents/{pi['id']}/authorize", {"number": VISA, "expiry_month": 12}, expect=400)
    assert r["param"] == "expiry_year" and r["error_code"] == "param_not_present"
    assert api.post(f"/payment_intents/{pi['id']}/authorize", card("4111", prefix=""), expect=400)["param"] == \
        "number"
    create_customer(api, id="c")
    r = api.post("/customers/c/credit_card_using_payment_intent", {}, expect=400)
    assert r["param"] == "payment_intent_id" and r["error_code"] == "param_not_present"
    r = api.post("/customers/c/credit_card_using_payment_intent", {"gw_token": "x"}, expect=400)
    assert r["api_error_code"] == "invalid_request" and r["param"] == "payment_intent_id"
    r = api.post("/customers/c/credit_card_using_payment_intent", {"payment_intent_id": "nope"}, expect=404)
    assert r["param"] == "payment_intent_id"
    api.post("/customers/nobody/credit_card_using_payment_intent", {"payment_intent_id": pi["id"]}, expect=404)
    api.get("/payment_intents/nope", expect=404)
    api.post("/payment_intents/nope", {"amount": 1}, expect=404)
    api.post("/payment_intents/nope/authorize", card(VISA, prefix=""), expect=404)


def test_other_sites_intents_are_invisible(api, make_site):
    other = make_site()
    theirs = authorize(other.api, new_intent(other.api)["id"])
    assert api.get(f"/payment_intents/{theirs['id']}", expect=404)["api_error_code"] == "resource_not_found"
    api.post(f"/payment_intents/{theirs['id']}", {"amount": 1}, expect=404)
    create_customer(api, id="mine")
    api.post("/customers/mine/credit_card_using_payment_intent", {"payment_intent_id": theirs["id"]}, expect=404)
    assert other.api.get(f"/payment_intents/{theirs['id']}")["payment_intent"]["status"] == "authorized"
