"""Payment intents: the 3DS flow for cards, with the chargebee test gateway.

Chargebee's flow: create an intent (``inited``) -> Chargebee.js collects the card and runs the
3DS challenge in the browser (``authorized``) -> the server stores the card with
``POST /customers/{id}/credit_card_using_payment_intent`` or ``create_a_customer`` with
``payment_intent[id]`` (``consumed``). billhive has no Chargebee.js: the browser step is the
extension ``POST /payment_intents/{id}/authorize`` (card number and expiry, as the hosted
form would take them), which stores the card at the gateway and authorizes the intent.

An intent created without ``customer_id`` gets a generated one and can be used for any
customer; with ``customer_id`` it is that customer's only. Intents expire 30 minutes after
creation if not consumed (shown as ``expired`` from then on).

Intents need the site's gateway (``billhive.gateway.for_site``): a live site without one refuses
to create them, and the raw-card ``authorize`` extension serves test sites only.
"""

from __future__ import annotations

from sqlalchemy import select

from billhive import gateway as gateways
from billhive.errors import (
    ConfigurationIncompatible,
    InvalidRequest,
    InvalidState,
    ParamError,
    ParamRequired,
    PaymentMethodVerificationFailed,
    not_found,
)
from billhive.gateway import Gateway, StoredCard
from billhive.services import cards
from billhive.services.context import Ctx, Work
from billhive.store import schema as S
from billhive.store.resources import CUSTOMERS, PAYMENT_INTENTS
from billhive.util.ids import random_id
from billhive.util.jsonutil import dumps, loads

LIFETIME = 30 * 60  # seconds an intent stays usable (Chargebee: 30 minutes)
GATEWAY_ACCOUNT_ID = "gw_chargebee"  # the test gateway's account id
OPEN = ("inited", "in_progress", "authorized")


def _check_params(w: Work, params: dict) -> None:
    currency = params.get("currency_code")
    if currency is not None and currency != w.site.currency_code:
        raise ParamError(f"currency_code : must be the site's currency {w.site.currency_code}", param="currency_code")
    account = params.get("gateway_account_id")
    if account is not None and account != GATEWAY_ACCOUNT_ID:
        raise ParamError(f"gateway_account_id : unknown gateway account {account!r} (the chargebee test gateway is "
                         f"{GATEWAY_ACCOUNT_ID})", param="gateway_account_id")


def _load(w: Work, intent_id: str, *, for_update: bool = False, param: str | None = None) -> tuple[dict, dict]:
    doc = PAYMENT_INTENTS.get(w.tx, w.site_id, intent_id, for_update=for_update)
    if doc is None:
        raise not_found("payment_intent", intent_id, param=param)
    t = S.payment_intents
    raw = w.tx.scalar(select(t.c.internal).where(t.c.site_id == w.site_id, t.c.id == intent_id))
    return doc, (loads(raw) if raw else {})


def _save(w: Work, doc: dict, internal: dict, *, insert: bool = False) -> None:
    cols = {"internal": dumps(internal)}
    if insert:
        PAYMENT_INTENTS.insert(w.tx, w.site_id, doc, w.now, columns=cols)
    else:
        PAYMENT_INTENTS.update(w.tx, w.site_id, doc, w.now, columns=cols)


def _expire(w: Work, doc: dict) -> bool:
    """Mark an unconsumed intent past its expiry as expired; True if it changed."""
    if doc["status"] in OPEN and w.now > doc["expires_at"]:
        doc["status"] = "expired"
        doc["modified_at"] = w.now
        return True
    return False


async def create(ctx: Ctx, params: dict) -> dict:
    def run(w: Work) -> dict:
        gateways.for_site(w.app.gateways, w.site)  # an intent is for the site's gateway: it needs one
        _check_params(w, params)
        doc: dict = {"id": random_id(), "status": "inited", "currency_code": params["currency_code"],
                     "amount": params["amount"], "gateway_account_id": GATEWAY_ACCOUNT_ID,
                     "expires_at": w.now + LIFETIME}
        for k in ("reference_id", "success_url", "failure_url"):
            if params.get(k) is not None:
                doc[k] = params[k]
        doc.update({"created_at": w.now, "modified_at": w.now, "customer_id": params.get("customer_id") or random_id(),
                    "gateway": cards.DEFAULT_GATEWAY, "object": "payment_intent"})
        _save(w, doc, {"bound": params.get("customer_id") is not None}, insert=True)
        return {"payment_intent": doc}
    return await ctx.write(run)


