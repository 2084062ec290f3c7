"""Subscriptions: the /api/v1/subscriptions/... operations, one async function each.

Every operation has the same shape: load, *compose* the outcome on copies (billing.py: the
subscription after the change and the invoice it bills, in memory), then *commit* it (commit.py:
save, redeem, close or insert the invoice, schedule jobs, record events) in one transaction, and
charge after commit. Estimates (services/estimates.py) run the same compose step and never commit.

``create_unit`` and ``update_unit`` are the write units of create and update, also run by hosted
checkout pages (services/hosted_pages.py) inside their own transaction.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import or_, select

from billhive.domain import subscriptions as R
from billhive.errors import (
    DuplicateEntry,
    not_found,
)
from billhive.services import cards, credits, csv_tax_rules, dunning, invoicing, transactions
from billhive.services.subscriptions import billing, catalog
from billhive.services.subscriptions.commit import (
    Outcome,
    cancel_jobs,
    cancel_now,
    content,
    finish,
    issue,
    record_event,
    require_payment_method,
    reschedule,
)
from billhive.services.subscriptions.payment_details import (
    PaymentIn,
    apply_payment,
    new_customer,
    prepare_payment,
)
from billhive.services.subscriptions.state import (
    LIVE,
    State,
    T,
    require,
    save,
    with_scheduled,
)
from billhive.store import schema as S
from billhive.store.lists import ListRequest, fetch_page
from billhive.store.resources import CARDS, CUSTOMERS, SUBSCRIPTIONS
from billhive.util.jsonutil import dumps
from billhive.work import jobs
from billhive.work.context import Ctx, Work

# event types this module emits through a variable (the payment details given with a request)
EMITS = ("card_added", "card_updated", "card_deleted")


# ==== create ==========================================================================================

async def create(ctx: Ctx, params: dict) -> dict:
    """POST /subscriptions — a subscription with its customer (customer[...], card[...],
    payment_intent[...] or payment_method[...], billing_address[...])."""
    pay = await prepare_payment(ctx, params)
    return await finish(ctx, await ctx.write(create_unit, params, None, pay))


async def create_for_customer(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """POST /customers/{id}/subscriptions (payment_intent[...] gives the customer its card first)."""
    pay = await prepare_payment(ctx, params)
    return await finish(ctx, await ctx.write(create_unit, params, customer_id, pay))


# ==== reads =============================================================================================

async def retrieve(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    return await ctx.read(_view, subscription_id)


async def retrieve_with_scheduled_changes(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        sub, st = require(w, subscription_id)
        return content(w, with_scheduled(sub, st))
    return await ctx.read(run)


async def list_subscriptions(ctx: Ctx, params: dict) -> dict:
    return await _page(ctx, params["_list"])


async def list_for_customer(ctx: Ctx, customer_id: str, params: dict) -> dict:
    return await _page(ctx, params["_list"], T.c.customer_id == customer_id, customer_id=customer_id)


# ==== update ============================================================================================

async def update(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """POST /subscriptions/{id} — plan, quantity, addons, coupon, cycles; now (prorated) or at term end."""
    pay = await prepare_payment(ctx, params)
    return await finish(ctx, await ctx.write(update_unit, subscription_id, params, pay))


# ==== cancel, reactivate, scheduled cancellation ==============================================================

async def cancel(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """POST /subscriptions/{id}/cancel — now, or at the end of the term (or trial)."""
    def run(w: Work) -> Outcome:
        sub, st = require(w, subscription_id, for_update=True)
        R.require_status(sub, LIVE, "cancel it")
        if not params.get("end_of_term"):
            sub, inv, charge = cancel_now(w, sub, st, w.now)
            return Outcome(content(w, sub, inv), [charge] if charge else [])
        sub, st = R.schedule_cancellation(sub, st)
        save(w, sub, st)
        reschedule(w, sub, st)
        return Outcome(record_event(w, "subscription_cancellation_scheduled", sub))
    return await finish(ctx, await ctx.write(run))


async def remove_scheduled_cancellation(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        sub, st = require(w, subscription_id, for_update=True)
        plan = catalog.current_plan(w, sub["plan_id"])
        sub, st = R.remove_cancellation(sub, st, params.get("billing_cycles", plan.get("billing_cycles")))
        save(w, sub, st)
        reschedule(w, sub, st)
        return record_event(w, "subscription_scheduled_cancellation_removed", sub)
    return await ctx.write(run)


async def reactivate(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    pay = await prepare_payment(ctx, params)

    def run(w: Work) -> Outcome:
        sub, st = require(w, subscription_id, for_update=True)
        if pay.intent_id is not None:  # the authorized card pays the reactivation's invoice
            customer = catalog.get_customer(w, sub["customer_id"], for_update=True)
            for event, card in apply_payment(w, customer, pay):
                cards.save_customer(w, customer)
                w.emit(event, cards.content(customer, card))
        c = billing.compose_reactivation(w, sub, st, params)
        save(w, c.sub, c.st)
        charge = None
        if c.invoice is not None:
            charge = issue(w, c.invoice, may_pend=False)
            require_payment_method(w, c.invoice, charge)
        reschedule(w, c.sub, c.st)
        return Outcome(record_event(w, "subscription_reactivated", c.sub, c.invoice), [charge] if charge else [])
    return await finish(ctx, await ctx.write(run))


# ==== delete, term end, scheduled changes ====================================================================

async def delete(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """Deletes the subscription with its invoices and transactions (Chargebee v1), and its jobs."""
    def run(w: Work) -> dict:
        sub, _ = require(w, subscription_id, for_update=True)
        body = content(w, sub)
        I, X, L = S.invoices, S.transactions, S.invoice_transactions  # noqa: E741 (table aliases)
        inv_ids = [r[0] for r in w.tx.all(select(I.c.id).where(I.c.site_id == w.site_id,
                                                               I.c.subscription_id == sub["id"]))]
        txn_ids = [r[0] for r in w.tx.all(select(X.c.id).where(X.c.site_id == w.site_id,
                                                               X.c.subscription_id == sub["id"]))]
        if inv_ids or txn_ids:
            w.tx.execute(sql_delete(L).where(L.c.site_id == w.site_id, or_(L.c.invoice_id.in_(inv_ids),
                                                                       L.c.txn_id.in_(txn_ids))))
        for inv_id in inv_ids:
            jobs.cancel(w, f"{dunning.JOB}:{inv_id}")
        transactions.announce_deleted(w, X.c.subscription_id == sub["id"])
        w.tx.execute(sql_delete(I).where(I.c.site_id == w.site_id, I.c.subscription_id == sub["id"]))
        w.tx.execute(sql_delete(X).where(X.c.site_id == w.site_id, X.c.subscription_id == sub["id"]))
        SUBSCRIPTIONS.delete(w.tx, w.site_id, sub["id"])
        cancel_jobs(w, sub["id"])
        w.emit("subscription_deleted", copy.deepcopy(body))
        return body
    return await ctx.write(run)


async def change_term_end(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """Moves the current term's end (trial end, next billing, or cancellation date); no proration.
    Later terms are counted from the new date."""
    def run(w: Work) -> dict:
        sub, st = require(w, subscription_id, for_update=True)
        sub, st, event = R.move_term_end(sub, st, params["term_ends_at"], w.now)
        save(w, sub, st)
        reschedule(w, sub, st)
        return record_event(w, event, sub)
    return await ctx.write(run)


async def remove_scheduled_changes(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        sub, st = require(w, subscription_id, for_update=True)
        sub, st = R.drop_scheduled_changes(sub, st)
        save(w, sub, st)
        return record_event(w, "subscription_changed", sub)
    return await ctx.write(run)


async def scheduled_changes(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """GET /subscriptions/{id}/scheduled_changes — the scheduled action (v1: cancel)."""
    def run(w: Work) -> dict:
        sub, st = require(w, subscription_id)
        change = _scheduled_change(sub, st)
        if change is None:
            raise not_found("subscription_scheduled_change", subscription_id)
        return {"subscription_scheduled_change": change}
    return await ctx.read(run)


async def update_scheduled_changes(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """POST /subscriptions/{id}/update_scheduled_changes — action_type cancel schedules the
    cancellation at the term end; reactivate removes it; pause is not part of v1 billing."""
    action = params.get("action_type")

    def run(w: Work) -> dict:
        sub, st = require(w, subscription_id, for_update=True)
        if R.check_scheduled_action(sub, action) == "cancel":
            if not st.cancel_scheduled:
                sub, st = R.schedule_cancellation(sub, st, explicit=False)
                save(w, sub, st)
                reschedule(w, sub, st)
                record_event(w, "subscription_cancellation_scheduled", sub)
        else:  # reactivate: the subscription goes on after the term end
            sub, st = R.keep_after_term(sub, st)
            save(w, sub, st)
            reschedule(w, sub, st)
            record_event(w, "subscription_scheduled_cancellation_removed", sub)
            return {"subscription_scheduled_change": {"action_type": "reactivate", "data": dumps({}),
                                                      "created_at": w.now, "modified_at": w.now}}
        change = _scheduled_change(sub, st)
        assert change is not None
        change["modified_at"] = w.now
        return {"subscription_scheduled_change": change}
    return await ctx.write(run)


# ==== charges at term end ==================================================================================

async def add_charge_at_term_end(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """A one-time charge billed with the invoice at the end of the current term."""
    def run(w: Work) -> dict:
        sub, st = _delayed_charge_target(w, subscription_id)
        item, waiting = R.adhoc_for_term_end(params.get("amount"), params["description"])
        billing.check_renewal_total(w, sub, st, [(item, "amount")])
        st.charges.append(waiting)
        save(w, sub, st)
        return {"estimate": billing.renewal_estimate(w, sub, st, include_delayed=True)}
    return await ctx.write(run)


async def charge_addon_at_term_end(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """A non-recurring addon billed with the invoice at the end of the current term."""
    def run(w: Work) -> dict:
        sub, st = _delayed_charge_target(w, subscription_id)
        addon = catalog.usable_addon(w, params["addon_id"], "addon_id")
        item, waiting = R.addon_for_term_end(addon, params.get("addon_quantity"))
        billing.check_renewal_total(w, sub, st, [(item, "addon_quantity")])
        st.charges.append(waiting)
        save(w, sub, st)
        return {"estimate": billing.renewal_estimate(w, sub, st, include_delayed=True)}
    return await ctx.write(run)


# ==== the write units of create and update (also run by hosted checkout pages) ================================

def create_unit(w: Work, params: dict, customer_id: str | None, pay: PaymentIn) -> Outcome:
    """create_a_subscription (``customer_id`` None: the customer comes with it) or
    create_subscription_for_customer, in the caller's transaction; charges are made by ``finish``."""
    if customer_id is None:
        customer = new_customer(w, params, pay)
    else:
        customer = catalog.get_customer(w, customer_id, for_update=True)
        changes = apply_payment(w, customer, pay)
        if changes:
            cards.save_customer(w, customer)
            for event, card in changes:
                w.emit(event, cards.content(customer, card))
    c = billing.compose_create(w, params, customer)
    plan = _commit_new(w, c)
    body = record_event(w, "subscription_created", c.sub, c.invoice)
    return Outcome(body, [plan] if plan else [])


