"""The unmodified chargebee 1.6.6 SDK against billhive: customers, cards, credits, addresses,
payment intents, and the SDK's typed errors."""

from __future__ import annotations

import chargebee
import pytest
from chargebee.models.payment_intent import (
    PaymentIntent,  # 1.6.6 does not export it from the package
)

from tests.support import sdk
from tests.support.customers import (
    FUTURE_YEAR,
    MASTERCARD,
    REFUSED,
    VISA,
    seed_subscription,
)


@pytest.fixture
def cb(server, site):
    sdk.configure(server, site)
    return site


def _card(number: str = VISA, year: int = FUTURE_YEAR) -> dict:
    return {"number": number, "expiry_month": 12, "expiry_year": year, "cvv": "123"}


def test_create_customer_with_card_and_retrieve(cb):
    result = chargebee.Customer.create({"id": "sdk-1", "first_name": "Ada", "email": "ada@example.com",
                                        "card": _card(), "billing_address": {"line1": "1 Way", "country": "GB"},
                                        "meta_data": {"plan": "gold"}})
    assert result.customer.id == "sdk-1" and result.customer.auto_collection == "on"
    assert result.customer.billing_address.country == "GB"
    assert result.customer.payment_method.type == "card"
    assert result.customer.meta_data == {"plan": "gold"}
    assert result.card.last4 == "1111" and result.card.card_type == "visa"
    got = chargebee.Customer.retrieve("sdk-1")
    assert got.customer.email == "ada@example.com" and got.card.masked_number == "************1111"
    assert chargebee.Card.retrieve("sdk-1").card.customer_id == "sdk-1"


def test_update_list_contacts_and_delete(cb):
    chargebee.Customer.create({"id": "sdk-2", "first_name": "Grace"})
    chargebee.Customer.create({"id": "sdk-3", "first_name": "Alan"})
    assert chargebee.Customer.update("sdk-2", {"company": "Navy", "auto_collection": "off"}).customer.company == \
        "Navy"
    chargebee.Customer.update_billing_info("sdk-2", {"vat_number": "US1", "billing_address": {"city": "NYC"}})
    result = chargebee.Customer.add_contact("sdk-2", {"contact": {"id": "ct1", "email": "g@example.com",
                                                                  "enabled": True}})
    assert result.customer.contacts[0].id == "ct1" and result.customer.contacts[0].enabled is True
    chargebee.Customer.delete_contact("sdk-2", {"contact": {"id": "ct1"}})
    listed = chargebee.Customer.list({"limit": 1})
    assert [e.customer.id for e in listed] == ["sdk-3"] and listed.next_offset
    nxt = chargebee.Customer.list({"limit": 1, "offset": listed.next_offset})
    assert [e.customer.id for e in nxt] == ["sdk-2"]
    assert chargebee.Customer.delete("sdk-3").customer.id == "sdk-3"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Customer.retrieve("sdk-3")
    assert exc.value.http_status_code == 404 and exc.value.api_error_code == "resource_not_found"


def test_account_credits(cb):
    chargebee.Customer.create({"id": "sdk-4"})
    assert chargebee.Customer.add_account_credits("sdk-4", {"amount": 500, "description": "promo"}) \
        .customer.account_credits == 500
    assert chargebee.Customer.deduct_account_credits("sdk-4", {"amount": 200, "description": "used"}) \
        .customer.account_credits == 300
    assert chargebee.Customer.set_account_credits("sdk-4", {"amount": 1000, "description": "set"}) \
        .customer.account_credits == 1000
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Customer.deduct_account_credits("sdk-4", {"amount": 5000, "description": "too much"})
    assert exc.value.param == "amount" and exc.value.api_error_code == "invalid_request"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Customer.add_account_credits("sdk-4", {"amount": -5, "description": "negative"})
    assert exc.value.param == "amount" and exc.value.api_error_code == "param_wrong_value"


def test_cards_through_the_sdk(cb):
    chargebee.Customer.create({"id": "sdk-5"})
    result = chargebee.Card.update_card_for_customer("sdk-5", {"gateway": "chargebee", **_card(MASTERCARD)})
    assert result.card.card_type == "mastercard" and result.customer.payment_method.status == "valid"
    with pytest.raises(chargebee.PaymentError) as exc:
        chargebee.Card.update_card_for_customer("sdk-5", _card(REFUSED))
    assert exc.value.api_error_code == "payment_method_verification_failed" and "3009" in str(exc.value)
    with pytest.raises(chargebee.PaymentError) as exc:
        chargebee.Customer.create({"card": _card(year=2001)})
    assert exc.value.param == "card[expiry_year]"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Customer.create({"card": _card(number="4111111111111112")})
    assert exc.value.param == "card[number]" and exc.value.api_error_code == "param_wrong_value"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Card.switch_gateway_for_customer("sdk-5", {"gateway": "stripe"})
    assert exc.value.api_error_code == "configuration_incompatible"
    assert chargebee.Card.delete_card_for_customer("sdk-5").customer.auto_collection == "off"
    with pytest.raises(chargebee.InvalidRequestError):
        chargebee.Card.retrieve("sdk-5")


def test_payment_intent_and_address(cb):
    # chargebee 1.6.6 sends payment intent requests, but Result.payment_intent raises NameError (the
    # SDK never imports the model): read the raw response instead.
    chargebee.Customer.create({"id": "sdk-6"})
    pi = PaymentIntent.create({"amount": 500, "currency_code": "USD", "customer_id": "sdk-6"})._response[
        "payment_intent"]
    assert pi["status"] == "inited"
    assert PaymentIntent.update(pi["id"], {"amount": 700})._response["payment_intent"]["amount"] == 700
    cb.api.post(f"/payment_intents/{pi['id']}/authorize", _card())  # the browser's step (billhive extension)
    got = PaymentIntent.retrieve(pi["id"])._response["payment_intent"]
    assert got["active_payment_attempt"]["status"] == "authorized"
    result = chargebee.Card.update_card_for_customer_using_payment_intent("sdk-6", {"payment_intent_id": pi["id"]})
    assert result.card.last4 == "1111"
    seed_subscription(cb, "sdk-6", sub_id="sdk-sub")
    chargebee.Address.update({"subscription_id": "sdk-sub", "label": "ship", "city": "Oslo", "country": "NO"})
    assert chargebee.Address.retrieve({"subscription_id": "sdk-sub", "label": "ship"}).address.city == "Oslo"
