"""Dunning: retrying failed automatic charges on the site's schedule (site clock).

- Starts when an automatic charge (closing an invoice, or a retry) fails:
  ``dunning_status = in_progress``, ``next_retry`` = first failure + the first offset.
- Each retry is a charge like any other (in_progress transaction -> gateway -> settle).
  A failed retry fires payment_failed and moves next_retry to the next offset.
- Ends: ``success`` (a retry paid it), ``stopped`` (stop_dunning, or paid some other way),
  ``exhausted`` (no retries left) -> the site's final action: mark ``not_paid`` or ``voided``
  (or leave ``payment_due``), and optionally cancel the subscription (cancel_reason not_paid).
The subscription stays active during dunning. A new card is used by the next retry.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select

from billhive.domain import invoices as D
from billhive.services import dues
from billhive.store.db import Q
from billhive.store.resources import INVOICES
from billhive.work import jobs
from billhive.work.context import Work

JOB = "dunning_retry"
DAY = 86400


def _key(invoice_id: str) -> str:
    return f"{JOB}:{invoice_id}"


_STATE = Q(select(INVOICES.t.c.dunning_attempts, INVOICES.t.c.dunning_started_at)
           .where(INVOICES.t.c.site_id == bindparam("site_id"), INVOICES.t.c.id == bindparam("id")))


def _state(w: Work, invoice_id: str) -> tuple[int, int | None]:
    row = w.tx.one(_STATE, {"site_id": w.site_id, "id": invoice_id})
    return (int(row[0] or 0), row[1]) if row else (0, None)


def on_failure(w: Work, inv: dict, *, retry: bool) -> dict:
    """An automatic charge failed: start or advance dunning. Returns the invoice's internal
    dunning columns for the caller's save."""
    offsets = list(w.site.setting("dunning_retry_days"))
    attempts, started = _state(w, inv["id"])
    if not retry or inv.get("dunning_status") != "in_progress":
        attempts, started = 0, w.now
        inv["dunning_status"] = "in_progress"
    else:
        attempts += 1
    if attempts < len(offsets):
        inv["next_retry"] = started + offsets[attempts] * DAY
        jobs.schedule(w, JOB, inv["id"], due_at=inv["next_retry"], key=_key(inv["id"]))
    else:
        _exhaust(w, inv)
    return {"dunning_attempts": attempts, "dunning_started_at": started}


def _exhaust(w: Work, inv: dict) -> None:
    inv["dunning_status"] = "exhausted"
    inv.pop("next_retry", None)
    action = w.site.setting("dunning_final_action")
    if action in ("not_paid", "voided") and D.can_transition(inv["status"], action):
        if action == "voided":
            from billhive.services.invoices import release_for_void

            release_for_void(w, inv)
        D.transition(inv, action)
        if action == "voided":
            inv["voided_at"] = w.now
    if w.site.setting("dunning_cancel_subscription") and inv.get("subscription_id"):
        cancel = _subscription_canceller()
        if cancel is not None:
            cancel(w, inv["subscription_id"], "not_paid")


def _subscription_canceller():  # type: ignore[no-untyped-def]
    try:
        from billhive.services.subscriptions import cancel_for_non_payment
    except ImportError:  # subscriptions not built into this version
        return None
    return cancel_for_non_payment


def on_paid(w: Work, inv: dict, *, by_retry: bool) -> None:
    """The invoice got paid: dunning ends as success (a retry) or stopped (paid another way)."""
    if inv.get("dunning_status") == "in_progress":
        inv["dunning_status"] = "success" if by_retry else "stopped"
        inv.pop("next_retry", None)
        jobs.cancel(w, _key(inv["id"]))


def stop_jobs(w: Work, inv: dict) -> None:
    """The invoice leaves collection (void/delete): no more retries."""
    if inv.get("dunning_status") == "in_progress":
        inv["dunning_status"] = "stopped"
    inv.pop("next_retry", None)
    jobs.cancel(w, _key(inv["id"]))


def stop(w: Work, inv: dict) -> None:
    """stop_dunning: no more retries; the invoice becomes not_paid (subscription untouched)."""
    inv["dunning_status"] = "stopped"
    inv.pop("next_retry", None)
    jobs.cancel(w, _key(inv["id"]))
    if D.can_transition(inv["status"], "not_paid") and inv["status"] != "not_paid":
        D.transition(inv, "not_paid")


def retry(w: Work, job: jobs.Job) -> None:
    """Due retry: record the in_progress charge now; the gateway is called after commit."""
    from billhive.services import invoicing, payments
    from billhive.store.resources import CUSTOMERS
    from billhive.work.context import Ctx

    inv = INVOICES.get(w.tx, w.site_id, job.ref_id, for_update=True)
    if inv is None or inv.get("dunning_status") != "in_progress" or inv["status"] not in D.CLOSED_UNPAID \
            or inv["amount_due"] <= 0:
        return
    customer = CUSTOMERS.require(w.tx, w.site_id, inv["customer_id"])
    card = invoicing.usable_card(w, customer)
    if card is None:
        # no way to charge: counts as a failed attempt
        columns = on_failure(w, inv, retry=True)
        INVOICES.update(w.tx, w.site_id, inv, w.now, columns=columns)
        dues.refresh(w, inv)
        w.emit("invoice_updated", {"invoice": inv})
        return
    plan = invoicing.start_charge(w, inv, customer, card, "dunning")
    app, site_pk, origin = w.app, w.site_id, w.origin

    async def charge() -> None:
        await payments.charge_and_settle(Ctx(app, site_pk, origin), plan)
    w.after_commit(charge)