def update_unit(w: Work, subscription_id: str, params: dict, pay: PaymentIn) -> Outcome:
    """update_a_subscription in the caller's transaction; charges are made by ``finish``."""
    sub, st = require(w, subscription_id, for_update=True)
    old_trial_end = sub.get("trial_end") if sub["status"] == "in_trial" else None
    old_shipping = sub.get("shipping_address")
    c = billing.compose_update(w, sub, st, params)
    if c.coupon is not None:
        catalog.redeem_coupon(w, c.coupon[0], c.coupon[1], "coupon")
    if params.get("shipping_address"):
        c.sub["shipping_address"] = {**(old_shipping or {}), **params["shipping_address"], "object": "shipping_address"}
    customer = catalog.get_customer(w, sub["customer_id"], for_update=True)
    customer_changed = False
    if params.get("billing_address"):
        customer["billing_address"] = {**params["billing_address"], "object": "billing_address"}
        customer_changed = True
    if (params.get("customer") or {}).get("vat_number") is not None:
        customer["vat_number"] = params["customer"]["vat_number"]
        customer_changed = True
    card_events = apply_payment(w, customer, pay)
    if card_events:
        customer_changed = True
    if c.credit_left > 0:  # the credits give back the tax paid on them (docs/CHOICES.md, "Taxes")
        given_back = c.credit_left + csv_tax_rules.credit_tax(w, customer, c.sub, c.credited, c.credit_left)
        credits.move(w, customer, "refundable", given_back, "proration", reference_type="subscription",
                     reference_id=sub["id"], description="Prorated credits for the unused period")
        customer_changed = True
    if customer_changed:
        cards.save_customer(w, customer)
    save(w, c.sub, c.st)
    charge = None
    if c.invoice is not None:
        charge = issue(w, c.invoice, may_pend=True)
    reschedule(w, c.sub, c.st)
    for event, card in card_events:
        w.emit(event, cards.content(customer, card))
    if customer_changed:
        w.emit("customer_changed", cards.content(customer, cards.get_card(w, customer["id"])))
    if c.sub.get("shipping_address") != old_shipping:
        record_event(w, "subscription_shipping_address_updated", c.sub)
    if old_trial_end is not None and c.sub.get("trial_end", 0) > old_trial_end:
        record_event(w, "subscription_trial_extended", c.sub)
    body = record_event(w, "subscription_changed", c.sub, c.invoice)
    return Outcome(body, [charge] if charge else [])


