"""Payment details given with a subscription operation (card[...], payment_intent[...],
payment_method[...]) and the customer create_a_subscription makes: the customers service's rules.
A card is stored at the gateway before the write transaction (``prepare_payment``), never inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billhive.domain import subscriptions as R
from billhive.errors import DuplicateEntry, InvalidRequest, ParamRequired
from billhive.services import cards, customers, payment_intents
from billhive.store.resources import CUSTOMERS
from billhive.util.ids import random_id
from billhive.work.context import Ctx, Work


@dataclass(frozen=True)
class PaymentIn:
    """Payment details of a request, checked (and a card stored at the gateway)."""

    card: cards.CardInput | None = None
    stored: Any = None
    intent_id: str | None = None
    method: dict | None = None  # a non-card payment method


async def prepare_payment(ctx: Ctx, params: dict) -> PaymentIn:
    given = [k for k in ("card", "payment_intent", "payment_method") if params.get(k)]
    if len(given) > 1:
        raise InvalidRequest(f"{given[1]} : cannot be given together with {given[0]}", param=given[1])
    if params.get("card"):
        gateway = await cards.site_gateway(ctx, params["card"].get("gateway"), "card[gateway]")
        now = await ctx.read(lambda w: w.now)
        card = cards.check_card(params["card"], "card", now)
        return PaymentIn(card=card, stored=await cards.store_at_gateway(ctx, gateway, card))
    if params.get("payment_intent"):
        intent_id = params["payment_intent"].get("id")
        if intent_id is None:
            raise ParamRequired("payment_intent[id] : cannot be blank (the chargebee gateway completes 3DS through "
                                "payment intents)", param="payment_intent[id]")
        return PaymentIn(intent_id=intent_id)
    if params.get("payment_method"):
        return PaymentIn(method=customers.check_payment_method(ctx.app, params["payment_method"], "payment_method"))
    return PaymentIn()


def apply_payment(w: Work, customer: dict, pay: PaymentIn) -> list[tuple[str, dict]]:
    """Give an existing customer the request's payment details; returns the events to record
    (card_added / card_updated / card_deleted) with their content. The caller saves the customer."""
    card = None
    if pay.card is not None:
        cards.check_expiry(pay.card.expiry_year, pay.card.expiry_month, w.now, "card")
        card = cards.build_card(customer["id"], pay.card, pay.stored)
    elif pay.intent_id is not None:
        card = payment_intents.consume(w, pay.intent_id, customer["id"], param="payment_intent[id]")
    if card is not None:
        added = cards.attach(w, customer, card)
        return [("card_added" if added else "card_updated", card)]
    if pay.method is not None:
        old = cards.detach(w, customer)
        customer["payment_method"] = pay.method
        return [("card_deleted", old)] if old is not None else []
    return []


def new_customer(w: Work, params: dict, pay: PaymentIn) -> dict:
    """create_a_subscription's customer (customer[...], billing_address[...], the payment details),
    created by the customers service (customer_created, card_added)."""
    given = dict(params.get("customer") or {})
    customer_id = given.pop("id", None) or random_id()
    R.check_id(customer_id, "customer[id]")
    if CUSTOMERS.exists(w.tx, w.site_id, customer_id):
        raise DuplicateEntry(f"customer[id] : The value {customer_id} is already present.", param="customer[id]")
    for k in ("billing_address", "created_from_ip"):
        if params.get(k) is not None:
            given[k] = params[k]
    return customers.insert_customer(w, customer_id, given, pay.card, pay.stored, pay.method, pay.intent_id)["customer"]
