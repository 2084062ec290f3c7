"""Plain functions that put valid objects straight into a site's store (fixed, valid defaults;
no random money). Used where a test needs state the API would take many calls to build."""

from __future__ import annotations

import asyncio
import uuid

from billhive.gateway import CardDetails
from billhive.services import credits, invoicing
from billhive.services.context import Work
from billhive.store.resources import CARDS, CUSTOMERS, ORDERS, SUBSCRIPTIONS, TRANSACTIONS
from billhive.util.ids import txn_id
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
        doc = {"id": cid, "object": "customer", "email": email or f"{cid}@example.com", "auto_collection": auto_collection,
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
               "due_invoices_count": 0, "object": "subscription"}
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
