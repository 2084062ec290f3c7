"""Issue 12 through the unmodified chargebee 1.6.6 SDK: a customer's card_status through its
card's lifecycle, and every field the SDK's models declare compared with what billhive returns
(the fields billhive leaves out, and why, are listed in docs/CHOICES.md, "Fields of the SDK models")."""

from __future__ import annotations

import datetime as dt

import chargebee
import pytest

from tests.support import sdk, timemachine
from tests.support.customers import VISA


def ts(year: int, month: int, day: int) -> int:
    return int(dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp())


@pytest.fixture
def cb(server, site):
    sdk.configure(server, site)
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": ts(2030, 6, 15)})
    return site


def travel(site, to: int) -> None:
    timemachine.travel(site.api, to)


def _card(year: int, month: int = 12) -> dict:
    return {"number": VISA, "expiry_month": month, "expiry_year": year, "cvv": "123"}


# Chargebee's v1 payloads: "card_status": "no_card" without a card, "valid" with one
# (client library tests/python/sample_event.json, ChargeBee_SampleData::webhookData); SDK 1.6.6
# models/customer.py declares card_status.
def test_card_status_through_the_cards_lifecycle(cb):
    assert chargebee.Customer.create({"id": "cs", "email": "cs@example.com"}).customer.card_status == "no_card"
    result = chargebee.Card.update_card_for_customer("cs", {"number": VISA, "expiry_month": 8, "expiry_year": 2030,
                                                            "cvv": "123"})
    assert result.customer.card_status == "valid" and result.card.status == "valid"
    travel(cb, ts(2030, 8, 15))
    got = chargebee.Customer.retrieve("cs")
    assert got.customer.card_status == "expiring" and got.card.status == "expiring"
    travel(cb, ts(2030, 9, 2))
    assert chargebee.Customer.retrieve("cs").customer.card_status == "expired"
    assert chargebee.Card.update_card_for_customer("cs", _card(2033)).customer.card_status == "valid"
    assert chargebee.Card.delete_card_for_customer("cs").customer.card_status == "no_card"


# What each SDK model of this story declares and billhive does not return, exactly: each field
# either only under conditions the story does not meet (a value given, a trial, a failure...) or
# left out on purpose (LEFT_OUT; docs/CHOICES.md says why). A field that starts or stops being
# returned fails here, so the lists stay true.
LEFT_OUT = {
    "Plan": {"downgrade_penalty"},  # deprecated in v1, no behaviour behind it
    "Subscription": {"coupon"},  # the deprecated single coupon; billhive returns coupons[]
    "Transaction": {"three_d_secure", "reference_transaction_id", "reversal_transaction_id", "void_description"},
}
CONDITIONAL = {
    "Customer": {"phone", "company", "vat_number", "created_from_ip", "invoice_notes", "meta_data", "contacts",
                 "last_name", "billing_address"},
    "Card": {"billing_addr1", "billing_addr2", "billing_city", "billing_state_code", "billing_state",
             "billing_country", "billing_zip", "first_name", "last_name", "ip_address"},
    "Plan": {"archived_at", "billing_cycles", "description", "invoice_name", "invoice_notes", "meta_data",
             "redirect_url", "setup_cost", "trial_period", "trial_period_unit"},
    "Subscription": {"addons", "affiliate_token", "cancel_reason", "cancelled_at", "coupons", "created_from_ip",
                     "due_since", "total_dues", "invoice_notes", "meta_data", "po_number", "remaining_billing_cycles",
                     "shipping_address", "start_date", "trial_end", "trial_start"},
    "Invoice": {"billing_address", "dunning_status", "next_retry", "po_number", "shipping_address", "vat_number"},
    "LineItem": {"tax_rate"},
    "Transaction": {"description", "error_code", "error_text", "linked_refunds", "reference_number",
                    "refunded_txn_id", "voided_at"},
}


def _missing(model) -> set[str]:
    return {f for f in type(model).fields if f not in model.values}


def test_sdk_model_fields_are_filled(cb):
    result = chargebee.Customer.create({"id": "f1", "first_name": "Ada", "email": "f1@example.com",
                                        "card": _card(2033)})
    plan = chargebee.Plan.create({"id": "basic", "name": "Basic", "price": 1000, "period_unit": "month"}).plan
    sub = chargebee.Subscription.create_for_customer("f1", {"plan_id": plan.id})
    txn = chargebee.Transaction.retrieve(sub.invoice.linked_transactions[0].txn_id).transaction
    assert result.customer.card_status == "valid" and sub.subscription.due_invoices_count == 0
    for name, model in (("Customer", result.customer), ("Card", result.card), ("Plan", plan),
                        ("Subscription", sub.subscription), ("Invoice", sub.invoice),
                        ("LineItem", sub.invoice.line_items[0]), ("Transaction", txn)):
        assert _missing(model) == LEFT_OUT.get(name, set()) | CONDITIONAL.get(name, set()), name


# the dues while an invoice is unpaid, and record_payment's memo (issue 12, items 3 and 7)
def test_dues_and_memo_through_the_sdk(cb):
    chargebee.Customer.create({"id": "d1", "email": "d1@example.com", "auto_collection": "off"})
    chargebee.Plan.create({"id": "basic", "name": "Basic", "price": 1000, "period_unit": "month"})
    sub = chargebee.Subscription.create_for_customer("d1", {"plan_id": "basic"})
    s = sub.subscription
    assert (s.due_invoices_count, s.due_since, s.total_dues) == (1, sub.invoice.end_date, 1000)
    paid = chargebee.Transaction.record_payment(sub.invoice.id, {"payment_method": "cash", "paid_at": ts(2030, 6, 15),
                                                                 "memo": "At the desk"})
    assert paid.transaction.description == "At the desk"
    after = chargebee.Subscription.retrieve(s.id).subscription
    assert after.due_invoices_count == 0 and after.total_dues is None
