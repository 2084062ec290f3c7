"""Charging through the gateway and settling the result — never twice.

A charge is always three steps:
  1. (the caller's transaction) an ``in_progress`` payment transaction is recorded; its id is
     the gateway idempotency key (``invoicing.start_charge``);
  2. (no transaction) the gateway is asked to charge with that key;
  3. (``settle``, one transaction) the transaction and its invoice take the gateway's answer,
     with the events.
If the process dies between 1 and 3, ``recover`` (on start and every ``Config.recovery_interval``)
asks the gateway about the key: a charge it knows is settled from its record; one it never
saw is made now with the same key (the gateway would answer a repeat with the original).
Settlement is conditional on the transaction still being unsettled, so racing settlers are
harmless: exactly one charge, exactly one settlement.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select

from billhive import gateway as gateways
from billhive import sites
from billhive.domain import invoices as D
from billhive.errors import PaymentProcessingFailed
from billhive.gateway import GatewayResult
from billhive.services import dues, dunning, invoicing
from billhive.services.invoicing import ChargePlan
from billhive.store import schema as S
from billhive.store.db import Q, Tx
from billhive.store.resources import CUSTOMERS, INVOICES, TRANSACTIONS
from billhive.util import failpoints
from billhive.work.context import SYSTEM, Ctx, Work

if TYPE_CHECKING:
    from billhive.runtime import App

log = logging.getLogger("billhive.payments")
UNSETTLED = ("in_progress", "timeout")
T = S.transactions
_PURPOSE = Q(select(T.c.purpose).where(T.c.site_id == bindparam("site_id"), T.c.id == bindparam("id")))


async def call_gateway(app: "App", site_pk: int, plan: ChargePlan) -> GatewayResult:
    gateway = app.gateways.get(plan.gateway)
    if gateway is None:
        return GatewayResult("failure", "", "gateway_not_configured", f"gateway {plan.gateway} is not configured")
    try:
        return await gateway.charge(site_pk, plan.txn_id, plan.token, plan.amount, plan.currency)
    except Exception as exc:  # an unreachable gateway: outcome unknown, recovery will ask again
        log.warning("gateway %s charge %s failed to answer: %s", plan.gateway, plan.txn_id, exc)
        return GatewayResult("timeout", "", "gateway_error", str(exc)[:200])


async def charge_and_settle(ctx: Ctx, plan: ChargePlan) -> dict:
    """Steps 2 and 3 for a recorded in_progress transaction; returns the invoice afterwards."""
    result = await call_gateway(ctx.app, ctx.site_id, plan)
    failpoints.hit("charge.answered")
    return await ctx.write(settle, plan.txn_id, result, plan.purpose)


def settle(w: Work, txn_id: str, result: GatewayResult, purpose: str | None = None) -> dict:
    """Apply the gateway's answer to the transaction and its invoice (once). ``purpose`` is
    read from the transaction's row when the caller does not know it (recovery)."""
    txn = TRANSACTIONS.require(w.tx, w.site_id, txn_id, for_update=True)
    inv_id = txn["linked_invoices"][0]["invoice_id"]
    inv = INVOICES.require(w.tx, w.site_id, inv_id, for_update=True)
    if txn["status"] not in UNSETTLED:
        return inv  # settled already (a racing settler or recovery won)
    purpose = purpose or w.tx.scalar(_PURPOSE, {"site_id": w.site_id, "id": txn_id}) or "close"
    first = txn["status"] == "in_progress"
    if result.reference:
        txn["id_at_gateway"] = result.reference
    if result.status == "timeout":
        # the gateway took the charge but its outcome is not known yet: the payment is initiated,
        # recovery settles it from the gateway later (payment_succeeded / payment_failed then)
        txn["status"] = "timeout"
        txn["error_code"], txn["error_text"] = result.error_code or "timeout", result.error_text or "timeout"
        TRANSACTIONS.save(w.tx, w.site_id, txn, w.now)
        if first:
            if purpose in ("close", "create"):
                w.emit("invoice_generated", {"invoice": inv})
            w.emit("transaction_created", {"transaction": txn})
            w.emit("payment_initiated", {"transaction": txn, "invoice": inv,
                                         **invoicing.snapshot(w, inv["customer_id"], inv.get("subscription_id"))})
        return inv
    txn.pop("error_code", None)
    txn.pop("error_text", None)
    content_extra = invoicing.snapshot(w, inv["customer_id"], inv.get("subscription_id"))
    dunning_columns = None
    with w.tx.pipeline():  # reads are done: the writes go in one round trip on PostgreSQL
        if result.ok:
            txn["status"] = "success"
            txn["linked_invoices"][0]["applied_amount"] = txn["amount"]
            inv["amount_paid"] = int(inv.get("amount_paid", 0)) + int(txn["amount"])
            invoicing.link_transaction(w, inv, txn, int(txn["amount"]), row_exists=True)
            D.recompute(inv)
            if inv["amount_due"] == 0 and inv["status"] != "paid":
                D.transition(inv, "paid")
                inv["paid_on"] = w.now
                dunning.on_paid(w, inv, by_retry=purpose == "dunning")
        else:
            txn["status"] = "failure"
            txn["error_code"] = result.error_code or "failure"
            txn["error_text"] = result.error_text or "The payment failed"
            if purpose in ("close", "dunning"):
                dunning_columns = dunning.on_failure(w, inv, retry=purpose == "dunning")
            elif purpose == "create":  # a one-off invoice exists only if its charge succeeds: void it
                invoicing.undo_balances(w, inv)
                D.transition(inv, "voided")
        TRANSACTIONS.save(w.tx, w.site_id, txn, w.now)
        INVOICES.update(w.tx, w.site_id, inv, w.now, columns=dunning_columns)
        dues.refresh(w, inv, content_extra)
        if first and (purpose == "close" or (purpose == "create" and result.ok)):
            w.emit("invoice_generated", {"invoice": inv})
        elif purpose == "create" and not first and not result.ok:  # announced at the timeout, now voided
            w.emit("invoice_updated", {"invoice": inv})
        if first:
            w.emit("transaction_created", {"transaction": txn})
        else:
            w.emit("transaction_updated", {"transaction": txn})
        content = {"transaction": txn, "invoice": inv, **content_extra}
        w.emit("payment_succeeded" if result.ok else "payment_failed", content)
    return inv


