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
harmless: exactly one charge, exactly one settlement. A refund the gateway never saw is failed,
not made (its request answered an error or never answered), but only once it has been unknown
to the gateway for ``Config.refund_recovery_grace``: a pass that runs while the refund's own
request is still asking the gateway leaves it to that request.

This module owns everything that moves money - charges, offline payments (``record_offline``),
refunds (``refund_and_settle``, ``settle_refund``), recovery - and carries out dunning's decisions
(``apply_dunning``). What each does is decided purely in billhive/domain (settlement.py,
refunds.py, dunning.py); here it is loaded and saved. It imports neither services/invoices.py nor
services/dunning.py: they call it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy import and_, bindparam, select
from sqlalchemy.exc import SQLAlchemyError

from billhive import gateway as gateways
from billhive import sites
from billhive.domain import dunning, refunds, settlement
from billhive.errors import PaymentProcessingFailed, not_found
from billhive.gateway import Gateway, GatewayResult
from billhive.services import credits, dues, invoicing
from billhive.services.invoicing import ChargePlan
from billhive.store import schema as S
from billhive.store.db import Q, Tx
from billhive.store.resources import CARDS, CUSTOMERS, INVOICES, SUBSCRIPTIONS, TRANSACTIONS
from billhive.util import failpoints
from billhive.util.ids import txn_id
from billhive.util.jsonutil import loads
from billhive.work import jobs, outbox
from billhive.work.context import SYSTEM, Ctx, Work, site_first

if TYPE_CHECKING:
    from billhive.runtime import App

log = logging.getLogger("billhive.payments")
UNSETTLED = settlement.UNSETTLED
T = S.transactions
_PURPOSE = Q(select(T.c.purpose).where(T.c.site_id == bindparam("site_id"), T.c.id == bindparam("id")))
_DUNNING_STATE = Q(select(INVOICES.t.c.dunning_attempts, INVOICES.t.c.dunning_started_at)
                   .where(INVOICES.t.c.site_id == bindparam("site_id"), INVOICES.t.c.id == bindparam("id")))


async def call_gateway(app: App, site_pk: int, plan: ChargePlan) -> GatewayResult:
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
    return await ctx.write(_settle_one, plan.txn_id, result, plan.purpose, plan.invoice_id)


@site_first
def _settle_one(w: Work, txn_id: str, result: GatewayResult, purpose: str, invoice_id: str) -> dict:
    """``settle`` of one charge, its events (a payment's three) written in one INSERT at the end
    (``outbox.buffered``: one statement, not three)."""
    with outbox.buffered(w.tx):
        return settle(w, txn_id, result, purpose, invoice_id)


async def charge_and_settle_all(items: list[tuple[Ctx, ChargePlan]]) -> None:
    """Steps 2 and 3 for several recorded in_progress transactions of one site (a batch of jobs'
    charges, grouped by the scheduler: ``Work.after_commit_grouped``): every gateway call first
    (all at once, none inside a transaction), then one transaction settling them all, each in its
    savepoint - a charge whose settlement fails is left in_progress for recovery, the others commit.
    Exactly-once as ``charge_and_settle``: a crash before that commit leaves them all to recovery."""
    ctx = items[0][0]
    results = await asyncio.gather(*(call_gateway(c.app, c.site_id, plan) for c, plan in items))
    for _ in items:
        failpoints.hit("charge.answered")
    await ctx.write(_settle_all, [(plan, result) for (_, plan), result in zip(items, results, strict=True)])


