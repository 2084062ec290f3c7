"""Objects made on a test site, as plain functions with fixed, valid defaults (no random money):
some straight into the store (where a test needs state the API would take many calls to build),
some through the site's API.

Also the registry the tenant-isolation test (tests/http/test_isolation.py) uses to find "an
object of site A" for every kind of path parameter. Adding an operation whose path takes a
parameter not listed in ``ID_FACTORIES`` makes the isolation test fail for it. Then add a
function here that creates one such object on the given site - through the site's API where an
operation for it exists, so the object is exactly what a client would get - and returns the
value that goes in the path; and register it under the spec's parameter name. A factory may call
other factories. An operation that needs a particular kind of object (a customer with a card)
gets its own in ``OPERATION_ID_FACTORIES``. If the operation cannot be called with its minimal
spec-valid parameters (``tests/support/spec_params.py``), say what it needs in ``ISOLATION_PARAMS``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from billhive.gateway import CardDetails
from billhive.services import credits, invoicing
from billhive.store.resources import (
    CARDS,
    CUSTOMERS,
    ORDERS,
    SUBSCRIPTIONS,
    TRANSACTIONS,
)
from billhive.util.ids import txn_id
from billhive.work.context import Work
from tests.support.server import TestSite

SUCCESS_CARD = "4111111111111111"
DECLINE_CARD = "4005519200000004"
TIMEOUT_CARD = "4000000000000119"


def store_card(site: TestSite, number: str) -> dict:
    gw = site.app.gateways["chargebee"]
    stored = asyncio.run(gw.store_card(site.pk, CardDetails(number, 12, 2099)))
    return {
        "object": "card", "status": "valid", "gateway": "chargebee", "reference_id": stored.token,
        "iin": stored.iin, "last4": stored.last4, "card_type": stored.brand, "expiry_month": 12,
        "expiry_year": 2099, "masked_number": stored.masked_number,
    }


def customer(site: TestSite, *, card: str | None = SUCCESS_CARD, auto_collection: str = "on", promotional: int = 0,
             refundable: int = 0, excess: int = 0, email: str | None = None, customer_id: str | None = None) -> dict:
    cid = customer_id or "cust_" + uuid.uuid4().hex[:12]
    card_doc = store_card(site, card) if card else None

    def unit(w: Work) -> dict:
        doc = {"id": cid, "object": "customer", "email": email or f"{cid}@example.com",
               "auto_collection": auto_collection,
               "allow_direct_debit": False, "created_at": w.now, "taxability": "taxable",
               "account_credits": 0, "refundable_credits": 0, "excess_payments": 0}
        if card_doc:
            card_doc["customer_id"] = cid
            doc["payment_method"] = {"type": "card", "gateway": "chargebee", "status": "valid",
                                     "reference_id": card_doc["reference_id"]}
            CARDS.insert(w.tx, w.site_id, card_doc, w.now)
        if promotional:
            credits.move(w, doc, "promotional", promotional, "add", description="factory")
        if refundable:
            credits.move(w, doc, "refundable", refundable, "add", description="factory")
        if excess:
            txn = {"id": txn_id(), "object": "transaction", "customer_id": cid, "payment_method": "cash",
                   "gateway": "not_applicable", "type": "payment", "date": w.now, "currency_code": w.site.currency_code,
                   "amount": excess, "status": "success", "amount_unused": excess, "linked_invoices": []}
            TRANSACTIONS.insert(w.tx, w.site_id, txn, w.now)
            credits.move(w, doc, "excess", excess, "overpayment", reference_type="transaction", reference_id=txn["id"])
        CUSTOMERS.insert(w.tx, w.site_id, doc, w.now)
        return doc
    return site.ctx().write_sync(unit)


def pending_invoice(site: TestSite, customer_id: str, lines: tuple[tuple[int, str], ...] = ((1000, "Usage"),),
                    subscription_id: str | None = None) -> dict:
    def unit(w: Work) -> dict:
        cust = CUSTOMERS.require(w.tx, w.site_id, customer_id)
        items = [invoicing.line_item(date_from=w.now, date_to=w.now, unit_amount=amount, description=desc,
                                     entity_type="adhoc") for amount, desc in lines]
        inv = invoicing.new_invoice(w, customer=cust, start_date=w.now, line_items=items, recurring=True,
                                    subscription_id=subscription_id, pending=True)
        return invoicing.insert_pending(w, inv)
    return site.ctx().write_sync(unit)


def events_of(site: TestSite, limit: int = 100) -> list[dict]:
    """The site's events, oldest first."""
    body = site.api.get("/events", {"limit": limit, "sort_by[asc]": "occurred_at"}).body
    return [e["event"] for e in body["list"]]


# ---- catalog through its API; subscriptions, orders, transactions as rows straight into the store
# (for tests of resources that only refer to them: comments, portal sessions). Prefer the real APIs once they exist.

