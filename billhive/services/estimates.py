"""Estimates: /api/v1/estimates/... and the subscription estimates.

Each estimate runs the *compose* step of the operation it estimates (services/subscriptions.py:
``compose_create``, ``compose_update``, ``compose_renewal``, ``compose_activation``) in a read
transaction and shows the invoice it would bill, built in memory by ``services/invoicing`` —
never saved, nothing redeemed, no job scheduled. The numbers cannot differ from the operation's.

- ``collect_now``: true when the operation bills now; otherwise the estimate is of the next
  invoice (the trial end or start of the subscription, or the renewal).
- ``use_customer_balances``: the customer's promotional credits (a discount), refundable credits
  and excess payments (``credits_applied``) are applied in closing order (domain/invoices.allocate).
"""

from __future__ import annotations

import copy

from billhive.domain import invoices as D
from billhive.errors import InvalidState, ParamRequired, params_renamed
from billhive.services import cards, credits, invoices
from billhive.services import subscriptions as subs
from billhive.work.context import Ctx, Work

_LINE_FIELDS = ("date_from", "date_to", "unit_amount", "quantity", "amount", "is_taxed", "tax", "tax_rate",
                "reference_line_item_id", "description", "type", "entity_type", "entity_id", "object")


def _apply_balances(inv: dict, customer: dict) -> None:
    alloc = D.allocate(inv, promotional=credits.balance(customer, "promotional"),
                       refundable=credits.balance(customer, "refundable"), excess=credits.balance(customer, "excess"))
    if alloc.promotional:
        inv["discounts"].append({"amount": alloc.promotional, "description": "Promotional Credits",
                                 "type": "account_credits"})
        D.recompute(inv)
    inv["credits_applied"] = int(inv.get("credits_applied", 0)) + alloc.refundable + alloc.excess
    D.recompute(inv)


def estimate_of(w: Work, inv: dict | None, sub: dict | None, *, collect_now: bool, customer: dict | None = None,
                use_balances: bool = False) -> dict:
    """The v1 Estimate of an invoice built in memory (or an empty one)."""
    inv = copy.deepcopy(inv) if inv is not None else {"line_items": [], "discounts": [], "taxes": [],
                                                      "price_type": "tax_exclusive"}
    D.recompute(inv)
    if use_balances and customer is not None and inv["amount_due"] > 0:
        _apply_balances(inv, customer)
    est: dict = {"created_at": w.now, "recurring": bool(inv.get("recurring", True))}
    if sub is not None:
        est["subscription_id"] = sub["id"]
        est["subscription_status"] = sub["status"]
        if sub.get("current_term_end") is not None:
            est["term_ends_at"] = sub["current_term_end"]
    est.update({"collect_now": collect_now, "price_type": inv.get("price_type", "tax_exclusive"),
                "amount": inv["amount"], "credits_applied": int(inv.get("credits_applied", 0)),
                "amount_due": inv["amount_due"], "sub_total": inv["sub_total"],
                "line_items": [{k: li[k] for k in _LINE_FIELDS if k in li} for li in inv.get("line_items", ())],
                "discounts": list(inv.get("discounts", ())), "taxes": list(inv.get("taxes", ())),
                "object": "estimate"})
    return est


def _next_invoice(w: Work, sub: dict, st: subs.State, *, include_delayed: bool,
                  customer: dict | None = None) -> tuple[dict | None, dict]:
    """(invoice, subscription after it) of the subscription's next billing, on copies."""
    status = sub["status"]
    if status == "cancelled":
        raise InvalidState(f"Subscription {sub['id']} is cancelled; it has no renewal to estimate")
    if status == "in_trial" and st.cancel_scheduled:  # cancelled at the trial end: only what waited
        c = subs.compose_delayed_only(w, sub, st, int(sub["current_term_end"]))
        return c.invoice, c.sub
    if status in ("future", "in_trial"):  # the first invoice always carries what waited for it
        at = sub["current_term_end"] if status == "in_trial" else (sub.get("trial_end") or sub["start_date"])
        c = subs.compose_activation(w, sub, st, int(at), customer)
        return c.invoice, c.sub
    at = int(sub["current_term_end"])
    if status == "non_renewing":
        if not include_delayed:
            return None, sub
        c = subs.compose_delayed_only(w, sub, st, at)
        return c.invoice, c.sub
    c = subs.compose_renewal(w, sub, st, at, include_delayed=include_delayed)
    return c.invoice, c.sub


def renewal_estimate_of(w: Work, sub: dict, st: subs.State, *, include_delayed: bool = True,
                        use_balances: bool = False) -> dict:
    inv, after = _next_invoice(w, sub, st, include_delayed=include_delayed)
    customer = subs._customer(w, sub["customer_id"]) if use_balances else None
    return estimate_of(w, inv, after, collect_now=False, customer=customer, use_balances=use_balances)


# ---- operations -----------------------------------------------------------------------------------

async def renewal_estimate(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """GET /subscriptions/{id}/renewal_estimate"""
    def run(w: Work) -> dict:
        sub, st = subs._require(w, subscription_id)
        return {"estimate": renewal_estimate_of(w, sub, st, include_delayed=params.get("include_delayed_charges", True),
                                                use_balances=bool(params.get("use_customer_balances")))}
    return await ctx.read(run)


def create_estimate_of(w: Work, params: dict, customer: dict, use_balances: bool) -> dict:
    c = subs.compose_create(w, params, customer, use=False)
    if c.invoice is not None:
        return estimate_of(w, c.invoice, c.sub, collect_now=True, customer=customer, use_balances=use_balances)
    inv, after = _next_invoice(w, c.sub, c.st, include_delayed=True, customer=customer)
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
        est = create_estimate_of(w, p, customer, False)
        return {"estimate": est}
    return await ctx.read(run)


async def create_subscription_for_customer(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """GET /customers/{id}/create_subscription_estimate"""
    p = _create_params(params)

    def run(w: Work) -> dict:
        customer = subs._customer(w, customer_id)
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
    sub, st = subs._require(w, sub_id)
    c = subs.compose_update(w, sub, st, p, use=False)
    customer = subs._customer(w, sub["customer_id"])
    if c.invoice is not None:
        return estimate_of(w, c.invoice, c.sub, collect_now=True, customer=customer, use_balances=use_balances)
    inv, after = _next_invoice(w, c.sub, c.st, include_delayed=include_delayed)
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
    when it closes the invoice); taxes are not computed, so customer[vat_number], customer[taxability]
    and billing_address change nothing."""
    given = params.get("invoice") or {}
    p = {k: given[k] for k in ("customer_id", "subscription_id", "po_number") if k in given}
    for k in ("coupon", "addons", "charges", "shipping_address"):
        if k in params:
            p[k] = params[k]
    cards.check_country((params.get("billing_address") or {}).get("country"), "billing_address[country]")
    build = invoices.create_lines(p)
    with params_renamed({"customer_id": "invoice[customer_id]", "subscription_id": "invoice[subscription_id]"}):
        return await ctx.read(lambda w: {"estimate": invoice_estimate_of(w, p, build)})
