"""A subscription's scheduled jobs (commit.py schedules them; services/jobs.py is the table the
scheduler runs): a future subscription starts, a term ends (trial end, renewal, cancellation),
renewal reminders and trial-ending notices; and the cancellation dunning asks for.

Each handler runs in the job's own transaction on the site clock at the job's due time, and
ignores a job its subscription has moved on from (a stale due time)."""

from __future__ import annotations

from collections.abc import Callable

from billhive.domain import subscriptions as R
from billhive.services import dues, invoicing
from billhive.services.subscriptions.billing import compose_activation, compose_renewal
from billhive.services.subscriptions.commit import (
    cancel_now,
    charge_in_job,
    issue,
    record_event,
    record_events,
    reschedule,
)
from billhive.services.subscriptions.state import State, load, load_many, preload, save
from billhive.store.resources import CARDS, CUSTOMERS, PLANS
from billhive.work.context import Work
from billhive.work.jobs import Job


def on_term_end(w: Work, job: Job) -> None:
    found = load(w, job.ref_id, for_update=True)
    if found is None:
        return
    sub, st = found
    if sub["status"] not in ("in_trial", "active", "non_renewing") or sub.get("current_term_end") != job.due_at:
        return  # stale: the subscription moved on since this was scheduled
    at = job.due_at
    if sub["status"] == "in_trial":
        if st.cancel_scheduled:
            _, _, charge = cancel_now(w, sub, st, at)
        else:
            charge = _activate(w, sub, st, at, "subscription_activated")
    elif sub["status"] == "non_renewing":
        _, _, charge = cancel_now(w, sub, st, at)
    else:
        charge = _renew(w, sub, st, at)
    charge_in_job(w, charge)


def preload_term_ends(w: Work, due: list[Job]) -> None:
    """What the term ends (renewals) among a batch's due jobs load, in one statement per table
    for all of them - their subscriptions, customers, cards, plans and unpaid invoices, locked -
    so that each ``on_term_end``, run in its turn in its own savepoint, reads them from memory
    (``DocTable.get_many``, ``dues.preload``: until a row is changed by another statement or a
    savepoint rolls back, when it is read again)."""
    subs = preload(w, [job.ref_id for job in due])
    customer_ids = [sub["customer_id"] for sub in subs.values()]
    CUSTOMERS.get_many(w.tx, w.site_id, customer_ids, for_update=True)
    CARDS.get_many(w.tx, w.site_id, customer_ids, for_update=True)
    PLANS.get_many(w.tx, w.site_id, [sub["plan_id"] for sub in subs.values()], for_update=True)
    dues.preload(w, list(subs))


def on_start(w: Work, job: Job) -> None:
    found = load(w, job.ref_id, for_update=True)
    if found is None:
        return
    sub, st = found
    if sub["status"] != "future" or sub.get("start_date") != job.due_at:
        return
    at = job.due_at
    sub["started_at"] = at
    if sub.get("trial_end") and sub["trial_end"] > at:
        R.transition(sub, "in_trial")
        sub.update({"trial_start": at, "current_term_start": at, "current_term_end": sub["trial_end"]})
        save(w, sub, st)
        reschedule(w, sub, st)
        record_event(w, "subscription_started", sub)
        return
    charge_in_job(w, _activate(w, sub, st, at, "subscription_started"))


def on_reminder(w: Work, job: Job) -> None:
    _notice(w, job, _reminder)


def on_trial_ending(w: Work, job: Job) -> None:
    _notice(w, job, _trial_ending)


def on_reminders(w: Work, group: list[Job]) -> None:
    """``on_reminder`` of several jobs at once (consecutive due jobs of distinct subscriptions, in
    order: billhive/work/scheduler.py), each resource loaded in one statement for all."""
    _notices(w, group, _reminder)


def on_trial_endings(w: Work, group: list[Job]) -> None:
    """``on_trial_ending`` of several jobs at once (as ``on_reminders``)."""
    _notices(w, group, _trial_ending)


def cancel_for_non_payment(w: Work, subscription_id: str, reason: str) -> None:
    """Dunning gave up on one of the subscription's invoices and the site cancels such
    subscriptions: cancelled now, cancel_reason ``reason``. No new invoice is made for charges
    waiting for the term end (they are dropped)."""
    found = load(w, subscription_id, for_update=True)
    if found is None:
        return
    sub, st = found
    if sub["status"] == "cancelled":
        return
    cancel_now(w, sub, st, w.now, reason=reason, bill_delayed=False)


def _activate(w: Work, sub: dict, st: State, at: int, event: str) -> invoicing.ChargePlan | None:
    """A trial ends (event subscription_activated) or a future subscription starts without a
    trial (subscription_started): the first term and its invoice (never pending)."""
    c = compose_activation(w, sub, st, at)
    inv = c.invoice
    assert inv is not None
    if event == "subscription_activated" and inv["amount_due"] > 0 \
            and w.site.setting("trial_end_without_card") == "cancel" \
            and invoicing.effective_auto_collection(w, inv, c.customer) == "on" \
            and invoicing.usable_card(w, c.customer) is None:
        # nothing to charge the first invoice to: the trial ends in a cancellation (Chargebee's no_card)
        cancel_now(w, sub, st, at, reason="no_card", bill_delayed=False)
        return None
    target = c.sub["status"]
    c.sub["status"] = sub["status"]
    R.transition(c.sub, target)
    save(w, c.sub, c.st)
    charge = issue(w, inv, may_pend=False)
    reschedule(w, c.sub, c.st)
    for e in c.events:
        record_event(w, e, c.sub)
    record_event(w, event, c.sub, inv, charging=charge is not None)
    return charge


def _renew(w: Work, sub: dict, st: State, at: int) -> invoicing.ChargePlan | None:
    c = compose_renewal(w, sub, st, at)
    save(w, c.sub, c.st)  # with its dues, as stored now
    assert c.invoice is not None
    charge = issue(w, c.invoice, may_pend=True)
    reschedule(w, c.sub, c.st)
    # a pending invoice (metered billing) is all issue wrote: not due, no credits taken, nothing charged -
    # the subscription's dues and the customer are as loaded
    unchanged = c.customer if charge is None and c.invoice.get("status") == "pending" else None
    for event in c.events:
        record_event(w, event, c.sub, unchanged=unchanged)
    record_event(w, "subscription_renewed", c.sub, c.invoice, charging=charge is not None, unchanged=unchanged)
    return charge


def _reminder(sub: dict, job: Job) -> str | None:
    """The event a renewal reminder records: none if the term it was scheduled for has moved."""
    if sub.get("current_term_end") != (job.payload or {}).get("at"):
        return None
    return {"active": "subscription_renewal_reminder", "non_renewing": "subscription_cancelling"}.get(sub["status"])


def _trial_ending(sub: dict, job: Job) -> str | None:
    if sub["status"] == "in_trial" and sub.get("current_term_end") == (job.payload or {}).get("at"):
        return "subscription_trial_ending"
    return None


def _notice(w: Work, job: Job, event_of: Callable[[dict, Job], str | None]) -> None:
    found = load(w, job.ref_id)
    if found is not None and (event := event_of(found[0], job)) is not None:
        record_event(w, event, found[0])


def _notices(w: Work, group: list[Job], event_of: Callable[[dict, Job], str | None]) -> None:
    subs = load_many(w, [job.ref_id for job in group])
    events = []
    for job in group:
        found = subs.get(job.ref_id)
        if found is not None and (event := event_of(found[0], job)) is not None:
            events.append((event, found[0]))
    record_events(w, events)