def _insert(site: TestSite, table, doc: dict) -> dict:  # type: ignore[no-untyped-def]
    def unit(w: Work) -> dict:
        row = {**doc, "created_at": doc.get("created_at", w.now)}
        table.insert(w.tx, w.site_id, row, w.now)
        return row
    return site.ctx().write_sync(unit)


def plan(site: TestSite, plan_id: str = "basic", price: int = 1000) -> dict:
    return site.api.post("/plans", {"id": plan_id, "name": plan_id.capitalize(), "price": price,
                                    "period_unit": "month"})["plan"]


def addon(site: TestSite, addon_id: str = "extra-seat", price: int = 500) -> dict:
    return site.api.post("/addons", {"id": addon_id, "name": addon_id.capitalize(), "charge_type": "recurring",
                                     "type": "quantity", "unit": "seat", "price": price,
                                     "period": 1, "period_unit": "month"})["addon"]


def subscription(site: TestSite, customer_id: str, plan_id: str = "basic", status: str = "active",
                 subscription_id: str | None = None) -> dict:
    sid = subscription_id or "sub_" + uuid.uuid4().hex[:12]

    def unit(w: Work) -> dict:
        sub = {"id": sid, "customer_id": customer_id, "plan_id": plan_id, "plan_quantity": 1, "status": status,
               "current_term_start": w.now, "current_term_end": w.now + 30 * 86400, "created_at": w.now,
               "due_invoices_count": 0, "has_scheduled_changes": False, "object": "subscription"}
        SUBSCRIPTIONS.insert(w.tx, w.site_id, sub, w.now)
        return sub
    return site.ctx().write_sync(unit)


def order(site: TestSite, invoice_id: str = "inv_factory", order_id: str | None = None) -> dict:
    oid = order_id or "ord_" + uuid.uuid4().hex[:12]
    return _insert(site, ORDERS, {"id": oid, "invoice_id": invoice_id, "status": "new", "object": "order"})


def transaction(site: TestSite, customer_id: str, amount: int = 1000) -> dict:
    def unit(w: Work) -> dict:
        txn = {"id": txn_id(), "object": "transaction", "customer_id": customer_id, "payment_method": "cash",
               "gateway": "not_applicable", "type": "payment", "date": w.now, "currency_code": w.site.currency_code,
               "amount": amount, "status": "success", "amount_unused": 0, "linked_invoices": []}
        TRANSACTIONS.insert(w.tx, w.site_id, txn, w.now)
        return txn
    return site.ctx().write_sync(unit)


# ---- ids for path parameters, made through the API (for tenant-isolation tests) -----------------

def comment_id(site: TestSite) -> str:
    cust = customer(site)
    return site.api.post("/comments", {"entity_type": "customer", "entity_id": cust["id"],
                                       "notes": "factory"})["comment"]["id"]


def portal_session_id(site: TestSite) -> str:
    cust = customer(site)
    return site.api.post("/portal_sessions", {"customer[id]": cust["id"]})["portal_session"]["id"]

# ---- ids for path parameters (tenant-isolation test) ---------------------------------------------

def event(site: TestSite, event_type: str = "customer_created") -> str:
    """An event of the site, made by an API operation that records one (creating a customer)."""
    return site.api.post("/customers", {"email": "factory@example.com"})["customer"]["id"] and \
        events_of(site)[-1]["id"]


def customer_id(site: TestSite) -> str:
    return site.api.post("/customers", {"first_name": "Ada", "email": "ada@example.com"})["customer"]["id"]


def customer_with_card_id(site: TestSite) -> str:
    return site.api.post("/customers", {"email": "card@example.com", "card[number]": SUCCESS_CARD,
                                        "card[expiry_month]": 12, "card[expiry_year]": 2099})["customer"]["id"]


def invoice_id(site: TestSite) -> str:
    """A closed, payment_due invoice (auto-collection off)."""
    cust = customer(site, auto_collection="off")
    return site.api.post(f"/invoices/{pending_invoice(site, cust['id'])['id']}/collect")["invoice"]["id"]


def pending_invoice_id(site: TestSite) -> str:
    return pending_invoice(site, customer(site)["id"])["id"]


def paid_invoice_id(site: TestSite) -> str:
    cust = customer(site)
    return site.api.post(f"/invoices/{pending_invoice(site, cust['id'])['id']}/collect")["invoice"]["id"]


def transaction_id(site: TestSite) -> str:
    return transaction(site, customer(site)["id"])["id"]


def plan_id(site: TestSite) -> str:
    return plan(site, "plan-" + uuid.uuid4().hex[:8])["id"]


def addon_id(site: TestSite) -> str:
    return addon(site, "addon-" + uuid.uuid4().hex[:8])["id"]


