"""Payment gateways: one interface (verify card, charge, refund, void), many gateways.

Every call carries the caller's idempotency key; a gateway must treat a repeated key as
the same operation and answer with its original result (never a second charge). That is
what lets billhive settle an interrupted charge after a crash: ask again with the key.

Which gateway serves a site is decided in one place, ``for_site``: a test site uses the test
gateway; a live site uses the real gateway configured for it - and until one is, it has none
and refuses to store cards or charge them (``ConfigurationIncompatible``). The test gateway
never serves a live site: it takes any Luhn-valid number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from billhive.errors import ConfigurationIncompatible

if TYPE_CHECKING:
    from billhive.runtime import App
    from billhive.sites import Site

TEST_GATEWAY = "chargebee"  # Chargebee's name for its test gateway (billhive.gateway.test_gateway)


@dataclass(frozen=True)
class CardDetails:
    number: str
    expiry_month: int
    expiry_year: int
    cvv: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True)
class StoredCard:
    token: str  # the gateway's reference for the card (never the number)
    brand: str  # visa | mastercard | american_express | discover | jcb | diners_club | other
    last4: str
    iin: str
    masked_number: str


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


def default_gateways(app: "App") -> dict[str, Gateway]:
    try:
        from billhive.gateway.test_gateway import TestGateway
    except ImportError:  # pragma: no cover - the test gateway ships with billhive
        return {}
    return {"chargebee": TestGateway(app)}


def gateway_name(site: "Site") -> str | None:
    """The name of the gateway that stores cards and charges for ``site``, or None.

    Test sites use the test gateway. A live site uses the real gateway configured for it; billhive
    has no real gateway yet, so a live site has none. (A real gateway plugs in here: a per-site
    setting such as ``gateway=stripe`` naming a gateway registered in ``App.gateways``.)"""
    return TEST_GATEWAY if site.is_test else None


def for_site(app: "App", site: "Site") -> Gateway:
    """The gateway that stores cards and charges for ``site``. A site without one refuses:
    ``ConfigurationIncompatible`` (400), raised before anything is stored or charged."""
    name = gateway_name(site)
    gateway = app.gateways.get(name) if name else None
    if gateway is not None:
        return gateway
    if name is None:
        raise ConfigurationIncompatible(
            f"No payment gateway is configured for the live site {site.name}: cards cannot be stored or charged "
            f"until a real gateway is configured for it (the {TEST_GATEWAY} test gateway serves test sites only)")
    raise ConfigurationIncompatible(f"The {name} payment gateway of site {site.name} is not configured")
