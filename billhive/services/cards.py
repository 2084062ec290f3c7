"""Cards: one per customer (API v1), stored at the payment gateway.

billhive never stores a card number: the gateway keeps it and answers with a token, which
becomes the card's ``reference_id`` (and the customer's ``payment_method.reference_id``).
The gateway is called before the write transaction (no network inside a transaction); the
transaction then saves customer, card, expiry jobs and events together.

Operations: ``update_card`` (POST /customers/{id}/credit_card), ``retrieve`` (GET /cards/{id}),
``delete_card``, ``switch_gateway``.

Helpers other services use: ``get_card``, ``usable_card``, ``status_at``.

Scheduler: every stored card has two jobs, ``card_expiring:<customer>`` (at the end of the
expiry month minus the site's ``card_expiring_days``) and ``card_expired:<customer>`` (the first
second after the expiry month). They set the status of the card and of the customer's
payment method and fire ``card_expiring`` / ``card_expired``; replacing the card moves them,
deleting it cancels them.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from billhive import gateway as gateways
from billhive import spec
from billhive.domain import customers as rules
from billhive.errors import (
    BillhiveError,
    ConfigurationIncompatible,
    InvalidRequest,
    ParamError,
    ParamRequired,
    PaymentMethodVerificationFailed,
    not_found,
)
from billhive.gateway import CardDetails, Gateway, StoredCard
from billhive.store.resources import CARDS, CUSTOMERS, card_expires_at
from billhive.work import jobs
from billhive.work.context import Ctx, Work

if TYPE_CHECKING:
    from billhive.runtime import App

DEFAULT_GATEWAY = gateways.TEST_GATEWAY
# Card fields copied from the request onto the card document as given.
COPIED_FIELDS = ("first_name", "last_name", "billing_addr1", "billing_addr2", "billing_city", "billing_state_code",
                 "billing_state", "billing_zip", "billing_country", "ip_address")


def param_name(prefix: str, name: str) -> str:
    """``card[number]`` for create_a_customer, ``number`` for the credit_card operation."""
    return f"{prefix}[{name}]" if prefix else name


def gateway_for(app: App, name: str | None, param: str) -> Gateway:
    """The configured gateway of that name (default: the chargebee test gateway), whichever site
    asks; ``site_gateway`` is the one a site may store cards with."""
    name = name or DEFAULT_GATEWAY
    gw = app.gateways.get(name)
    if gw is None:
        configured = ", ".join(sorted(app.gateways)) or "none"
        raise ConfigurationIncompatible(f"{param} : the {name} gateway is not configured on this site (configured: "
                                        f"{configured})", param=param)
    return gw


async def site_gateway(ctx: Ctx, name: str | None, param: str) -> Gateway:
    """The gateway to store a request's card with: the site's (``billhive.gateway.for_site``; a
    live site without one is refused here, before the card goes anywhere). ``name`` (the
    request's ``card[gateway]``), when given, must be that gateway."""
    gw = await ctx.read(lambda w: gateways.for_site(w.app.gateways, w.site))
    if name is not None and name != gw.name:
        raise ConfigurationIncompatible(f"{param} : the {name} gateway is not configured on this site (its gateway "
                                        f"is {gw.name})", param=param)
    return gw


@dataclass(frozen=True)
class CardInput:
    """A card from a request, checked; ``prefix`` names its parameters in errors."""

    number: str
    expiry_month: int | None  # None with tmp_token: the gateway tells (StoredCard)
    expiry_year: int | None
    prefix: str
    gateway: str = DEFAULT_GATEWAY
    cvv: str | None = None
    copied: dict = field(default_factory=dict)
    tmp_token: str | None = None

    def param(self, name: str) -> str:
        return param_name(self.prefix, name)


def check_expiry(expiry_year: int | None, expiry_month: int | None, now: int, prefix: str) -> None:
    """An expired card is refused the way Chargebee refuses it (payment_method_verification_failed).
    A card given as a gateway token has no expiry in the request (None): the gateway checked it."""
    if expiry_year is None or expiry_month is None:
        return
    if expiry_year > rules.MAX_EXPIRY_YEAR or expiry_year < 1:
        param = param_name(prefix, "expiry_year")
        raise ParamError(f"{param} : invalid value", param=param)
    today = dt.datetime.fromtimestamp(now, dt.UTC)
    bad = rules.expired_field(expiry_year, expiry_month, today.year, today.month)
    if bad:
        raise PaymentMethodVerificationFailed(f"{param_name(prefix, bad)} : The card has expired",
                                              param=param_name(prefix, bad))


def check_country(value: str | None, param: str) -> None:
    if value is not None and not rules.country_ok(value):
        raise ParamError(f"{param} : invalid country code {value!r} (ISO 3166 alpha-2 expected)", param=param)


def check_card(params: dict, prefix: str, now: int) -> CardInput:
    """Validate card parameters (``params`` holds number, expiry_month, ... unprefixed)."""
    def p(name: str) -> str:
        return param_name(prefix, name)

    copied = {k: params[k] for k in COPIED_FIELDS if params.get(k) is not None}
    if params.get("tmp_token") is not None:  # a gateway's token (Stripe): the gateway knows the card
        check_country(params.get("billing_country"), p("billing_country"))
        return CardInput(number="", expiry_month=None, expiry_year=None, prefix=prefix, cvv=params.get("cvv"),
                         gateway=params.get("gateway") or DEFAULT_GATEWAY, copied=copied, tmp_token=params["tmp_token"])
    for required in ("number", "expiry_month", "expiry_year"):
        if params.get(required) is None:
            raise ParamRequired(f"{p(required)} : cannot be blank", param=p(required))
    number = rules.normalize_number(params["number"])
    if not rules.luhn_ok(number):
        raise ParamError(f"{p('number')} : invalid card number", param=p("number"))
    check_expiry(params["expiry_year"], params["expiry_month"], now, prefix)
    check_country(params.get("billing_country"), p("billing_country"))
    return CardInput(number=number, expiry_month=params["expiry_month"], expiry_year=params["expiry_year"],
                     prefix=prefix, gateway=params.get("gateway") or DEFAULT_GATEWAY, cvv=params.get("cvv"),
                     copied=copied)


async def store_at_gateway(ctx: Ctx, gateway: Gateway, card: CardInput) -> StoredCard:
    """Hand the card to the gateway (outside any transaction); returns its token and details."""
    details = CardDetails(number=card.number, expiry_month=card.expiry_month, expiry_year=card.expiry_year,
                          cvv=card.cvv, first_name=card.copied.get("first_name"),
                          last_name=card.copied.get("last_name"), tmp_token=card.tmp_token)
    try:
        return await gateway.store_card(ctx.site_id, details)
    except BillhiveError as exc:
        if exc.param and exc.param.startswith("card["):  # name the field as this operation calls it
            exc.param = card.param(exc.param[len("card["):-1])
        raise


def build_card(customer_id: str, card: CardInput, stored: StoredCard) -> dict:
    """The card document (status is set by ``attach``)."""
    doc: dict = {"status": "valid", "gateway": stored.gateway or card.gateway, "reference_id": stored.token}
    for k in ("first_name", "last_name"):
        if k in card.copied:
            doc[k] = card.copied[k]
    doc.update({"iin": stored.iin, "last4": stored.last4, "card_type": stored.brand,
                "expiry_month": stored.expiry_month or card.expiry_month,
                "expiry_year": stored.expiry_year or card.expiry_year})
    for k in COPIED_FIELDS[2:]:
        if k in card.copied:
            doc[k] = card.copied[k]
    doc.update({"customer_id": customer_id, "masked_number": stored.masked_number, "object": "card"})
    return doc


# ---- helpers for other services -------------------------------------------------------------

def get_card(w: Work, customer_id: str, *, for_update: bool = False) -> dict | None:
    return CARDS.get(w.tx, w.site_id, customer_id, for_update=for_update)


def status_at(w: Work, card: dict) -> str:
    """The card's status at the site clock (valid | expiring | expired)."""
    expires_at = card_expires_at(card)
    assert expires_at is not None
    return rules.card_status(expires_at, w.now, w.site.setting("card_expiring_days"))


def usable_card(w: Work, customer: dict) -> dict | None:
    """The customer's card if it is their payment method and not expired at ``w.now``."""
    card = get_card(w, customer["id"])
    return card if is_usable(w, customer, card) else None


def is_usable(w: Work, customer: dict, card: dict | None) -> bool:
    """Whether ``card`` (the customer's card, loaded) can be charged now: it is the customer's
    payment method and not expired at ``w.now``."""
    pm = customer.get("payment_method")
    if not pm or pm.get("type") != "card" or card is None:
        return False
    return status_at(w, card) != "expired"


JOB_EXPIRING = "card_expiring"  # the job kinds (billhive/services/jobs.py)
JOB_EXPIRED = "card_expired"


def schedule_expiry(w: Work, card: dict) -> None:
    cid = card["customer_id"]
    expires_at = card_expires_at(card)
    assert expires_at is not None
    payload = {"reference_id": card["reference_id"]}
    expiring = rules.expiring_from(expires_at, w.site.setting("card_expiring_days"))
    jobs.schedule(w, JOB_EXPIRING, cid, due_at=max(w.now, expiring), payload=payload)
    jobs.schedule(w, JOB_EXPIRED, cid, due_at=max(w.now, expires_at + 1), payload=payload)


def cancel_expiry(w: Work, customer_id: str) -> None:
    jobs.cancel(w, f"{JOB_EXPIRING}:{customer_id}")
    jobs.cancel(w, f"{JOB_EXPIRED}:{customer_id}")


def payment_method_of(card: dict) -> dict:
    return {"type": "card", "gateway": card["gateway"], "status": card["status"], "reference_id": card["reference_id"]}


def attach(w: Work, customer: dict, card: dict) -> bool:
    """Make ``card`` the customer's card (replacing any) and payment method; schedules its expiry
    jobs. The caller saves the customer and records events. Returns True if the card is new
    (card_added), False if it replaced one (card_updated)."""
    gateways.for_site(w.app.gateways, w.site)  # a site without a gateway keeps no cards (checked before, too)
    existing = get_card(w, customer["id"], for_update=True)
    card["status"] = status_at(w, card)
    if existing is None:
        CARDS.insert(w.tx, w.site_id, card, w.now)
    else:
        CARDS.update(w.tx, w.site_id, card, w.now)
    customer["payment_method"] = payment_method_of(card)
    customer["card_status"] = card["status"]
    schedule_expiry(w, card)
    return existing is None


def detach(w: Work, customer: dict) -> dict | None:
    """Remove the customer's card (and the payment method pointing at it); returns the card."""
    card = get_card(w, customer["id"], for_update=True)
    pm = customer.get("payment_method")
    if pm and pm.get("type") == "card":
        customer.pop("payment_method")
    customer["card_status"] = "no_card"
    if card is None:
        return None
    CARDS.delete(w.tx, w.site_id, customer["id"])
    cancel_expiry(w, customer["id"])
    return card


def order_fields(customer: dict) -> dict:
    """Put the customer's fields in the spec's order, in place (fields come and go:
    payment_method, billing_address, contacts)."""
    customer.setdefault("card_status", "no_card")  # Chargebee's v1 customer: no_card until a card is added
    order = _customer_order()
    ordered = sorted(customer.items(), key=lambda kv: order.get(kv[0], len(order)))
    customer.clear()
    customer.update(ordered)
    return customer


def save_customer(w: Work, customer: dict) -> None:
    """Save a loaded customer."""
    CUSTOMERS.save(w.tx, w.site_id, order_fields(customer), w.now)


@functools.lru_cache(maxsize=1)
def _customer_order() -> dict[str, int]:
    return {name: i for i, name in enumerate((*spec.resource_fields("Customer"), "object"))}


def content(customer: dict, card: dict | None) -> dict:
    """Event content / response: the customer, and the card when there is one."""
    out: dict = {"customer": customer}
    if card is not None:
        out["card"] = card
    return out


# ---- operations ---------------------------------------------------------------------------------

def _customer_now(w: Work, customer_id: str) -> int:
    CUSTOMERS.require(w.tx, w.site_id, customer_id)
    return w.now


async def update_card(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """POST /customers/{id}/credit_card: add or replace the customer's card."""
    gateway = await site_gateway(ctx, params.get("gateway"), "gateway")
    now = await ctx.read(_customer_now, customer_id)
    card = check_card(params, "", now)
    stored = await store_at_gateway(ctx, gateway, card)
    return await ctx.write(_save_card, customer_id, card, stored)


def _save_card(w: Work, customer_id: str, card: CardInput, stored: StoredCard) -> dict:
    customer = CUSTOMERS.require(w.tx, w.site_id, customer_id, for_update=True)
    check_expiry(card.expiry_year, card.expiry_month, w.now, card.prefix)
    doc = build_card(customer_id, card, stored)
    added = attach(w, customer, doc)
    save_customer(w, customer)
    w.emit("card_added" if added else "card_updated", {"customer": customer, "card": doc})
    return {"customer": customer, "card": doc}


async def retrieve(ctx: Ctx, customer_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        card = get_card(w, customer_id)
        if card is None:
            raise not_found("card", customer_id)
        return {"card": card}
    return await ctx.read(run)


async def delete_card(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """Deletes the card; auto_collection turns off (Chargebee does so). No card: succeeds quietly."""
    def run(w: Work) -> dict:
        customer = CUSTOMERS.require(w.tx, w.site_id, customer_id, for_update=True)
        card = detach(w, customer)
        if card is not None:
            customer["auto_collection"] = "off"
            save_customer(w, customer)
            w.emit("card_deleted", {"customer": customer, "card": card})
        return {"customer": customer}
    return await ctx.write(run)


async def switch_gateway(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """Refused with the reason: no card; the target is not the site's gateway (the spec's enum has
    no chargebee); or the card would have to move between vaults, which billhive cannot do."""
    def run(w: Work) -> dict:
        CUSTOMERS.require(w.tx, w.site_id, customer_id)
        card = get_card(w, customer_id)
        if card is None:
            raise InvalidRequest("The customer has no card; switch_gateway applies to card payment methods only")
        target = params["gateway"]
        if target == card["gateway"]:
            raise InvalidRequest(f"gateway : the card is already stored with {target}", param="gateway")
        if target != gateways.gateway_name(w.site):
            raise ConfigurationIncompatible(f"gateway : the {target} gateway is not configured on this site",
                                            param="gateway")
        # the target is the site's gateway (a card stored before the site moved to it): card data
        # cannot be copied between vaults, the customer gives the card again
        raise InvalidRequest("gateway : moving a stored card between gateways is not supported; store the card again "
                             "with the site's gateway", param="gateway")
    return await ctx.read(run)


# ---- scheduler ------------------------------------------------------------------------------------

def _job_card(w: Work, job: jobs.Job) -> dict | None:
    """The card a job was scheduled for, or None if it has since been deleted or replaced."""
    card = get_card(w, job.ref_id, for_update=True)
    if card is None or (job.payload or {}).get("reference_id") != card.get("reference_id"):
        return None
    return card


EMITS = ("card_expiring", "card_expired")  # by _set_status (for docs/coverage.md)


def _set_status(w: Work, card: dict, status: str, event_type: str) -> None:
    card["status"] = status
    CARDS.save(w.tx, w.site_id, card, w.now)
    customer = CUSTOMERS.get(w.tx, w.site_id, card["customer_id"], for_update=True)
    if customer is None:  # pragma: no cover - deleting a customer deletes the card and its jobs
        return
    pm = customer.get("payment_method")
    if pm and pm.get("type") == "card" and pm.get("reference_id") == card["reference_id"]:
        pm["status"] = status
    customer["card_status"] = status  # the customer's one card (cards are keyed by customer)
    save_customer(w, customer)
    w.emit(event_type, {"customer": customer, "card": card})


def on_card_expiring(w: Work, job: jobs.Job) -> None:
    card = _job_card(w, job)
    if card is None:
        return
    status = status_at(w, card)
    if status == "valid":  # card_expiring_days was lowered since scheduling: wait until it applies
        schedule_expiry(w, card)
    elif status == "expiring":
        _set_status(w, card, "expiring", "card_expiring")
    # expired: the card_expired job reports it


def on_card_expired(w: Work, job: jobs.Job) -> None:
    card = _job_card(w, job)
    if card is None:
        return
    if status_at(w, card) != "expired":  # pragma: no cover - the job is due after the expiry month
        schedule_expiry(w, card)
        return
    _set_status(w, card, "expired", "card_expired")
