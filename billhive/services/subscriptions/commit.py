"""Committing what billing.py composed: issuing the invoice, the subscription's jobs, its events
and the answer, and charging once the transaction is durable. Shared by operations.py and jobs.py.

Invoices:
- the first invoice of a subscription (signup, trial end, start of a future subscription,
  reactivation) is closed at once (``invoicing.close``) and charged after commit;
- renewals and mid-term changes that bill are *pending* when the site's ``metered_billing`` is on
  (``invoicing.insert_pending``; collect closes them), else closed at once the same way.

Jobs (one live job per key, all on the site clock; ``reschedule`` derives them from the
subscription after every change):
- ``subscription_start:<id>``      a future subscription starts (start_date)
- ``subscription_term_end:<id>``   current_term_end: trial end, renewal, or cancellation
- ``subscription_reminder:<id>``   renewal_reminder_days before a renewal (or a cancellation)
- ``subscription_trial_ending:<id>`` trial_ending_days before the trial ends
"""

from __future__ import annotations

import copy

from sqlalchemy import Table, bindparam, select

from billhive.domain import subscriptions as R
from billhive.errors import PaymentMethodNotPresent
from billhive.services import cards, dues, invoicing, payments
from billhive.services.charge_first import Outcome
from billhive.services.subscriptions import catalog
from billhive.services.subscriptions.billing import compose_delayed_only
from billhive.services.subscriptions.state import State, save
from billhive.store.inlist import InList
from billhive.store.resources import CARDS, CUSTOMERS
from billhive.util.jsonutil import loads
from billhive.work import jobs
from billhive.work.context import Ctx, Work

JOB_START = "subscription_start"
JOB_TERM_END = "subscription_term_end"
JOB_REMINDER = "subscription_reminder"
JOB_TRIAL_ENDING = "subscription_trial_ending"
DAY = 86400

# the event types the package records through record_event (for docs/coverage.md)
EMITS = ("subscription_created", "subscription_started", "subscription_activated", "subscription_changed",
         "subscription_cancelled", "subscription_cancellation_scheduled", "subscription_scheduled_cancellation_removed",
         "subscription_reactivated", "subscription_renewed", "subscription_trial_ending", "subscription_trial_extended",
         "subscription_renewal_reminder", "subscription_cancelling", "subscription_shipping_address_updated")


async def finish(ctx: Ctx, out: Outcome) -> dict:
    """Charge after commit (never inside a transaction); the answer shows the settled invoice
    (``out.settled``: charged first and settled already, see charge_first.run)."""
    for plan in out.charges:
        inv = await payments.charge_and_settle(ctx, plan)
        if out.body.get("invoice", {}).get("id") == inv["id"]:
            out.body["invoice"] = inv
    return await dues.reload(ctx, out.body) if out.charges or out.settled else out.body


def charge_in_job(w: Work, plan: invoicing.ChargePlan | None) -> None:
    """From a scheduler job: charge once the job's transaction is durable."""
    if plan is None:
        return
    ctx = Ctx(w.app, w.site_id, w.origin)
    w.after_commit_grouped(payments.charge_and_settle_all, ctx, (ctx, plan))  # a batch's charges: one settlement


def issue(w: Work, inv: dict, *, may_pend: bool) -> invoicing.ChargePlan | None:
    """Save the invoice: pending under metered billing when allowed (renewals, changes), else
    closed at once (numbered, credits applied, charge planned)."""
    if may_pend and w.site.setting("metered_billing"):
        inv["end_date"] = inv["start_date"]  # the renewal (or change) date, kept by close_date=renewal_date
        invoicing.insert_pending(w, inv)
        return None
    return invoicing.close(w, inv, insert=True, expect_status=None)


def require_payment_method(w: Work, inv: dict, plan: invoicing.ChargePlan | None) -> None:
    """Chargebee creates (or reactivates) a subscription whose first invoice must be paid now only
    when the customer has a payment method (auto-collection on, amount due, no card -> 400)."""
    if plan is None and inv["status"] == "payment_due":
        customer = catalog.get_customer(w, inv["customer_id"])
        if invoicing.effective_auto_collection(w, inv, customer) == "on":
            raise PaymentMethodNotPresent("The customer has no card on file; it is needed to collect the "
                                          "subscription's first invoice (auto_collection is on)")


def cancel_now(w: Work, sub: dict, st: State, at: int, *, reason: str | None = None,
               bill_delayed: bool = True) -> tuple[dict, dict | None, invoicing.ChargePlan | None]:
    """The subscription is cancelled at ``at``: charges waiting for the term end are billed (closed
    at once), jobs end. Saves and records subscription_cancelled."""
    plan = None
    inv = None
    if bill_delayed and st.charges and sub["status"] != "future":
        c = compose_delayed_only(w, sub, st, at)
        sub, st = c.sub, c.st
        if c.invoice is not None:
            inv = c.invoice
            plan = issue(w, inv, may_pend=False)
    st.charges = []
    R.transition(sub, "cancelled")
    sub["cancelled_at"] = at
    if reason:
        sub["cancel_reason"] = reason
    st.cancel_scheduled = False
    st.scheduled = None
    sub["has_scheduled_changes"] = False
    save(w, sub, st)
    cancel_jobs(w, sub["id"])
    record_event(w, "subscription_cancelled", sub, inv, charging=plan is not None)
    return sub, inv, plan