# ---- helpers ------------------------------------------------------------------------------------------

def _commit_new(w: Work, c: billing.Composed) -> invoicing.ChargePlan | None:
    """Save a composed new subscription (the customer row exists), its invoice and jobs."""
    if SUBSCRIPTIONS.exists(w.tx, w.site_id, c.sub["id"]):
        raise DuplicateEntry(f"id : The value {c.sub['id']} is already present.", param="id")
    if c.coupon is not None:
        catalog.redeem_coupon(w, c.coupon[0], c.coupon[1], "coupon")
    save(w, c.sub, c.st, insert=True)
    plan = None
    if c.invoice is not None:
        plan = issue(w, c.invoice, may_pend=False)
        require_payment_method(w, c.invoice, plan)
    reschedule(w, c.sub, c.st)
    return plan


def _view(w: Work, subscription_id: str) -> dict:
    sub, _ = require(w, subscription_id)
    return content(w, sub)


def _page(ctx: Ctx, req: ListRequest, *where: Any, customer_id: str | None = None) -> Any:
    """A page of subscriptions; list_subscriptions gives each its customer and card (the spec),
    a customer's list (list_subscriptions_for_a_customer) only the subscriptions."""
    def run(w: Work) -> dict:
        page = fetch_page(w.tx, SUBSCRIPTIONS, w.site_id, req, where=where,
                          parent=(CUSTOMERS, customer_id) if customer_id is not None else None)
        if customer_id is not None:
            return page.response("subscription")
        ids = list({s["customer_id"] for s in page.items})
        customers = {c["id"]: c for c in CUSTOMERS.find(w.tx, w.site_id, CUSTOMERS.t.c.id.in_(ids))} if ids else {}
        cards = {c["customer_id"]: c for c in CARDS.find(w.tx, w.site_id, CARDS.t.c.id.in_(ids))} if ids else {}

        def extra(sub: dict) -> dict:
            out = {}
            if sub["customer_id"] in customers:
                out["customer"] = customers[sub["customer_id"]]
            if sub["customer_id"] in cards:
                out["card"] = cards[sub["customer_id"]]
            return out
        return page.response("subscription", extra)
    return ctx.read(run)


def _scheduled_change(sub: dict, st: State) -> dict | None:
    """The v1 SubscriptionScheduledChange: the action scheduled for the term end, if any."""
    if st.cancel_scheduled or sub["status"] == "non_renewing":
        data = {"cancel_at": sub.get("current_term_end")}
        return {"action_type": "cancel", "data": dumps(data), "created_at": sub.get("created_at"),
                "modified_at": sub.get("current_term_end")}
    return None


def _delayed_charge_target(w: Work, subscription_id: str) -> tuple[dict, State]:
    sub, st = require(w, subscription_id, for_update=True)
    R.require_status(sub, ("in_trial", "active", "non_renewing"), "add charges for the end of its term")
    return sub, st