def _settle_all(w: Work, answers: list[tuple[ChargePlan, GatewayResult]]) -> None:
    """Settle several charges, each in its savepoint (a failed one is left to recovery). With more
    than one, what their settlements read is loaded first, one statement per table for all of them
    (``_load_batch``), and their events are written together when the unit ends
    (``outbox.buffered``; a rolled-back settlement's events are dropped with it)."""
    tx = w.tx
    with outbox.buffered(tx):
        held = _load_batch(w, [plan for plan, _ in answers]) if len(answers) > 1 else None
        for plan, result in answers:
            one = Work(tx, w.app, w.site, w.origin, w.now)
            mark = outbox.mark(tx)
            # a settlement releases its invoice's held events: a second charge of that invoice finds none
            events = held.pop(plan.invoice_id, []) if held is not None else None
            try:
                with tx.savepoint():
                    settle(one, plan.txn_id, result, plan.purpose, held=events)
            except SQLAlchemyError:
                raise  # the store's trouble: the whole group is left to recovery
            except Exception:
                outbox.rollback_to(tx, mark)  # and the events it recorded
                if held is not None and events:
                    held[plan.invoice_id] = events  # still held: undone with the savepoint
                log.exception("settling charge %s failed on site %s; recovery settles it", plan.txn_id, w.site_id)
                continue
            w.emitted.extend(one.emitted)
            w.after.extend(one.after)


def _load_batch(w: Work, plans: list[ChargePlan]) -> dict[str, list[dict]]:
    """What the settlements of a batch's charges read, in one statement per table: their
    transactions and invoices (locked, as ``settle`` loads them), the invoices' customers, cards
    and subscriptions (locked, as the dues refresh loads them), registered in ``Tx.rows`` so that
    each settlement's loads are answered from memory (``DocTable.get_many``); and the events held
    for the invoices (locked), by invoice id."""
    tx, site_id = w.tx, w.site_id
    TRANSACTIONS.get_many(tx, site_id, [plan.txn_id for plan in plans], for_update=True)
    invoices = INVOICES.get_many(tx, site_id, [plan.invoice_id for plan in plans], for_update=True)
    customer_ids = [inv["customer_id"] for inv in invoices.values()]
    CUSTOMERS.get_many(tx, site_id, customer_ids)
    CARDS.get_many(tx, site_id, customer_ids)
    sub_ids = [inv["subscription_id"] for inv in invoices.values() if inv.get("subscription_id")]
    SUBSCRIPTIONS.get_many(tx, site_id, sub_ids, for_update=True)
    return outbox.held_for_many(tx, site_id, [i for i, inv in invoices.items() if inv.get("subscription_id")])


@site_first
def settle(w: Work, txn_id: str, result: GatewayResult, purpose: str | None = None,
           invoice_id: str | None = None, *, held: list[dict] | None = None) -> dict:
    """Apply the gateway's answer to the transaction and its invoice (once): load, decide
    (``domain.settlement.settle``), save. ``purpose`` is read from the transaction's row when the
    caller does not know it (recovery). ``invoice_id``: the charge's invoice, when the caller
    knows it (its ChargePlan): the site, the transaction and the invoice with its customer and
    card are then loaded in one statement. ``held``: the events held for the invoice, loaded
    (locked) already (``outbox.held_for_many``)."""
    txn, inv, payer = _load_settling(w, txn_id, invoice_id)
    inv_id = inv["id"]
    if not settlement.unsettled(txn):
        return inv  # settled already (a racing settler or recovery won)
    purpose = purpose or w.tx.scalar(_PURPOSE, {"site_id": w.site_id, "id": txn_id}) or "close"
    state = dunning_state(w, inv_id) if settlement.needs_dunning_state(result, purpose) else None
    s = settlement.settle(txn, inv, result, purpose=purpose, now=w.now, dunning_state=state,
                          dunning_settings=dunning_settings(w.site) if state is not None else None)
    txn, inv = s.transaction, s.invoice
    content_extra = invoicing.snapshot(w, inv["customer_id"], inv.get("subscription_id"), loaded=payer) \
        if any(e.startswith("payment_") for e in s.events) else {}
    # subscription events held until this invoice's charge settles (commit.record_event)
    if held is None:
        held = outbox.held_for(w.tx, w.site_id, inv_id) if inv.get("subscription_id") else []
    if not s.final:  # a timeout: the payment is initiated, recovery settles it from the gateway later
        TRANSACTIONS.save(w.tx, w.site_id, txn, w.now)
        _release(w, held, inv)
        _emit(w, s.events, txn, inv, content_extra)
        return inv
    with w.tx.pipeline():  # reads are done: the writes go in one round trip on PostgreSQL
        if txn["status"] == "success":
            invoicing.set_applied(w, inv["id"], txn["id"], s.applied)
        columns = apply_dunning(w, s.dunning) if s.dunning is not None else None
        if s.undo_balances:
            invoicing.undo_balances(w, inv)
        TRANSACTIONS.save(w.tx, w.site_id, txn, w.now)
        INVOICES.update(w.tx, w.site_id, inv, w.now, columns=columns)
        dues.refresh(w, inv, content_extra, *(e["content"] for e in held))
        _release(w, held, inv)
        _emit(w, s.events, txn, inv, content_extra)
    return inv