def _unsettled(tx: Tx, site_pk: int, limit: int = 200) -> list[dict]:
    t = TRANSACTIONS.t
    return TRANSACTIONS.find(tx, site_pk, t.c.status.in_(UNSETTLED), t.c.type.in_(("payment", "refund")),
                             order_by=[t.c.pk], limit=limit)


async def recover_site(app: "App", site_pk: int) -> int:
    """Settle every unsettled payment of a site from the gateway's books. Returns how many."""
    ctx = Ctx(app, site_pk, SYSTEM)
    pending = await app.db.read(lambda tx: _unsettled(tx, site_pk))
    done = 0
    for txn in pending:
        gateway = app.gateways.get(txn.get("gateway", "chargebee"))
        if gateway is None:
            continue
        result = await gateway.lookup(site_pk, txn["id"])
        if txn["type"] == "refund":
            # a refund the gateway never saw was never made: it failed, nothing to repeat
            result = result or GatewayResult("failure", "", "not_processed", "The refund did not reach the gateway")
            if result.status != "timeout":
                from billhive.services.invoices import settle_refund

                await ctx.write(settle_refund, txn["id"], result)
                done += 1
            continue
        if result is None:
            # the gateway never saw it: charge now, with the same key (the customer's current card),
            # if that gateway still serves the site (a live site without a gateway: never charged, failed)
            def card_of(tx: Tx, customer_id: str = txn["customer_id"]) -> tuple[str | None, bool]:
                c = CUSTOMERS.get(tx, site_pk, customer_id)
                pm = (c or {}).get("payment_method") or {}
                return pm.get("reference_id"), gateways.gateway_name(sites.load(tx, site_pk)) == gateway.name
            token, serves_site = await app.db.read(card_of)
            if not serves_site:
                result = GatewayResult("failure", "", "gateway_not_configured",
                                       "The site has no payment gateway to complete the charge")
            elif not token:
                result = GatewayResult("failure", "", "no_payment_method", "No card on file to complete the charge")
            else:
                result = await gateway.charge(site_pk, txn["id"], token, int(txn["amount"]), txn["currency_code"])
            if result.status == "timeout":
                result = await gateway.lookup(site_pk, txn["id"]) or result
        if result.status == "timeout":
            continue  # still unknown; try again on the next pass
        await ctx.write(settle, txn["id"], result)
        done += 1
    return done


async def recover(app: "App") -> int:
    site_pks = await app.db.read(lambda tx: [s.pk for s in sites.all_sites(tx)])
    total = 0
    for pk in site_pks:
        total += await recover_site(app, pk)
    if total:
        log.info("recovery settled %d interrupted payment(s)", total)
    return total


async def collect_now(ctx: Ctx, plan: ChargePlan) -> dict:
    """collect_payment: charge now; a failed charge is an error for the caller (400, type payment)."""
    result = await call_gateway(ctx.app, ctx.site_id, plan)
    inv = await ctx.write(settle, plan.txn_id, result, plan.purpose)
    if result.status == "failure":
        raise PaymentProcessingFailed(
            f"Payment could not be collected: ({result.error_code}) {result.error_text}")
    return inv
