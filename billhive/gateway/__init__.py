"""Payment gateways: one interface (verify card, charge, refund, void), many gateways.

Every call carries the caller's idempotency key; a gateway must treat a repeated key as
the same operation and answer with its original result (never a second charge). That is
what lets billhive settle an interrupted charge after a crash: ask again with the key.

Which gateway serves a site is decided in one place, ``for_site``: the site's ``gateway``
setting (``stripe``, with ``stripe_secret_key``) when set; else a test site uses the test
gateway and a live site has none and refuses to store cards or charge them
(``ConfigurationIncompatible``). The test gateway never serves a live site: it takes any
Luhn-valid number.
"""

from __future__ import annotations

from collections.abc import Mapping

from billhive.errors import ConfigurationIncompatible
from billhive.gateway.interface import (
    STRIPE,
    TEST_GATEWAY,
    CardDetails,
    Gateway,
    GatewayResult,
    StoredCard,
)
from billhive.gateway.measured import Measured
from billhive.gateway.stripe import StripeGateway
from billhive.gateway.test_gateway import TestGateway
from billhive.sites import Site
from billhive.store.db import Database

__all__ = ["STRIPE", "TEST_GATEWAY", "CardDetails", "Gateway", "GatewayResult", "StoredCard", "default_gateways",
           "for_site", "gateway_name"]


def default_gateways(db: Database) -> dict[str, Gateway]:
    """The gateways billhive runs with, by name (the test gateway keeps its books beside ``db``;
    the Stripe gateway reads each site's key from ``db``), each timed for /metrics."""
    return {TEST_GATEWAY: Measured(TestGateway(db)), STRIPE: Measured(StripeGateway(db))}


def gateway_name(site: Site) -> str | None:
    """The name of the gateway that stores cards and charges for ``site``, or None.

    The site's ``gateway`` setting names it (``stripe``; ``sites.set_settings`` refuses the test
    gateway for a live site and Stripe without its key). Unset, a test site uses the test gateway
    and a live site has none."""
    chosen = site.setting("gateway")
    if chosen == STRIPE:
        return STRIPE
    return TEST_GATEWAY if site.is_test else None


def for_site(gateways: Mapping[str, Gateway], site: Site) -> Gateway:
    """The gateway (of the running ``gateways``, ``App.gateways``) that stores cards and charges for
    ``site``. A site without one refuses: ``ConfigurationIncompatible`` (400), raised before anything
    is stored or charged."""
    name = gateway_name(site)
    gateway = gateways.get(name) if name else None
    if gateway is not None:
        return gateway
    if name is None:
        raise ConfigurationIncompatible(
            f"No payment gateway is configured for the live site {site.name}: cards cannot be stored or charged "
            f"until a real gateway is configured for it (the {TEST_GATEWAY} test gateway serves test sites only)")
    raise ConfigurationIncompatible(f"The {name} payment gateway of site {site.name} is not configured")
