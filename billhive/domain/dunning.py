"""Dunning: the schedule of retries of a failed automatic charge, decided on loaded values
(SEMANTICS.md, "Dunning").

- Starts when an automatic charge (closing an invoice, or a retry) fails:
  ``dunning_status = in_progress``, ``next_retry`` = first failure + the first offset.
- Each retry is a charge like any other; a failed retry moves ``next_retry`` to the next offset
  (offsets count from the first failure).
- Ends: ``success`` (a retry paid it), ``stopped`` (stop_dunning, or paid some other way, or the
  invoice left collection), ``exhausted`` (no retries left) -> the site's final action: mark
  ``not_paid`` or ``voided`` (or leave ``payment_due``), and optionally cancel the subscription
  (cancel_reason ``not_paid``).

Each function takes the invoice (not changed) and answers a ``Decision``: the invoice after, the
invoice's internal dunning columns, and the actions for the service to carry out — schedule or
cancel the retry job, give back the credits of a voided invoice, cancel the subscription. The
service (services/payments.py ``apply_dunning``) executes it; cancelling a subscription is a job
(``CANCEL_JOB``, due at once) that the job table (services/jobs.py) hands to subscriptions, so
nothing that charges imports subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

from billhive.domain import invoices as D
from billhive.domain.document import Doc

JOB = "dunning_retry"  # the retry job's kind; one per invoice, key ``retry_key(invoice_id)``
CANCEL_JOB = "dunning_cancel_subscription"  # ref: the subscription; run by services/jobs.py
CANCEL_REASON = "not_paid"
DAY = 86400
FINAL_ACTIONS = ("not_paid", "voided", "payment_due")  # payment_due: leave the invoice unpaid


def retry_key(invoice_id: str) -> str:
    return f"{JOB}:{invoice_id}"


def cancel_key(subscription_id: str) -> str:
    return f"{CANCEL_JOB}:{subscription_id}"


@dataclass(frozen=True)
class Settings:
    """The site's dunning settings (sites.SETTINGS dunning_*)."""

    retry_days: tuple[int, ...] = (1, 3, 5)  # offsets from the first failure, in days
    final_action: str = "not_paid"  # one of FINAL_ACTIONS
    cancel_subscription: bool = False


@dataclass(frozen=True)
class State:
    """The invoice's internal dunning columns: failed retries so far, when dunning started."""

    attempts: int = 0
    started_at: int | None = None


@dataclass(frozen=True)
class Decision:
    """What dunning does to one invoice."""

    invoice: Doc  # the invoice after (dunning_status, next_retry; status and voided_at when exhausted)
    state: State | None = None  # the dunning columns to save (None: unchanged)
    retry_at: int | None = None  # schedule (or move) the invoice's retry job to this time
    cancel_retry: bool = False  # delete the invoice's retry job
    release_credits: bool = False  # the invoice was voided: give back the credits it took
    cancel_subscription: str | None = None  # cancel this subscription for non-payment

    @property
    def columns(self) -> Doc | None:
        if self.state is None:
            return None
        return {"dunning_attempts": self.state.attempts, "dunning_started_at": self.state.started_at}


def on_failure(invoice: Doc, state: State, settings: Settings, now: int, *, retry: bool) -> Decision:
    """An automatic charge of ``invoice`` failed at ``now``: start dunning (a first failure, or
    ``retry`` False), or count the failed retry; then the next retry, or the final action."""
    inv = dict(invoice)  # the decisions change top-level fields only
    attempts, started = state.attempts, state.started_at
    if not retry or inv.get("dunning_status") != "in_progress" or started is None:
        attempts, started = 0, now
        inv["dunning_status"] = "in_progress"
    else:
        attempts += 1
    after = State(attempts, started)
    if attempts < len(settings.retry_days):
        inv["next_retry"] = started + settings.retry_days[attempts] * DAY
        return Decision(inv, after, retry_at=inv["next_retry"])
    return _exhaust(inv, after, settings, now)


def _exhaust(inv: Doc, state: State, settings: Settings, now: int) -> Decision:
    inv["dunning_status"] = "exhausted"
    inv.pop("next_retry", None)
    action = settings.final_action
    voided = False
    if action in ("not_paid", "voided") and D.can_transition(inv["status"], action):
        D.transition(inv, action)
        if action == "voided":
            inv["voided_at"] = now
            voided = True
    cancel = inv.get("subscription_id") if settings.cancel_subscription else None
    return Decision(inv, state, release_credits=voided, cancel_subscription=cancel or None)


def on_paid(invoice: Doc, *, by_retry: bool) -> Decision:
    """The invoice got paid: dunning ends as ``success`` (a retry) or ``stopped`` (paid another way)."""
    inv = dict(invoice)  # the decisions change top-level fields only
    if inv.get("dunning_status") != "in_progress":
        return Decision(inv)
    inv["dunning_status"] = "success" if by_retry else "stopped"
    inv.pop("next_retry", None)
    return Decision(inv, cancel_retry=True)


def leave(invoice: Doc) -> Decision:
    """The invoice leaves collection (void/delete): no more retries."""
    inv = dict(invoice)  # the decisions change top-level fields only
    if inv.get("dunning_status") == "in_progress":
        inv["dunning_status"] = "stopped"
    inv.pop("next_retry", None)
    return Decision(inv, cancel_retry=True)


def stop(invoice: Doc) -> Decision:
    """stop_dunning: no more retries; the invoice becomes ``not_paid`` (the subscription untouched)."""
    inv = dict(invoice)  # the decisions change top-level fields only
    inv["dunning_status"] = "stopped"
    inv.pop("next_retry", None)
    if inv["status"] != "not_paid" and D.can_transition(inv["status"], "not_paid"):
        D.transition(inv, "not_paid")
    return Decision(inv, cancel_retry=True)


def retry_due(invoice: Doc | None) -> bool:
    """Whether a due retry job still has something to charge (the invoice may have been paid,
    voided, stopped or deleted since the job was scheduled)."""
    return invoice is not None and invoice.get("dunning_status") == "in_progress" \
        and invoice["status"] in D.CLOSED_UNPAID and invoice["amount_due"] > 0