# ---- jobs -----------------------------------------------------------------------------------------------

def reschedule(w: Work, sub: dict, st: State) -> None:
    """The subscription's jobs, derived from its status and dates."""
    sid, status = sub["id"], sub["status"]
    wanted: dict[str, int] = {}
    payloads: dict[str, dict] = {}
    if status == "future":
        wanted[JOB_START] = int(sub["start_date"])
    elif status in ("in_trial", "active", "non_renewing"):
        end = int(sub["current_term_end"])
        wanted[JOB_TERM_END] = end
        payloads[JOB_TERM_END] = {"at": end}
        if status == "in_trial":
            at = end - int(w.site.setting("trial_ending_days")) * DAY
            if at > w.now:
                wanted[JOB_TRIAL_ENDING] = at
                payloads[JOB_TRIAL_ENDING] = {"at": end}
        else:
            at = end - int(w.site.setting("renewal_reminder_days")) * DAY
            if at > w.now:
                wanted[JOB_REMINDER] = at
                payloads[JOB_REMINDER] = {"at": end}
    jobs.schedule_many(w, [(kind, sid, wanted[kind], _key(kind, sid), payloads.get(kind))
                           for kind in (JOB_START, JOB_TERM_END, JOB_REMINDER, JOB_TRIAL_ENDING) if kind in wanted])
    jobs.cancel_many(w, [_key(kind, sid) for kind in (JOB_START, JOB_TERM_END, JOB_REMINDER, JOB_TRIAL_ENDING)
                         if kind not in wanted])


def cancel_jobs(w: Work, sub_id: str) -> None:
    jobs.cancel_many(w, [_key(kind, sub_id) for kind in (JOB_START, JOB_TERM_END, JOB_REMINDER, JOB_TRIAL_ENDING)])


def _key(kind: str, sub_id: str) -> str:
    return f"{kind}:{sub_id}"


# ---- events and responses ----------------------------------------------------------------------------

def record_event(w: Work, event_type: str, sub: dict, invoice: dict | None = None, *,
                 charging: bool | None = None, unchanged: dict | None = None) -> dict:
    """Record ``event_type`` with the subscription (its customer and card, the invoice); returns the
    content. While the invoice's charge is to be made after commit, the event is held and shows the
    settled invoice (payments.settle releases it): an event's resources are the state it stands for.
    ``charging``: whether that charge is recorded, when the caller knows (it issued the invoice in this
    transaction: ``issue`` returned its plan or None); else it is looked up. ``unchanged``: the
    customer as the caller loaded it, when nothing written since can have changed it or the
    subscription's dues (``sub`` saved with them): neither is loaded again."""
    body = content(w, copy.deepcopy(sub), invoice, unchanged=unchanged)
    if invoice is None:
        held = False
    else:
        held = charging if charging is not None else invoicing.charging(w, invoice["id"])
    w.emit(event_type, body, held=held)
    return body


def _docs_by_id(t: Table) -> InList:
    return InList(lambda ids: select(t.c.id, t.c.data).where(t.c.site_id == bindparam("site_id"), t.c.id.in_(ids)),
                  "id")


_CUSTOMERS_MANY, _CARDS_MANY = _docs_by_id(CUSTOMERS.t), _docs_by_id(CARDS.t)


def record_events(w: Work, events: list[tuple[str, dict]]) -> None:
    """``record_event`` (no invoice) of several subscriptions' events, in order, their contents
    loaded together: each resource in one statement for all of them. The subscription documents
    are the caller's to give away (loaded for this: they become the events' content)."""
    if not events:
        return
    subs = [sub for _, sub in events]
    if len({id(s) for s in subs}) < len(subs):  # one document in two events: each its own
        subs = [copy.deepcopy(sub) for sub in subs]
    unpaid = dues.unpaid_of(w, sorted({s["id"] for s in subs}))
    ids = sorted({s["customer_id"] for s in subs})
    customers = {r[0]: loads(r[1]) for r in w.tx.all(*_CUSTOMERS_MANY(ids, {"site_id": w.site_id}))}
    card_docs = {r[0]: loads(r[1]) for r in w.tx.all(*_CARDS_MANY(ids, {"site_id": w.site_id}))}
    shared = len(ids) < len(subs)  # a customer in several events: each its own copy
    for (event_type, _), sub in zip(events, subs, strict=True):
        body: dict = {"subscription": dues.fill_from(sub, unpaid[sub["id"]])}
        customer = customers.get(sub["customer_id"])
        if customer is not None:
            body["customer"] = copy.deepcopy(customer) if shared else customer
        card = card_docs.get(sub["customer_id"])
        if card is not None:
            body["card"] = copy.deepcopy(card) if shared else card
        w.emit(event_type, body)


def content(w: Work, sub: dict, invoice: dict | None = None, *, unchanged: dict | None = None) -> dict:
    """The event content of the subscription (its dues), its customer and card, the invoice.
    ``unchanged``: see ``record_event``."""
    out: dict = {"subscription": sub if unchanged is not None else dues.fill(w, sub)}
    customer = copy.deepcopy(unchanged) if unchanged is not None \
        else CUSTOMERS.get(w.tx, w.site_id, sub["customer_id"])
    if customer is not None:
        out["customer"] = customer
    card = cards.get_card(w, sub["customer_id"])
    if card is not None:
        out["card"] = card
    if invoice is not None:
        out["invoice"] = invoice
    return out
