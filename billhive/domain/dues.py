"""A subscription's dues: ``due_invoices_count``, ``due_since``, ``total_dues``, from its invoices.

Chargebee's v1 subscription shows what of it is unpaid (the spec's Subscription schema: "Total
number of invoices that are due for payment against the subscription", "Time since this
subscription has unpaid invoices", "Total invoice due amount for this subscription"). Its v1
sample payloads show ``"due_invoices_count": 0`` and neither of the other two while nothing is
due, and ``1`` / the invoice's date / its amount due (``"total_dues": 1000``) for a
``payment_due`` invoice (a v1 ``subscription_created`` event recorded in Chargebee's client
library tests, tests/python/sample_event.json; docs/PARITY.md).

Due: a closed invoice not paid yet (``payment_due`` or ``not_paid``) with something left to pay.
Pending invoices are not issued yet, paid and voided ones owe nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from billhive.domain import invoices as D
from billhive.domain.document import Doc

FIELDS = ("due_invoices_count", "due_since", "total_dues")


def is_due(invoice: Doc) -> bool:
    return invoice.get("status") in D.CLOSED_UNPAID and int(invoice.get("amount_due", 0)) > 0


def dues(invoices: Iterable[Doc]) -> Doc:
    """The dues fields for a subscription whose invoices are ``invoices`` (any statuses; an
    invoice given twice by id counts once, the later copy winning)."""
    by_id = {inv["id"]: inv for inv in invoices}
    due = [inv for inv in by_id.values() if is_due(inv)]
    if not due:
        return {"due_invoices_count": 0}
    return {"due_invoices_count": len(due),
            "due_since": min(D.issue_date(inv) for inv in due),
            "total_dues": sum(int(inv["amount_due"]) for inv in due)}


def apply(subscription: Doc, fields: Doc) -> bool:
    """Set the dues ``fields`` on the subscription document (dropping the ones absent); whether
    anything changed."""
    before = {k: subscription.get(k) for k in FIELDS}
    for k in FIELDS:
        if k in fields:
            subscription[k] = fields[k]
        else:
            subscription.pop(k, None)
    return before != {k: subscription.get(k) for k in FIELDS}
