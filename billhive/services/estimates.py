"""Estimates: /api/v1/estimates/... and the subscription estimates.

An estimate is the operation's decision without the save: each runs the *compose* step of the
operation it estimates (services/subscriptions/billing.py: ``compose_create``, ``compose_update``,
``compose_next``) in a read transaction and shows the invoice it would bill, built in memory by
``services/invoicing`` — never saved, nothing redeemed, no job scheduled. The numbers cannot
differ from the operation's. The Estimate document itself is domain/estimates.py.

- ``collect_now``: true when the operation bills now; otherwise the estimate is of the next
  invoice (the trial end or start of the subscription, or the renewal).
- ``use_customer_balances``: the customer's promotional credits (a discount), refundable credits
  and excess payments (``credits_applied``) are applied in closing order (domain/invoices.allocate).
"""

from __future__ import annotations

from billhive.errors import ParamRequired, params_renamed
from billhive.services import cards, invoices
from billhive.services.subscriptions import billing, catalog, state
from billhive.services.subscriptions.billing import estimate_of
from billhive.work.context import Ctx, Work

# ---- operations -----------------------------------------------------------------------------------

async def renewal_estimate(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """GET /subscriptions/{id}/renewal_estimate"""
    def run(w: Work) -> dict:
        sub, st = state.require(w, subscription_id)
        return {"estimate": billing.renewal_estimate(w, sub, st,
                                                     include_delayed=params.get("include_delayed_charges", True),
                                                     use_balances=bool(params.get("use_customer_balances")))}
    return await ctx.read(run)


def create_estimate_of(w: Work, params: dict, customer: dict, use_balances: bool) -> dict:
    c = billing.compose_create(w, params, customer, use=False)
    if c.invoice is not None:
        return estimate_of(w, c.invoice, c.sub, collect_now=True, customer=customer, use_balances=use_balances)
    inv, after = billing.compose_next(w, c.sub, c.st, include_delayed=True, customer=customer)
    return estimate_of(w, inv, after, collect_now=False, customer=customer, use_balances=use_balances)


def _create_params(params: dict) -> dict:
    p = dict(params.get("subscription") or {})
    for k in ("billing_cycles", "addons", "shipping_address"):
        if k in params:
            p[k] = params[k]
    if "plan_id" not in p:
        raise ParamRequired("subscription[plan_id] : cannot be blank", param="subscription[plan_id]")
    return p


async def create_subscription(ctx: Ctx, params: dict) -> dict:
    """POST /estimates/create_subscription — for a customer that does not exist yet."""
    p = _create_params(params)

    def run(w: Work) -> dict:
        customer = {"id": "__estimate__", "auto_collection": "on", "object": "customer"}
        if (params.get("customer") or {}).get("vat_number"):
            customer["vat_number"] = params["customer"]["vat_number"]
        if params.get("billing_address"):
            customer["billing_address"] = params["billing_address"]
        if (params.get("customer") or {}).get("taxability"):
            customer["taxability"] = params["customer"]["taxability"]
        est = create_estimate_of(w, p, customer, False)
        return {"estimate": est}
    return await ctx.read(run)


async def create_subscription_for_customer(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """GET /customers/{id}/create_subscription_estimate"""
    p = _create_params(params)

    def run(w: Work) -> dict:
        customer = catalog.get_customer(w, customer_id)
        return {"estimate": create_estimate_of(w, p, customer, bool(params.get("use_customer_balances")))}
    return await ctx.read(run)


async def update_subscription(ctx: Ctx, params: dict) -> dict:
    """POST /estimates/update_subscription — what update_a_subscription would bill now, or (when
    it bills nothing now) the invoice at the end of the term after the change."""
    given = dict(params.get("subscription") or {})
    sub_id = given.pop("id")
    p = {**given}
    for k in ("replace_addon_list", "billing_cycles", "prorate", "end_of_term", "addons"):
        if k in params:
            p[k] = params[k]
    use_balances = bool(params.get("use_customer_balances"))
    include_delayed = bool(params.get("include_delayed_charges"))
    return await ctx.read(lambda w: {"estimate": update_estimate_of(w, sub_id, p, include_delayed=include_delayed,
                                                                    use_balances=use_balances)})


def update_estimate_of(w: Work, sub_id: str, p: dict, *, include_delayed: bool, use_balances: bool) -> dict:
    sub, st = state.require(w, sub_id)
    c = billing.compose_update(w, sub, st, p, use=False)
    customer = catalog.get_customer(w, sub["customer_id"])
    if c.invoice is not None:
        return estimate_of(w, c.invoice, c.sub, collect_now=True, customer=customer, use_balances=use_balances)
    inv, after = billing.compose_next(w, c.sub, c.st, include_delayed=include_delayed)
    return estimate_of(w, inv, after, collect_now=False, customer=customer, use_balances=use_balances)


# ---- one-off invoices ------------------------------------------------------------------------------

def invoice_estimate_of(w: Work, params: dict, build: invoices.Build, *, use_balances: bool = False) -> dict:
    """The estimate of POST /invoices (or /invoices/charge...): the invoice ``invoices.compose_one_off``
    builds, which the operation then closes; collected now."""
    inv, customer = invoices.compose_one_off(w, params, build, use=False)
    est = estimate_of(w, inv, None, collect_now=True, customer=customer, use_balances=use_balances)
    if inv.get("subscription_id"):
        est = {"created_at": est.pop("created_at"), "recurring": est.pop("recurring"),
               "subscription_id": inv["subscription_id"], **est}
    return est


async def create_invoice(ctx: Ctx, params: dict) -> dict:
    """POST /estimates/create_invoice — what POST /invoices would bill now. Like the subscription
    estimates without use_customer_balances, balances are not applied (the operation applies them
    when it closes the invoice). Taxed as POST /invoices taxes it: the customer's taxability and
    addresses (shipping_address when given); this request's customer[taxability] and
    billing_address change nothing."""
    given = params.get("invoice") or {}
    p = {k: given[k] for k in ("customer_id", "subscription_id", "po_number") if k in given}
    for k in ("coupon", "addons", "charges", "shipping_address"):
        if k in params:
            p[k] = params[k]
    cards.check_country((params.get("billing_address") or {}).get("country"), "billing_address[country]")
    build = invoices.create_lines(p)
    with params_renamed({"customer_id": "invoice[customer_id]", "subscription_id": "invoice[subscription_id]"}):
        return await ctx.read(lambda w: {"estimate": invoice_estimate_of(w, p, build)})