_I, _C, _K = INVOICES.t, CUSTOMERS.t, S.cards
_SITE_COLS = len(sites.COLUMNS)
_SETTLING = Q(select(*sites.COLUMNS, *TRANSACTIONS.loaded_columns(), *INVOICES.loaded_columns(),
                     *CUSTOMERS.loaded_columns(), _K.c.data)
              .select_from(T.join(S.sites, S.sites.c.pk == T.c.site_id)
                           .join(_I, and_(_I.c.site_id == T.c.site_id, _I.c.id == bindparam("invoice_id")))
                           .outerjoin(_C, and_(_C.c.site_id == _I.c.site_id, _C.c.id == _I.c.customer_id))
                           .outerjoin(_K, and_(_K.c.site_id == _I.c.site_id, _K.c.id == _I.c.customer_id)))
              .where(T.c.site_id == bindparam("site_id"), T.c.id == bindparam("id"))
              .with_for_update(of=[T, _I]))


def _load_settling(w: Work, txn_id: str, invoice_id: str | None
                   ) -> tuple[dict, dict, tuple[dict | None, dict | None] | None]:
    """The transaction and its invoice, both locked, and, when the invoice was named, its
    customer and card as they are (for the payment events: ``invoicing.snapshot``) - then in one
    statement, with the site (``settle`` is ``site_first``); otherwise the site first."""
    if invoice_id is not None:
        row = w.tx.one(_SETTLING, {"site_id": w.site_id, "id": txn_id, "invoice_id": invoice_id})
        if row is not None:
            w.adopt_site(sites.from_row(row[:_SITE_COLS]))
            # the rows are registered in Tx.rows (as DocTable.get does): the updates write only what changed
            tx, site_id, a = w.tx, w.site_id, _SITE_COLS + TRANSACTIONS.width
            b = a + INVOICES.width
            txn = TRANSACTIONS.take(tx, site_id, row[_SITE_COLS:a], locked=True)
            assert txn is not None
            if txn["linked_invoices"][0]["invoice_id"] == invoice_id:
                inv = INVOICES.take(tx, site_id, row[a:b], locked=True)
                assert inv is not None
                card = row[-1]
                return txn, inv, (CUSTOMERS.take(tx, site_id, row[b:b + CUSTOMERS.width], locked=False),
                                  loads(card) if card is not None else None)
    w.require_site()  # site_first: the write guard before anything else
    txn = TRANSACTIONS.require(w.tx, w.site_id, txn_id, for_update=True)
    return txn, INVOICES.require(w.tx, w.site_id, txn["linked_invoices"][0]["invoice_id"], for_update=True), None


def _release(w: Work, held: list[dict], inv: dict) -> None:
    """Held events (subscription_created, _renewed... of this invoice) get the settled invoice and go out."""
    for event in held:
        event["content"]["invoice"] = inv
        outbox.release(w.tx, w.site_id, w.now, event)


# the event types the settlement and refund decisions name (domain/settlement.py, refunds.py),
# emitted by ``_emit`` (listed for docs/coverage.md)
EMITS = ("invoice_generated", "invoice_updated", "transaction_created", "transaction_updated", "payment_initiated",
         "payment_succeeded", "payment_failed", "payment_refunded", "refund_initiated")


def _emit(w: Work, events: tuple[str, ...], txn: dict, inv: dict, content_extra: dict) -> None:
    for event in events:
        if event.startswith("invoice_"):
            w.emit(event, {"invoice": inv})
        elif event.startswith("transaction_"):
            w.emit(event, {"transaction": txn})
        else:  # payment_*: the transaction, its invoice, the customer and card (and subscription)
            w.emit(event, {"transaction": txn, "invoice": inv, **content_extra})


