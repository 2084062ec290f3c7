"""Addresses: labelled addresses of a subscription (``GET /addresses``, ``POST /addresses``).

An address is keyed by (subscription_id, label). The subscription must exist on the site
(404 otherwise, as Chargebee answers for an unknown subscription). ``update`` adds or
replaces the whole address: fields not given are cleared. No events (Chargebee v1 has no
address events).
"""

from __future__ import annotations

from billhive.errors import not_found
from billhive.services import cards
from billhive.store.resources import ADDRESSES, SUBSCRIPTIONS, address_row_id
from billhive.work.context import Ctx, Work

FIELDS = ("first_name", "last_name", "email", "company", "phone", "addr", "extended_addr", "extended_addr2", "city",
          "state_code", "state", "country", "zip")


def _subscription(w: Work, subscription_id: str) -> None:
    SUBSCRIPTIONS.require(w.tx, w.site_id, subscription_id, param="subscription_id")


async def retrieve(ctx: Ctx, params: dict) -> dict:
    def run(w: Work) -> dict:
        _subscription(w, params["subscription_id"])
        key = {"subscription_id": params["subscription_id"], "label": params["label"]}
        address = ADDRESSES.get(w.tx, w.site_id, address_row_id(key))
        if address is None:
            raise not_found("address", f"{params['subscription_id']} with label {params['label']}", param="label")
        return {"address": address}
    return await ctx.read(run)


async def update(ctx: Ctx, params: dict) -> dict:
    cards.check_country(params.get("country"), "country")

    def run(w: Work) -> dict:
        _subscription(w, params["subscription_id"])
        address: dict = {"label": params["label"]}
        address.update({k: params[k] for k in FIELDS if params.get(k) is not None})
        address["subscription_id"] = params["subscription_id"]
        address["object"] = "address"
        if ADDRESSES.exists(w.tx, w.site_id, address_row_id(address)):
            ADDRESSES.update(w.tx, w.site_id, address, w.now)
        else:
            ADDRESSES.insert(w.tx, w.site_id, address, w.now)
        return {"address": address}
    return await ctx.write(run)