async def update(ctx: Ctx, intent_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        doc, internal = _load(w, intent_id, for_update=True)
        _check_params(w, params)
        if _expire(w, doc) or doc["status"] not in OPEN:
            raise InvalidState(f"The payment intent is {doc['status']} and can no longer be changed")
        for k in ("amount", "currency_code", "gateway_account_id", "success_url", "failure_url"):
            if params.get(k) is not None:
                doc[k] = params[k]
        doc["modified_at"] = w.now
        _save(w, doc, internal)
        return {"payment_intent": doc}
    return await ctx.write(run)


async def retrieve(ctx: Ctx, intent_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        doc, _ = _load(w, intent_id)
        _expire(w, doc)  # shown as expired; written when next changed
        return {"payment_intent": doc}
    return await ctx.read(run)


# ---- the browser step (billhive extension) --------------------------------------------------------

def _authorizable(w: Work, intent_id: str) -> int:
    doc, _ = _load(w, intent_id)
    _expire(w, doc)
    if doc["status"] not in ("inited", "in_progress"):
        raise InvalidState(f"The payment intent is {doc['status']}; only an inited intent can be authorized")
    return w.now


def _raw_card_gateway(w: Work) -> Gateway:
    gateway = gateways.for_site(w.app.gateways, w.site)  # a live site without a gateway is refused here
    if not w.site.is_test:
        raise ConfigurationIncompatible("POST /payment_intents/{id}/authorize takes raw card numbers and serves test "
                                        "sites only; on a live site the payment gateway collects the card")
    return gateway


async def authorize(ctx: Ctx, intent_id: str, params: dict) -> dict:
    """Stands in for Chargebee.js and the 3DS challenge: the card goes to the gateway and the
    intent becomes ``authorized``. A card the gateway refuses answers 400 and leaves the intent.
    Test sites only (raw card numbers): on a live site the real gateway's own page takes the card."""
    gateway = await ctx.read(_raw_card_gateway)
    now = await ctx.read(_authorizable, intent_id)
    card = cards.check_card(params, "", now)
    stored = await cards.store_at_gateway(ctx, gateway, card)

    def run(w: Work) -> dict:
        doc, internal = _load(w, intent_id, for_update=True)
        if _expire(w, doc) or doc["status"] not in ("inited", "in_progress"):
            raise InvalidState(f"The payment intent is {doc['status']}; only an inited intent can be authorized")
        doc["status"] = "authorized"
        doc["modified_at"] = w.now
        doc["active_payment_attempt"] = {"id": random_id("pa_"), "status": "authorized", "id_at_gateway": stored.token,
                                         "created_at": w.now, "modified_at": w.now}
        internal["card"] = {"token": stored.token, "brand": stored.brand, "last4": stored.last4, "iin": stored.iin,
                            "masked_number": stored.masked_number, "expiry_month": card.expiry_month,
                            "expiry_year": card.expiry_year, "copied": card.copied}
        _save(w, doc, internal)
        return {"payment_intent": doc}
    return await ctx.write(run)


# ---- consuming an authorized intent ------------------------------------------------------------------

def consume(w: Work, intent_id: str, customer_id: str, *, param: str) -> dict:
    """Use an authorized intent for this customer: returns the card document to attach (the
    caller attaches it, saves the customer and records events); the intent becomes consumed."""
    doc, internal = _load(w, intent_id, for_update=True, param=param)
    _expire(w, doc)
    if doc["status"] != "authorized":
        raise InvalidRequest(f"{param} : the payment intent is {doc['status']}, not authorized", param=param,
                             api_error_code="payment_intent_invalid")
    if internal.get("bound") and doc["customer_id"] != customer_id:
        raise InvalidRequest(f"{param} : the payment intent belongs to another customer", param=param,
                             api_error_code="payment_intent_invalid")
    saved = internal["card"]
    card_input = cards.CardInput(number="", expiry_month=saved["expiry_month"], expiry_year=saved["expiry_year"],
                                 prefix="", copied=saved.get("copied") or {})
    try:
        cards.check_expiry(card_input.expiry_year, card_input.expiry_month, w.now, "")
    except PaymentMethodVerificationFailed:
        raise PaymentMethodVerificationFailed(f"{param} : the authorized card has expired", param=param) from None
    stored = StoredCard(token=saved["token"], brand=saved["brand"], last4=saved["last4"], iin=saved["iin"],
                        masked_number=saved["masked_number"])
    doc["status"] = "consumed"
    doc["modified_at"] = w.now
    _save(w, doc, internal)
    return cards.build_card(customer_id, card_input, stored)


async def update_card_using_payment_intent(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """POST /customers/{id}/credit_card_using_payment_intent."""
    intent_id = params.get("payment_intent_id")
    if intent_id is None:
        if params.get("gw_token") or params.get("reference_id"):
            raise InvalidRequest("payment_intent_id : the chargebee gateway completes 3DS through payment intents; "
                                 "gw_token and reference_id are for other gateways", param="payment_intent_id")
        raise ParamRequired("payment_intent_id : cannot be blank", param="payment_intent_id")
    account = params.get("gateway_account_id")
    if account is not None and account != GATEWAY_ACCOUNT_ID:
        raise ParamError(f"gateway_account_id : unknown gateway account {account!r}", param="gateway_account_id")

    def run(w: Work) -> dict:
        customer = CUSTOMERS.require(w.tx, w.site_id, customer_id, for_update=True)
        card = consume(w, intent_id, customer_id, param="payment_intent_id")
        added = cards.attach(w, customer, card)
        cards.save_customer(w, customer)
        w.emit("card_added" if added else "card_updated", {"customer": customer, "card": card})
        return {"customer": customer, "card": card}
    return await ctx.write(run)