def record_offline(w: Work, inv: dict, *, amount: int | None, payment_method: str, paid_at: int,
                   reference_number: str | None = None, memo: str | None = None) -> dict:
    """record_payment on a loaded (locked) unpaid invoice: decide
    (``domain.settlement.offline_payment``), save; more than the amount due becomes an excess
    payment of the customer."""
    p = settlement.offline_payment(inv, txn_id=txn_id(), payment_method=payment_method, paid_at=paid_at, now=w.now,
                                   amount=amount, reference_number=reference_number, memo=memo)
    txn, inv = p.transaction, p.invoice
    TRANSACTIONS.insert(w.tx, w.site_id, txn, w.now)
    invoicing.insert_link(w, inv["id"], txn["id"], p.applied)
    if p.dunning is not None:
        apply_dunning(w, p.dunning)
    INVOICES.save(w.tx, w.site_id, inv, w.now)
    dues.refresh(w, inv)
    w.emit("transaction_created", {"transaction": txn})
    w.emit("invoice_updated", {"invoice": inv})
    if p.excess:
        customer = CUSTOMERS.require(w.tx, w.site_id, inv["customer_id"], for_update=True)
        credits.move(w, customer, "excess", p.excess, "overpayment", reference_type="transaction",
                     reference_id=txn["id"], description=f"Over-payment on invoice {inv['id']}", param="amount")
        CUSTOMERS.save(w.tx, w.site_id, customer, w.now)
        w.emit("customer_changed", {"customer": customer})
    return {"invoice": inv, "transaction": txn}


# ---- dunning: carrying out its decisions (domain/dunning.py) -------------------------------------

def dunning_settings(site: sites.Site) -> dunning.Settings:
    return dunning.Settings(tuple(site.setting("dunning_retry_days")), site.setting("dunning_final_action"),
                            bool(site.setting("dunning_cancel_subscription")))


def dunning_state(w: Work, invoice_id: str) -> dunning.State:
    """The invoice's internal dunning columns."""
    row = w.tx.one(_DUNNING_STATE, {"site_id": w.site_id, "id": invoice_id})
    return dunning.State(int(row[0] or 0), row[1]) if row else dunning.State()


def apply_dunning(w: Work, decision: dunning.Decision) -> dict | None:
    """Carry out a dunning decision's actions (the caller saves ``decision.invoice`` with the
    columns returned). Cancelling the subscription is a job due now (services/jobs.py runs it)."""
    inv = decision.invoice
    if decision.retry_at is not None:
        jobs.schedule(w, dunning.JOB, inv["id"], due_at=decision.retry_at, key=dunning.retry_key(inv["id"]))
    if decision.cancel_retry:
        jobs.cancel(w, dunning.retry_key(inv["id"]))
    if decision.release_credits:
        invoicing.release_for_void(w, inv)
    if decision.cancel_subscription:
        jobs.schedule(w, dunning.CANCEL_JOB, decision.cancel_subscription, due_at=w.now,
                      key=dunning.cancel_key(decision.cancel_subscription))
    return decision.columns


# ---- refunds ---------------------------------------------------------------------------------------

async def refund_and_settle(ctx: Ctx, gateway: Gateway, refund_id: str, charge_reference: str, amount: int,
                            currency: str) -> dict:
    """Ask the gateway for a recorded in_progress refund, then settle it (``settle_refund``)."""
    failpoints.hit("refund.recorded")
    try:
        result = await gateway.refund(ctx.site_id, refund_id, charge_reference, amount, currency)
    except Exception as exc:  # an unreachable gateway: outcome unknown, recovery will ask again
        result = GatewayResult("timeout", "", "gateway_error", str(exc)[:200])
    failpoints.hit("refund.answered")
    return await ctx.write(settle_refund, refund_id, result)


