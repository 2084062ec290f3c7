"""Dunning: retrying failed automatic charges on the site's schedule (site clock).

The schedule is a pure decision (domain/dunning.py: start, advance, end, the final action);
payments carries decisions out (``payments.apply_dunning``: the retry job, the credits of a voided
invoice, the job that cancels the subscription) and starts dunning itself when a charge fails
(domain/settlement.py). This module is the rest: the retry job's handler (listed in
services/jobs.py) and the invoice operations that end dunning. It imports payments, never the
reverse, and never subscriptions.

The subscription stays active during dunning. A new card is used by the next retry.
"""

from __future__ import annotations

from billhive.domain import dunning as rules
from billhive.services import dues, invoicing, payments
from billhive.store.resources import CUSTOMERS, INVOICES
from billhive.work import jobs
from billhive.work.context import Ctx, Work

JOB = rules.JOB
CANCEL_JOB = rules.CANCEL_JOB


def retry(w: Work, job: jobs.Job) -> None:
    """Due retry: record the in_progress charge now; the gateway is called after commit."""
    inv = INVOICES.get(w.tx, w.site_id, job.ref_id, for_update=True)
    if inv is None or not rules.retry_due(inv):
        return
    customer = CUSTOMERS.require(w.tx, w.site_id, inv["customer_id"])
    card = invoicing.usable_card(w, customer)
    if card is None:  # no way to charge: counts as a failed attempt
        decision = rules.on_failure(inv, payments.dunning_state(w, inv["id"]), payments.dunning_settings(w.site),
                                    w.now, retry=True)
        columns = _apply(w, inv, decision)
        INVOICES.update(w.tx, w.site_id, inv, w.now, columns=columns)
        dues.refresh(w, inv)
        w.emit("invoice_updated", {"invoice": inv})
        return
    plan = invoicing.start_charge(w, inv, customer, card, "dunning")
    ctx = Ctx(w.app, w.site_id, w.origin)
    w.after_commit_grouped(payments.charge_and_settle_all, ctx, (ctx, plan))  # a batch's charges: one settlement


def on_paid(w: Work, inv: dict, *, by_retry: bool) -> None:
    """The invoice got paid (``inv`` updated in place): dunning ends as success (a retry) or
    stopped (paid another way)."""
    _apply(w, inv, rules.on_paid(inv, by_retry=by_retry))


def stop_jobs(w: Work, inv: dict) -> None:
    """The invoice leaves collection (void/delete; ``inv`` updated in place): no more retries."""
    _apply(w, inv, rules.leave(inv))


def stop(w: Work, inv: dict) -> None:
    """stop_dunning (``inv`` updated in place): no more retries; the invoice becomes not_paid."""
    _apply(w, inv, rules.stop(inv))


def _apply(w: Work, inv: dict, decision: rules.Decision) -> dict | None:
    columns = payments.apply_dunning(w, decision)
    inv.clear()
    inv.update(decision.invoice)
    return columns