def coupon_id(site: TestSite) -> str:
    return site.api.post("/coupons", {"id": "cpn-" + uuid.uuid4().hex[:8], "name": "Ten off",
                                      "discount_type": "fixed_amount", "discount_amount": 1000,
                                      "duration_type": "forever", "apply_on": "invoice_amount"})["coupon"]["id"]


def coupon_code(site: TestSite) -> str:
    return site.api.post("/coupon_codes", {"coupon_id": coupon_id(site),
                                           "coupon_set_name": "set-" + uuid.uuid4().hex[:6],
                                           "code": "CODE" + uuid.uuid4().hex[:8].upper()})["coupon_code"]["code"]


def subscription_id(site: TestSite) -> str:
    from tests.support.subs import subscription_id as through_the_api

    return through_the_api(site)


def subscription_with_scheduled_change_id(site: TestSite) -> str:
    sid = subscription_id(site)
    if site.api.get("/plans/iso-plan-2", expect=None).status == 404:
        site.api.post("/plans", {"id": "iso-plan-2", "name": "Isolation 2", "price": 200})
    site.api.post(f"/subscriptions/{sid}", {"plan_id": "iso-plan-2", "end_of_term": "true"})
    return sid


def subscription_cancelling_at_term_end_id(site: TestSite) -> str:
    sid = subscription_id(site)
    site.api.post(f"/subscriptions/{sid}/cancel", {"end_of_term": "true"})
    return sid


def payment_intent_id(site: TestSite) -> str:
    cust = customer_id(site)
    return site.api.post("/payment_intents", {"customer_id": cust, "amount": 1000,
                                              "currency_code": "USD"})["payment_intent"]["id"]


def order_id(site: TestSite) -> str:
    return order(site)["id"]


def hosted_page_id(site: TestSite) -> str:
    """A checkout_new page (state created) for a plan of the site."""
    if site.api.get("/plans/hp-plan", expect=None).status == 404:
        site.api.post("/plans", {"id": "hp-plan", "name": "Hosted", "price": 100})
    return site.api.post("/hosted_pages/checkout_new", {"subscription[plan_id]": "hp-plan"})["hosted_page"]["id"]


IdFactory = Callable[[TestSite], str]


# path parameter name (as the spec spells it) -> makes one object on the site, returns its id
ID_FACTORIES: dict[str, IdFactory] = {
    "event-id": event,
    "customer-id": customer_id,
    "invoice-id": invoice_id,
    "transaction-id": transaction_id,
    "plan-id": plan_id,
    "addon-id": addon_id,
    "coupon-id": coupon_id,
    "coupon-code-code": coupon_code,
    "subscription-id": subscription_id,
    "payment-intent-id": payment_intent_id,
    "order-id": order_id,
    "comment-id": comment_id,
    "portal-session-id": portal_session_id,
    "hosted-page-id": hosted_page_id,
}

# operationId -> {path parameter -> factory}: for an operation that needs more than the generic
# object (the card operations take {customer-id} but need a customer *with a card*).
OPERATION_ID_FACTORIES: dict[str, dict[str, IdFactory]] = {
    "scheduled_changes_a_subscription_scheduled_change": {
        "subscription-id": subscription_cancelling_at_term_end_id},
    "remove_scheduled_changes": {"subscription-id": subscription_with_scheduled_change_id},
    "close_pending_invoice": {"invoice-id": pending_invoice_id},
    "close_an_invoice": {"invoice-id": pending_invoice_id},
    "add_one-time_charge_to_a_pending_invoice": {"invoice-id": pending_invoice_id},
    "refund_an_invoice": {"invoice-id": paid_invoice_id},
    "record_refund_for_an_invoice": {"invoice-id": paid_invoice_id},
    "retrieve_card_for_a_customer": {"customer-id": customer_with_card_id},
    "delete_card_for_a_customer": {"customer-id": customer_with_card_id},
    "switch_gateway": {"customer-id": customer_with_card_id},
}


def id_factory(operation_id: str, param: str) -> IdFactory | None:
    return OPERATION_ID_FACTORIES.get(operation_id, {}).get(param) or ID_FACTORIES.get(param)


# Path parameters that name a per-site singleton rather than a row: every site has its own object
# under the same name, so another site's key reaches its own object (200), never A's.
SITE_SINGLETONS: dict[str, str] = {
    "time-machine-name": "delorean",
}

# operationId -> the parameters to call it with on the given site, when the minimal spec-valid ones
# (required parameters only, fixed values) do not get past validation to the lookup of the path's object.
ISOLATION_PARAMS: dict[str, Callable[[TestSite], dict[str, Any]]] = {
    "update_card_for_customer_using_payment_intent": lambda site: {"payment_intent_id": "pi_isolation"},
    "update_payment_method_for_a_customer": lambda site: {
        "payment_method": {"type": "paypal_express_checkout", "reference_id": "B-123"}},
    "travel_forward_a_time_machine": lambda site: {
        "destination_time": site.api.get("/time_machines/delorean")["time_machine"]["destination_time"] + 60},
}
