"""The v1 hosted page operations: /api/v1/hosted_pages/checkout_new, checkout_existing,
checkout_onetime_charge, checkout_onetime_addons, and retrieving a page.

Creating a page checks the checkout up front (pages.py: the estimate of the operation it will
run), stores the request beside the page (the ``checkout`` column) and answers the page:
``url`` = ``{public URL}/hosted_pages/{site}/{id}``, state ``created``."""

from __future__ import annotations

import secrets

from billhive.errors import ParamError, ParamRequired, params_renamed
from billhive.services import cards
from billhive.services.hosted_pages import checkout as flow
from billhive.services.hosted_pages import pages
from billhive.store.resources import HOSTED_PAGES
from billhive.util.jsonutil import dumps
from billhive.work.context import Ctx, Origin, Work


async def checkout_new(ctx: Ctx, params: dict) -> dict:
    """POST /hosted_pages/checkout_new — a page that creates a subscription (and its customer)."""
    checkout = {"params": _new_subscription_params(params), "customer": dict(params.get("customer") or {})}
    if "plan_id" not in checkout["params"]:  # the spec marks it required inside subscription[...]
        raise ParamRequired("subscription[plan_id] : cannot be blank", param="subscription[plan_id]")
    with params_renamed(pages.NEW_NAMES):
        await ctx.read(pages.check_new, checkout)
    return await _create_page(ctx, "checkout_new", params, checkout)


async def checkout_existing(ctx: Ctx, params: dict) -> dict:
    """POST /hosted_pages/checkout_existing — a page that changes a subscription (typically one in trial)."""
    sub_id, p = _existing_params(params)
    checkout = {"subscription_id": sub_id, "params": p}
    with params_renamed(pages.EXISTING_NAMES):
        await ctx.read(pages.check_existing, checkout)
    return await _create_page(ctx, "checkout_existing", params, checkout)


async def checkout_onetime_charge(ctx: Ctx, params: dict) -> dict:
    """POST /hosted_pages/checkout_onetime_charge — a page that pays an ad-hoc charge (POST /invoices/charge)."""
    p = {"subscription_id": params["subscription"]["id"], "amount": params["amount"],
         "description": params["description"]}
    return await _checkout_one_off(ctx, "checkout_onetime_charge", params, p)


async def checkout_onetime_addons(ctx: Ctx, params: dict) -> dict:
    """POST /hosted_pages/checkout_onetime_addons — a page that buys non-recurring addons (POST /invoices)."""
    if not params.get("addons"):  # the spec requires addons[id]
        raise ParamRequired("addons[id][0] : cannot be blank", param="addons[id][0]")
    p = {"subscription_id": params["subscription"]["id"], "addons": params["addons"]}
    if params.get("coupon"):
        p["coupon"] = params["coupon"]
    return await _checkout_one_off(ctx, "checkout_onetime_addons", params, p)


async def retrieve(ctx: Ctx, page_id: str, params: dict) -> dict:
    page, checkout = await ctx.read(pages.require, page_id)
    if checkout.get("in_flight"):
        page = await ctx.write(flow.settle_in_flight, page_id)
    return {"hosted_page": page}


# ---- helpers ------------------------------------------------------------------------------------

async def _create_page(ctx: Ctx, page_type: str, params: dict, checkout: dict) -> dict:
    """Store a checked checkout and answer its page (state ``created``)."""
    gateway = (params.get("card") or {}).get("gateway")
    await cards.site_gateway(ctx, gateway, "card[gateway]")  # a checkout takes a card: the site needs a gateway
    checkout.update({"gateway": gateway, "redirect_url": _check_url(params, "redirect_url"),
                     "cancel_url": _check_url(params, "cancel_url"),
                     "iframe_messaging": bool(params.get("iframe_messaging")), "origin": _origin_json(ctx.origin)})
    base_url = ctx.app.config.base_url

    def run(w: Work) -> dict:
        page_id = secrets.token_urlsafe(30)  # the url's secret: 240 random bits
        page: dict = {"id": page_id, "type": page_type, "url": pages.page_url(base_url, w.site.name, page_id),
                      "state": "created"}
        if params.get("pass_thru_content") is not None:
            page["pass_thru_content"] = params["pass_thru_content"]
        page.update({"embed": params.get("embed", True), "created_at": w.now, "expires_at": w.now + pages.TTL})
        if page_type in ("checkout_new", "checkout_existing"):
            page["layout"] = "in_app"  # v1's only layout
        page.update({"content": {}, "object": "hosted_page"})
        HOSTED_PAGES.insert(w.tx, w.site_id, page, w.now, columns={"checkout": dumps(checkout)})
        return {"hosted_page": page}
    return await ctx.write(run)


def _check_url(params: dict, name: str) -> str | None:
    value = params.get(name)
    if value is not None and not pages.URL.match(value):
        raise ParamError(f"{name} : must be an http or https URL", param=name)
    return value


def _origin_json(origin: Origin) -> dict:
    return {"user": origin.user, "origin_user": origin.origin_user, "origin_device": origin.origin_device,
            "skip_actions": origin.skip_actions, "skip_webhooks": origin.skip_webhooks,
            "skip_emails": origin.skip_emails}


def _new_subscription_params(params: dict) -> dict:
    p = dict(params.get("subscription") or {})
    for k in ("billing_cycles", "addons"):
        if k in params:
            p[k] = params[k]
    return p


def _existing_params(params: dict) -> tuple[str, dict]:
    given = dict(params["subscription"])
    sub_id = given.pop("id")
    for k in ("replace_addon_list", "billing_cycles", "addons"):
        if k in params:
            given[k] = params[k]
    return sub_id, given


async def _checkout_one_off(ctx: Ctx, page_type: str, params: dict, p: dict) -> dict:
    checkout = {"params": p}
    pages.one_off_build(page_type, p)  # the checks that need no database
    with params_renamed(pages.ONE_OFF_NAMES):
        await ctx.read(pages.check_one_off, page_type, checkout)
    return await _create_page(ctx, page_type, params, checkout)
