"""The payment gateway interface: what billhive asks of a gateway, and the values it answers.

Every call carries the caller's idempotency key; a gateway must treat a repeated key as the
same operation and answer with its original result (never a second charge)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

TEST_GATEWAY = "chargebee"  # Chargebee's name for its test gateway (billhive.gateway.test_gateway)
STRIPE = "stripe"  # billhive.gateway.stripe


@dataclass(frozen=True)
class CardDetails:
    """A card to store: its number and expiry, or (``tmp_token``) a gateway's token for a card the
    browser already gave the gateway (Stripe's ``tok_...`` / ``pm_...``; then number is "")."""
    number: str
    expiry_month: int | None
    expiry_year: int | None
    cvv: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    tmp_token: str | None = None


@dataclass(frozen=True)
class StoredCard:
    token: str  # the gateway's reference for the card (never the number)
    brand: str  # visa | mastercard | american_express | discover | jcb | diners_club | other
    last4: str
    iin: str
    masked_number: str
    expiry_month: int | None = None  # the gateway's, for a card stored from a token
    expiry_year: int | None = None
    gateway: str = ""  # the name of the gateway that stored it


@dataclass(frozen=True)
class GatewayResult:
    status: str  # success | failure | timeout
    reference: str  # the gateway's transaction id (id_at_gateway)
    error_code: str | None = None
    error_text: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"


class Gateway(Protocol):
    name: str

    async def store_card(self, site_pk: int, card: CardDetails) -> StoredCard: ...

    async def charge(self, site_pk: int, idempotency_key: str, token: str, amount: int,
                     currency: str) -> GatewayResult: ...

    async def refund(self, site_pk: int, idempotency_key: str, charge_reference: str, amount: int,
                     currency: str) -> GatewayResult: ...

    async def void(self, site_pk: int, idempotency_key: str, charge_reference: str) -> GatewayResult: ...

    async def lookup(self, site_pk: int, idempotency_key: str) -> GatewayResult | None:
        """The result of an earlier call with this key, or None if the gateway never saw it."""
        ...
