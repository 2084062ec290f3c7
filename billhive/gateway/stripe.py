"""The Stripe gateway (``gateway = stripe``), through the official ``stripe`` library.

Per site: ``billhive site set NAME gateway=stripe stripe_secret_key=sk_... [stripe_api_base=URL]``
(the key is read from the site's settings on each call, so a changed key applies at once).

- A card is stored as a Stripe Customer with the card attached (a PaymentMethod ``pm_...``, or a
  Card ``card_...`` for a ``tok_...`` token); billhive keeps the reference ``cus_.../pm_...`` (the
  card's ``reference_id``, as Chargebee shows Stripe cards), the brand, last four and expiry. A
  raw number is passed to Stripe and never kept (Stripe accepts raw numbers only on accounts
  allowed to send them, e.g. test mode); ``tmp_token`` / payment intents carry Stripe's tokens.
- A charge is an off-session PaymentIntent confirmed at once, with billhive's transaction id as
  Stripe's ``Idempotency-Key`` and in its metadata (``billhive_key``): a repeat answers with the
  first PaymentIntent, and ``lookup`` finds it after a crash.
- A charge that needs 3D Secure (``requires_action``, or Stripe's ``authentication_required``
  decline) fails as Chargebee fails an off-session charge the bank wants authenticated: the
  transaction fails and dunning takes over (the customer is told to update or authenticate the
  card); the PaymentIntent is cancelled so it cannot be completed behind billhive's back.
- Refunds (full or partial) are Stripe Refunds of the PaymentIntent, keyed the same way; a void
  cancels an uncaptured PaymentIntent.

Answers: ``success``; ``failure`` with Stripe's decline code (or error code) and message; and
``timeout`` when Stripe did not answer (or answered ``processing`` / a 5xx): then recovery
settles the transaction from ``lookup``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from billhive import sites
from billhive.errors import (
    ConfigurationIncompatible,
    Overloaded,
    PaymentMethodVerificationFailed,
)
from billhive.gateway.interface import STRIPE, CardDetails, GatewayResult, StoredCard
from billhive.store.db import Database
from billhive.util.lazy import lazy_module

if TYPE_CHECKING:
    import stripe
else:
    stripe = lazy_module("stripe")  # imported by the first Stripe call (billhive.util.lazy)

log = logging.getLogger("billhive.gateway.stripe")

KEY_FIELD = "billhive_key"  # metadata holding billhive's idempotency key (the transaction id)
SITE_FIELD = "billhive_site"
LOOKUP_PAGES = 20  # pages of 100 scanned by a lookup where Stripe's search API is not available
TIMEOUT = 30.0  # seconds a Stripe call may take
BRANDS = {"visa": "visa", "mastercard": "mastercard", "amex": "american_express",
          "american express": "american_express", "discover": "discover", "jcb": "jcb", "diners": "diners_club",
          "diners club": "diners_club"}
AUTH_REQUIRED = ("authentication_required",
                 ("The card issuer requires authentication (3D Secure) for this payment; "
                  "the customer must authenticate or update the card"))


@dataclass(frozen=True)
class Account:
    secret_key: str
    api_base: str


class StripeGateway:
    name = STRIPE

    def __init__(self, db: Database):
        self.db = db
        self._clients: dict[tuple[str, str, int], tuple[stripe.StripeClient, str]] = {}
        self._no_search: set[str] = set()  # API bases without the search API (Stripe fakes)

    def close(self) -> None:
        self._clients.clear()

    # ---- the interface --------------------------------------------------------------------------

    async def store_card(self, site_pk: int, card: CardDetails) -> StoredCard:
        client, _ = await self._client(site_pk)
        name = " ".join(x for x in (card.first_name, card.last_name) if x) or None
        try:
            customer = await client.v1.customers.create_async(params=_drop_none({  # type: ignore[arg-type]
                "name": name, "metadata": {SITE_FIELD: str(site_pk)},
                **({"source": card.tmp_token} if card.tmp_token and card.tmp_token.startswith("tok_") else {})}))
            if card.tmp_token and card.tmp_token.startswith("tok_"):
                method_id = str(customer.default_source)
                method = await client.v1.payment_methods.retrieve_async(method_id)
            else:
                if card.tmp_token:
                    method_id = card.tmp_token
                else:
                    created = await client.v1.payment_methods.create_async(params={  # type: ignore[arg-type]
                        "type": "card", "card": _drop_none({"number": card.number, "exp_month": card.expiry_month,
                                                             "exp_year": card.expiry_year, "cvc": card.cvv})})
                    method_id = created.id
                method = await client.v1.payment_methods.attach_async(method_id, params={"customer": customer.id})
        except stripe.CardError as exc:
            param = "card[tmp_token]" if card.tmp_token else "card[number]"
            raise PaymentMethodVerificationFailed(f"({_code(exc)}) {_message(exc)}", param=param) from None
        except stripe.InvalidRequestError as exc:
            param = "card[tmp_token]" if card.tmp_token else _card_param(exc)
            raise PaymentMethodVerificationFailed(f"({_code(exc)}) {_message(exc)}", param=param) from None
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise ConfigurationIncompatible(f"Stripe refused the site's secret key: {_message(exc)}") from None
        except stripe.StripeError as exc:  # unreachable, 5xx, rate limited: nothing billhive keeps
            raise Overloaded(f"Stripe did not store the card, try again: {_message(exc)}") from None
        return _stored(customer.id, method_id, method, card)

    async def charge(self, site_pk: int, idempotency_key: str, token: str, amount: int,
                     currency: str) -> GatewayResult:
        customer, method = _split(token)
        if not customer:
            return GatewayResult("failure", "", "invalid_reference", "The card is not a Stripe card")
        client, _ = await self._client(site_pk)
        try:
            intent = await client.v1.payment_intents.create_async(params={
                "amount": amount, "currency": currency.lower(), "customer": customer, "payment_method": method,
                "confirm": True, "off_session": True,
                "metadata": {KEY_FIELD: idempotency_key, SITE_FIELD: str(site_pk)}},
                options={"idempotency_key": idempotency_key})
        except stripe.CardError as exc:
            pi = getattr(exc.error, "payment_intent", None) if exc.error else None
            ref = str(pi.id) if pi is not None and getattr(pi, "id", None) else ""
            if _code(exc) == AUTH_REQUIRED[0]:
                await self._cancel_quietly(client, ref)
                return GatewayResult("failure", ref, *AUTH_REQUIRED)
            return GatewayResult("failure", ref, _code(exc), _message(exc))
        except stripe.IdempotencyError:  # the key was used with other parameters: what did it do?
            return await self.lookup(site_pk, idempotency_key) or _unknown("idempotency_conflict")
        except (stripe.InvalidRequestError, stripe.AuthenticationError, stripe.PermissionError) as exc:
            return GatewayResult("failure", "", _code(exc), _message(exc))  # refused: no charge was made
        except stripe.StripeError as exc:  # no answer / 5xx / 429: outcome unknown, recovery asks again
            log.warning("stripe charge %s: no answer (%s)", idempotency_key, exc)
            return _unknown(_code(exc), _message(exc))
        result = _intent_result(intent)
        if intent.status == "requires_action":
            await self._cancel_quietly(client, intent.id)
        return result

    async def refund(self, site_pk: int, idempotency_key: str, charge_reference: str, amount: int,
                     currency: str) -> GatewayResult:
        if not charge_reference.startswith("pi_"):
            return GatewayResult("failure", "", "invalid_reference", "No Stripe payment to refund")
        client, _ = await self._client(site_pk)
        try:
            refund = await client.v1.refunds.create_async(params={
                "payment_intent": charge_reference, "amount": amount,
                "metadata": {KEY_FIELD: idempotency_key, SITE_FIELD: str(site_pk)}},
                options={"idempotency_key": idempotency_key})
        except stripe.IdempotencyError:
            return await self.lookup(site_pk, idempotency_key) or _unknown("idempotency_conflict")
        except (stripe.InvalidRequestError, stripe.CardError, stripe.AuthenticationError,
                stripe.PermissionError) as exc:
            return GatewayResult("failure", "", _code(exc), _message(exc))
        except stripe.StripeError as exc:
            log.warning("stripe refund %s: no answer (%s)", idempotency_key, exc)
            return _unknown(_code(exc), _message(exc))
        return _refund_result(refund)

    async def void(self, site_pk: int, idempotency_key: str, charge_reference: str) -> GatewayResult:
        client, _ = await self._client(site_pk)
        try:
            intent = await client.v1.payment_intents.cancel_async(charge_reference,
                                                                  options={"idempotency_key": idempotency_key})
        except (stripe.InvalidRequestError, stripe.AuthenticationError, stripe.PermissionError) as exc:
            return GatewayResult("failure", charge_reference, _code(exc), _message(exc))
        except stripe.StripeError as exc:
            return _unknown(_code(exc), _message(exc))
        return GatewayResult("success", str(intent.id))

    async def lookup(self, site_pk: int, idempotency_key: str) -> GatewayResult | None:
        """The PaymentIntent or Refund carrying ``idempotency_key`` in its metadata, as a result;
        None if Stripe has neither. Raises when Stripe cannot be asked (recovery tries later)."""
        client, base = await self._client(site_pk)
        intent = await self._find_intent(client, base, idempotency_key)
        if intent is not None:
            return _intent_result(intent)
        refund = await _scan(client.v1.refunds.list_async, idempotency_key)
        return _refund_result(refund) if refund is not None else None

    # ---- helpers -------------------------------------------------------------------------------------

    async def _client(self, site_pk: int) -> tuple[stripe.StripeClient, str]:
        """The site's Stripe client and its API base ("" for Stripe's own)."""
        site = await self.db.read(lambda tx: sites.load(tx, site_pk))
        account = Account(site.setting("stripe_secret_key"), site.setting("stripe_api_base"))
        if not account.secret_key:
            raise ConfigurationIncompatible(f"The stripe gateway of site {site.name} has no secret key "
                                            "(billhive site set NAME stripe_secret_key=sk_...)")
        # one client (one httpx connection pool) per key, base and event loop
        cache_key = (account.secret_key, account.api_base, id(asyncio.get_running_loop()))
        client = self._clients.get(cache_key)
        if client is None:
            client = (stripe.StripeClient(
                account.secret_key, base_addresses={"api": account.api_base} if account.api_base else None,
                http_client=stripe.HTTPXClient(timeout=TIMEOUT), max_network_retries=0), account.api_base)
            self._clients[cache_key] = client
        return client

    async def _find_intent(self, client: stripe.StripeClient, base: str, key: str) -> Any:
        if base not in self._no_search:
            try:
                found = await client.v1.payment_intents.search_async(
                    params={"query": f"metadata['{KEY_FIELD}']:'{key}'", "limit": 1})
                # Stripe's search is eventually consistent (new objects appear within about a minute):
                # not found here, recovery charges again with the same Idempotency-Key, which Stripe
                # answers with the original PaymentIntent - never a second charge
                return found.data[0] if found.data else None
            except stripe.InvalidRequestError as exc:
                if exc.http_status != 404:
                    raise
                self._no_search.add(base)  # a fake without search: scan the list instead
        return await _scan(client.v1.payment_intents.list_async, key)

    async def _cancel_quietly(self, client: stripe.StripeClient, intent_id: str) -> None:
        if not intent_id:
            return
        try:
            await client.v1.payment_intents.cancel_async(intent_id)
        except stripe.StripeError as exc:
            log.warning("stripe: could not cancel %s awaiting authentication: %s", intent_id, exc)


async def _scan(list_async: Any, key: str) -> Any:
    """The first object of a Stripe list (newest first) whose metadata carries ``key``."""
    params: dict[str, Any] = {"limit": 100}
    for _ in range(LOOKUP_PAGES):
        page = await list_async(params=params)
        for obj in page.data:
            if (obj.to_dict().get("metadata") or {}).get(KEY_FIELD) == key:
                return obj
        if not page.has_more or not page.data:
            return None
        params["starting_after"] = page.data[-1].id
    return None


def _intent_result(intent: Any) -> GatewayResult:
    ref = str(intent.id)
    status = intent.status
    if status == "succeeded":
        return GatewayResult("success", ref)
    if status in ("processing", "requires_capture"):
        return GatewayResult("timeout", ref, "processing", "Stripe is still processing the payment")
    if status == "requires_action":
        return GatewayResult("failure", ref, *AUTH_REQUIRED)
    error = getattr(intent, "last_payment_error", None)
    if error:
        code = getattr(error, "decline_code", None) or getattr(error, "code", None) or "card_declined"
        if code == AUTH_REQUIRED[0]:
            return GatewayResult("failure", ref, *AUTH_REQUIRED)
        return GatewayResult("failure", ref, str(code), str(getattr(error, "message", None) or "The payment failed"))
    if status == "canceled":
        return GatewayResult("failure", ref, "canceled", "The payment was cancelled at Stripe")
    return GatewayResult("failure", ref, status or "failure", "The payment did not complete at Stripe")


def _refund_result(refund: Any) -> GatewayResult:
    ref = str(refund.id)
    if refund.status == "succeeded":
        return GatewayResult("success", ref)
    if refund.status in ("pending", "requires_action"):
        return GatewayResult("timeout", ref, "pending", "Stripe has not completed the refund yet")
    reason = getattr(refund, "failure_reason", None) or refund.status or "failed"
    return GatewayResult("failure", ref, str(reason), "The refund failed at Stripe")


def _stored(customer_id: str, method_id: str, method: Any, card: CardDetails) -> StoredCard:
    raw = method.to_dict()
    details = raw.get("card") or raw  # a PaymentMethod has .card; a Card (card_...) is the card
    brand = BRANDS.get(str(details.get("brand") or "").lower(), "other")
    last4 = str(details.get("last4") or (card.number[-4:] if card.number else ""))
    # the card resource's iin is six characters; Stripe does not tell a token's first six digits
    iin = card.number[:6] if card.number else str(details.get("iin") or "******")
    length = {"american_express": 15, "diners_club": 14}.get(brand, 16)
    return StoredCard(token=f"{customer_id}/{method_id}", brand=brand, last4=last4, iin=iin,
                      masked_number="*" * (len(card.number) - 4 if card.number else length - 4) + last4,
                      expiry_month=_int_or_none(details.get("exp_month")) or card.expiry_month,
                      expiry_year=_int_or_none(details.get("exp_year")) or card.expiry_year, gateway=STRIPE)


def _split(token: str) -> tuple[str, str]:
    customer, _, method = token.partition("/")
    return (customer, method) if customer.startswith("cus_") and method else ("", "")


def _unknown(code: str, text: str = "Stripe did not answer") -> GatewayResult:
    return GatewayResult("timeout", "", code, text)


def _code(exc: stripe.StripeError) -> str:
    err = exc.error
    return str((getattr(err, "decline_code", None) if err else None) or exc.code or type(exc).__name__)


def _message(exc: stripe.StripeError) -> str:
    return str(exc.user_message or getattr(exc, "_message", None) or exc)[:250]


def _card_param(exc: stripe.StripeError) -> str:
    field = str(getattr(exc, "param", None) or "")
    names = {"exp_month": "expiry_month", "exp_year": "expiry_year", "cvc": "cvv"}
    for stripe_name, ours in names.items():
        if stripe_name in field:
            return f"card[{ours}]"
    return "card[number]"


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}