def settle_refund(w: Work, refund_id: str, result: GatewayResult) -> dict:
    """Apply the gateway's answer to the refund, its payment and its invoice (once): load,
    decide (``domain.refunds.settle``), save."""
    r = TRANSACTIONS.require(w.tx, w.site_id, refund_id, for_update=True)
    inv_id = r["linked_invoices"][0]["invoice_id"]
    inv = INVOICES.get(w.tx, w.site_id, inv_id, for_update=True)
    if inv is None:
        raise not_found("invoice", inv_id)
    if not settlement.unsettled(r):
        return {"invoice": inv, "transaction": r}
    original = TRANSACTIONS.require(w.tx, w.site_id, r["refunded_txn_id"], for_update=True)
    s = refunds.settle(r, original, inv, result)
    r, inv = s.refund, s.invoice
    content_extra = invoicing.snapshot(w, inv["customer_id"], inv.get("subscription_id")) \
        if len(s.events) > 1 else {}
    TRANSACTIONS.save(w.tx, w.site_id, r, w.now)
    TRANSACTIONS.save(w.tx, w.site_id, s.original, w.now)
    INVOICES.save(w.tx, w.site_id, inv, w.now)
    _emit(w, s.events, r, inv, content_extra)
    return {"invoice": inv, "transaction": r}


# ---- recovery ------------------------------------------------------------------------------------

def _unsettled(tx: Tx, site_pk: int, limit: int = 200) -> list[dict]:
    t = TRANSACTIONS.t
    return TRANSACTIONS.find(tx, site_pk, t.c.status.in_(UNSETTLED), t.c.type.in_(("payment", "refund")),
                             order_by=[t.c.pk], limit=limit)


async def recover_site(app: App, site_pk: int, pending: list[dict] | None = None) -> int:
    """Settle every unsettled payment of a site (``pending``, read here when not given) from the
    gateway's books. Returns how many."""
    ctx = Ctx(app, site_pk, SYSTEM)
    if pending is None:
        pending = await app.db.read(lambda tx: _unsettled(tx, site_pk))
    done = 0
    unanswered = app.unanswered_refunds
    still = {t["id"] for t in pending}
    for key in [k for k in unanswered if k[0] == site_pk and k[1] not in still]:
        del unanswered[key]  # settled since (or no longer read): forgotten
    for txn in pending:
        gateway = app.gateways.get(txn.get("gateway", "chargebee"))
        if gateway is None:
            continue
        result = await gateway.lookup(site_pk, txn["id"])
        if txn["type"] == "refund":
            if result is None:
                # a refund the gateway never saw was never made: it failed, nothing to repeat - once
                # it has been unknown to the gateway for longer than a gateway call may take; until
                # then the request that recorded it may still be asking the gateway (a live refund
                # failed here and then made there would be money refunded and recorded as failed)
                first = unanswered.setdefault((site_pk, txn["id"]), app.wall())
                if app.wall() - first < app.config.refund_recovery_grace:
                    continue
                result = GatewayResult("failure", "", "not_processed", "The refund did not reach the gateway")
            if result.status != "timeout":
                await ctx.write(settle_refund, txn["id"], result)
                unanswered.pop((site_pk, txn["id"]), None)
                done += 1
            continue
        if result is None:
            # the gateway never saw it: charge now, with the same key (the customer's current card),
            # if that gateway still serves the site (a live site without a gateway: never charged, failed)
            def card_of(tx: Tx, customer_id: str = txn["customer_id"],
                        gateway_name: str = gateway.name) -> tuple[str | None, bool]:
                c = CUSTOMERS.get(tx, site_pk, customer_id)
                pm = (c or {}).get("payment_method") or {}
                return pm.get("reference_id"), gateways.gateway_name(sites.load(tx, site_pk)) == gateway_name
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


async def recover(app: App) -> int:
    """One pass of payment recovery: the sites' unsettled payments in one read (an indexed probe a
    site), then each site that has some settled from the gateway's books."""
    pending = await app.db.read(lambda tx: [(s.pk, txns) for s in sites.all_sites(tx)
                                            if (txns := _unsettled(tx, s.pk))])
    total = 0
    for pk, txns in pending:
        total += await recover_site(app, pk, txns)
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
