"""Customers: create (with an optional card, payment intent or payment method, and billing
address), update, retrieve, list, delete, billing info, payment method, contacts, and the
promotional (account) credits.

Helpers other services use:
    get_customer(w, customer_id, *, for_update=False, param=None) -> dict   (404 if absent)
    save(w, customer) -> None                                                 (after changing it)
    snapshot(w, customer_id) -> {"customer": ..., "card": ...}                (card only if present)
    usable_card(w, customer) -> dict | None                                   (not expired at w.now)

Every balance change goes through ``billhive.services.credits`` (a ledger row per movement).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import or_, select

from billhive.domain import customers as rules
from billhive.errors import (
    DuplicateEntry,
    InvalidRequest,
    InvalidState,
    ParamError,
    ParamRequired,
    ResourceLimitExhausted,
    not_found,
)
from billhive.services import cards, credits, payment_intents, transactions
from billhive.services.cards import content, usable_card  # noqa: F401  (re-exported for other services)
from billhive.store import schema as S
from billhive.store.lists import ListRequest, fetch_page
from billhive.store.resources import CARDS, CUSTOMERS, SUBSCRIPTIONS
from billhive.util.ids import random_id
from billhive.work.context import Ctx, Work

# Ids travel in URL paths: no whitespace, slashes, or URL metacharacters.
_ID = re.compile(r"^[^\s/\\?#%]+$")
UPDATABLE = ("first_name", "last_name", "email", "phone", "company", "auto_collection", "allow_direct_debit",
             "taxability", "invoice_notes", "meta_data")
CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "label")
CONTACT_FLAGS = ("enabled", "send_account_email", "send_billing_email")
NON_CARD_METHODS = ("paypal_express_checkout", "amazon_payments")  # need no gateway of billhive's


# ---- helpers for other services -----------------------------------------------------------------

def get_customer(w: Work, customer_id: str, *, for_update: bool = False, param: str | None = None) -> dict:
    return CUSTOMERS.require(w.tx, w.site_id, customer_id, for_update=for_update, param=param)


def save(w: Work, customer: dict) -> None:
    cards.save_customer(w, customer)


def snapshot(w: Work, customer_id: str) -> dict:
    """{"customer": ..., "card": ...} as the API shows them (card only when present)."""
    return content(get_customer(w, customer_id), cards.get_card(w, customer_id))


def _changed(w: Work, customer: dict, card: dict | None = None) -> dict:
    """Save, record customer_changed, return the response body."""
    save(w, customer)
    body = content(customer, card if card is not None else cards.get_card(w, customer["id"]))
    w.emit("customer_changed", body)
    return body


# ---- validation ------------------------------------------------------------------------------------

def _billing_address(params: dict) -> dict | None:
    address = params.get("billing_address")
    if address:
        cards.check_country(address.get("country"), "billing_address[country]")
    return {**address, "object": "billing_address"} if address else None


def check_payment_method(app: Any, pm: dict, prefix: str) -> dict:
    """A non-card payment method from payment_method[...]. Cards need a gateway: only the chargebee
    test gateway exists, and the spec does not let payment_method name it."""
    for required in ("type", "reference_id"):
        if pm.get(required) is None:
            raise ParamRequired(f"{prefix}[{required}] : cannot be blank", param=f"{prefix}[{required}]")
    kind = pm["type"]
    if kind in NON_CARD_METHODS and pm.get("gateway") is None:
        return {"type": kind, "gateway": "not_applicable", "status": "valid", "reference_id": pm["reference_id"]}
    if pm.get("gateway") is None:
        raise ParamRequired(f"{prefix}[gateway] : cannot be blank for {kind}", param=f"{prefix}[gateway]")
    cards.gateway_for(app, pm["gateway"], f"{prefix}[gateway]")
    # unreachable while the test gateway is the only one (its name is not in this enum)
    raise InvalidRequest(f"{prefix}[gateway] : references to cards stored by other means are not supported",
                         param=f"{prefix}[gateway]")


# ---- create / update / retrieve / list ---------------------------------------------------------------

def _precheck_create(w: Work, customer_id: str) -> int:
    if CUSTOMERS.exists(w.tx, w.site_id, customer_id):
        raise DuplicateEntry(f"id : The value {customer_id} is already present.", param="id")
    return w.now


async def create(ctx: Ctx, params: dict) -> dict:
    customer_id = params.get("id") or random_id()
    if not _ID.match(customer_id):
        raise ParamError("id : may not contain whitespace, '/', '\\', '?', '#' or '%'", param="id")
    given = [k for k in ("card", "payment_intent", "payment_method") if params.get(k)]
    if len(given) > 1:
        raise InvalidRequest(f"{given[1]} : cannot be given together with {given[0]}", param=given[1])
    _billing_address(params)
    payment_method = check_payment_method(ctx.app, params["payment_method"], "payment_method") \
        if params.get("payment_method") else None
    card_input = stored = None
    if params.get("card"):
        gateway = await cards.site_gateway(ctx, params["card"].get("gateway"), "card[gateway]")
        now = await ctx.read(_precheck_create, customer_id)
        card_input = cards.check_card(params["card"], "card", now)
        stored = await cards.store_at_gateway(ctx, gateway, card_input)
    intent_id = None
    if params.get("payment_intent"):
        intent_id = params["payment_intent"].get("id")
        if intent_id is None:
            raise ParamRequired("payment_intent[id] : cannot be blank (the chargebee gateway completes 3DS through "
                             "payment intents)", param="payment_intent[id]")
    return await ctx.write(insert_customer, customer_id, params, card_input, stored, payment_method, intent_id)


def insert_customer(w: Work, customer_id: str, params: dict, card_input: cards.CardInput | None,
                    stored: Any, payment_method: dict | None, intent_id: str | None) -> dict:
    """A new customer (with its card or payment method) in this transaction; records
    customer_created (and card_added). Also how create_a_subscription makes its customer."""
    _precheck_create(w, customer_id)
    customer: dict = {"id": customer_id}
    for k in ("first_name", "last_name", "email", "phone", "company", "vat_number"):
        if params.get(k) is not None:
            customer[k] = params[k]
    customer["auto_collection"] = params.get("auto_collection", "on")
    customer["allow_direct_debit"] = params.get("allow_direct_debit", False)
    customer["created_at"] = w.now
    if params.get("created_from_ip") is not None:
        customer["created_from_ip"] = params["created_from_ip"]
    customer["taxability"] = params.get("taxability", "taxable")
    address = _billing_address(params)
    if address:
        customer["billing_address"] = address
    if params.get("invoice_notes") is not None:
        customer["invoice_notes"] = params["invoice_notes"]
    customer.update({"account_credits": 0, "refundable_credits": 0, "excess_payments": 0})
    if params.get("meta_data") is not None:
        customer["meta_data"] = params["meta_data"]
    customer["object"] = "customer"
    if payment_method is not None:
        customer["payment_method"] = payment_method
    card = None
    if card_input is not None:
        cards.check_expiry(card_input.expiry_year, card_input.expiry_month, w.now, "card")
        card = cards.build_card(customer_id, card_input, stored)
    elif intent_id is not None:
        card = payment_intents.consume(w, intent_id, customer_id, param="payment_intent[id]")
    if card is not None:
        cards.attach(w, customer, card)
    CUSTOMERS.insert(w.tx, w.site_id, cards.order_fields(customer), w.now)
    body = content(customer, card)
    w.emit("customer_created", body)
    if card is not None:
        w.emit("card_added", body)
    return body


async def retrieve(ctx: Ctx, customer_id: str, params: dict) -> dict:
    return await ctx.read(snapshot, customer_id)


async def list_customers(ctx: Ctx, params: dict) -> dict:
    req: ListRequest = params["_list"]

    def run(w: Work) -> dict:
        page = fetch_page(w.tx, CUSTOMERS, w.site_id, req)
        ids = [c["id"] for c in page.items]
        by_customer = {c["customer_id"]: c for c in CARDS.find(w.tx, w.site_id, CARDS.t.c.id.in_(ids))} if ids else {}
        return page.response("customer", lambda c: {"card": by_customer[c["id"]]} if c["id"] in by_customer else {})
    return await ctx.read(run)


async def update(ctx: Ctx, customer_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        customer = get_customer(w, customer_id, for_update=True)
        for k in UPDATABLE:
            if k in params:
                customer[k] = params[k]
        return _changed(w, customer)
    return await ctx.write(run)


async def update_billing_info(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """Replaces billing address and vat_number: what is not given is cleared (Chargebee's rule)."""
    address = _billing_address(params)

    def run(w: Work) -> dict:
        customer = get_customer(w, customer_id, for_update=True)
        customer.pop("billing_address", None)
        customer.pop("vat_number", None)
        if params.get("vat_number") is not None:
            customer["vat_number"] = params["vat_number"]
        if address:
            customer["billing_address"] = address
        return _changed(w, customer)
    return await ctx.write(run)


async def update_payment_method(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """Chargebee: 'not supported for Chargebee Test Gateway'. PayPal Express Checkout and Amazon
    Payments references (no gateway) are stored; card, direct debit and bank transfer methods need
    a gateway billhive does not have, and are refused."""
    pm_params = params.get("payment_method")
    if not pm_params:
        raise ParamRequired("payment_method[type] : cannot be blank", param="payment_method[type]")
    if pm_params.get("gateway") is not None:  # the site's gateway, or refused as not configured
        await cards.site_gateway(ctx, pm_params["gateway"], "payment_method[gateway]")
    payment_method = check_payment_method(ctx.app, pm_params, "payment_method")

    def run(w: Work) -> dict:
        customer = get_customer(w, customer_id, for_update=True)
        card = cards.detach(w, customer)
        customer["payment_method"] = payment_method
        body = _changed(w, customer)
        if card is not None:
            w.emit("card_deleted", {"customer": customer, "card": card})
        return body
    return await ctx.write(run)


# ---- delete ------------------------------------------------------------------------------------------

async def delete(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """Hard delete (v1): the customer, card, and everything of theirs (subscriptions, invoices,
    transactions, credits ledger, payment intents). Refused while a subscription is live."""
    def run(w: Work) -> dict:
        customer = get_customer(w, customer_id, for_update=True)
        subs = SUBSCRIPTIONS.find(w.tx, w.site_id, SUBSCRIPTIONS.t.c.customer_id == customer_id, for_update=True)
        live = [s["id"] for s in subs if s.get("status") in rules.ACTIVE_SUBSCRIPTION_STATUSES]
        if live:
            raise InvalidState(f"The customer has {len(live)} active subscription(s) ({', '.join(live[:5])}); cancel "
                               "them before deleting the customer")
        card = cards.detach(w, customer)
        if card is not None:
            customer["payment_method"] = cards.payment_method_of(card)  # as it was, for the event
        _purge(w, customer_id, [s["id"] for s in subs])
        CUSTOMERS.delete(w.tx, w.site_id, customer_id)
        body = content(customer, card)
        w.emit("customer_deleted", {**body, "subscriptions": subs})
        return body
    return await ctx.write(run)


def _purge(w: Work, customer_id: str, subscription_ids: list[str]) -> None:
    """Delete the rows that belong to the customer (Chargebee: 'all data related to the customer
    ... will be deleted'), and the scheduler jobs that refer to them."""
    tx, site = w.tx, w.site_id
    inv, txn, it = S.invoices, S.transactions, S.invoice_transactions
    invoice_ids = [r[0] for r in tx.all(select(inv.c.id).where(inv.c.site_id == site,
                                                                inv.c.customer_id == customer_id))]
    txn_ids = [r[0] for r in tx.all(select(txn.c.id).where(txn.c.site_id == site, txn.c.customer_id == customer_id))]
    transactions.announce_deleted(w, txn.c.customer_id == customer_id)
    if invoice_ids or txn_ids:
        tx.execute(sql_delete(it).where(it.c.site_id == site, or_(it.c.invoice_id.in_(invoice_ids),
                                                              it.c.txn_id.in_(txn_ids))))
    if invoice_ids:
        o = S.orders
        tx.execute(sql_delete(o).where(o.c.site_id == site, o.c.invoice_id.in_(invoice_ids)))
    for table in (inv, txn, S.subscriptions, S.payment_intents, S.portal_sessions, S.credit_ledger):
        tx.execute(sql_delete(table).where(table.c.site_id == site, table.c.customer_id == customer_id))
    if subscription_ids:
        tx.execute(sql_delete(S.addresses).where(S.addresses.c.site_id == site,
                                             S.addresses.c.subscription_id.in_(subscription_ids)))
    c = S.comments
    for entity_type, ids in (("customer", [customer_id]), ("subscription", subscription_ids),
                             ("invoice", invoice_ids), ("transaction", txn_ids)):
        if ids:
            tx.execute(sql_delete(c).where(c.c.site_id == site, c.c.entity_type == entity_type,
                                           c.c.entity_id.in_(ids)))
    refs = [customer_id, *subscription_ids, *invoice_ids, *txn_ids]
    tx.execute(sql_delete(S.jobs).where(S.jobs.c.site_id == site, S.jobs.c.ref_id.in_(refs)))


# ---- contacts ------------------------------------------------------------------------------------------

def _contact_param(params: dict, required: str) -> dict:
    contact = params.get("contact") or {}
    if contact.get(required) is None:
        raise ParamRequired(f"contact[{required}] : cannot be blank", param=f"contact[{required}]")
    return contact


def _find_contact(customer: dict, contact_id: str) -> int:
    for i, c in enumerate(customer.get("contacts", ())):
        if c["id"] == contact_id:
            return i
    raise not_found("contact", contact_id, param="contact[id]")


async def add_contact(ctx: Ctx, customer_id: str, params: dict) -> dict:
    given = _contact_param(params, "email")

    def run(w: Work) -> dict:
        customer = get_customer(w, customer_id, for_update=True)
        contacts = customer.setdefault("contacts", [])
        if len(contacts) >= rules.MAX_CONTACTS:
            raise ResourceLimitExhausted(f"A customer can have at most {rules.MAX_CONTACTS} contacts")
        contact_id = given.get("id") or random_id()
        if any(c["id"] == contact_id for c in contacts):
            raise DuplicateEntry(f"contact[id] : The value {contact_id} is already present.", param="contact[id]")
        contact: dict = {"id": contact_id}
        contact.update({k: given[k] for k in CONTACT_FIELDS if given.get(k) is not None})
        contact.update({k: bool(given.get(k, False)) for k in CONTACT_FLAGS})
        contacts.append(contact)
        return _changed(w, customer)
    return await ctx.write(run)


async def update_contact(ctx: Ctx, customer_id: str, params: dict) -> dict:
    given = _contact_param(params, "id")

    def run(w: Work) -> dict:
        customer = get_customer(w, customer_id, for_update=True)
        index = _find_contact(customer, given["id"])
        contact = customer["contacts"][index]
        for k in (*CONTACT_FIELDS, *CONTACT_FLAGS):
            if given.get(k) is not None:
                contact[k] = given[k]
        return _changed(w, customer)
    return await ctx.write(run)


async def delete_contact(ctx: Ctx, customer_id: str, params: dict) -> dict:
    given = _contact_param(params, "id")

    def run(w: Work) -> dict:
        customer = get_customer(w, customer_id, for_update=True)
        index = _find_contact(customer, given["id"])
        del customer["contacts"][index]
        if not customer["contacts"]:
            del customer["contacts"]
        return _changed(w, customer)
    return await ctx.write(run)


# ---- promotional (account) credits -------------------------------------------------------------------

def _credits(w: Work, customer_id: str, op: str, amount: int, description: str) -> dict:
    customer = get_customer(w, customer_id, for_update=True)
    before = credits.balance(customer, "promotional")
    if op == "add":
        credits.move(w, customer, "promotional", amount, "add", description=description, param="amount")
    elif op == "deduct":
        credits.move(w, customer, "promotional", -amount, "deduct", description=description, param="amount")
    else:
        credits.set_balance(w, customer, "promotional", amount, "set", description=description, param="amount")
    if credits.balance(customer, "promotional") != before:
        save(w, customer)
        w.emit("customer_changed", content(customer, cards.get_card(w, customer_id)))
    return {"customer": customer}


async def add_account_credits(ctx: Ctx, customer_id: str, params: dict) -> dict:
    return await ctx.write(_credits, customer_id, "add", params["amount"], params["description"])


async def deduct_account_credits(ctx: Ctx, customer_id: str, params: dict) -> dict:
    return await ctx.write(_credits, customer_id, "deduct", params["amount"], params["description"])


async def set_account_credits(ctx: Ctx, customer_id: str, params: dict) -> dict:
    return await ctx.write(_credits, customer_id, "set", params["amount"], params["description"])
