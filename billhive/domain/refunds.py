"""Refunds of an invoice's payments, decided on loaded values.

- What can be refunded: the invoice's payments less its refunds that succeeded or may still
  (``in_progress``/``timeout``); a refund comes out of one payment, the latest that still holds
  the amount (``original``).
- A refund is a ``refund`` transaction linked to its invoice (``linked_transactions``) and to the
  payment it returns (``refunded_txn_id``; the payment's ``linked_refunds``).
- Settling a gateway refund (``settle``): the gateway's answer sets its status on the refund
  and on both links; ``payment_refunded`` once it succeeded, ``refund_initiated`` when it was sent
  and its outcome is not known yet (``timeout``; recovery settles it later).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from billhive.domain import closing
from billhive.domain.document import Doc
from billhive.domain.settlement import UNSETTLED, Answer

# refunds counted against what is left to refund (as billhive always has: a ``timeout`` refund is not)
COUNTED = ("success", "in_progress", None)


def payment_ids(invoice: Doc) -> list[str]:
    """The ids of the payments linked to the invoice (to load for ``refundable``)."""
    return [lt["txn_id"] for lt in invoice.get("linked_transactions", ()) if lt["txn_type"] == "payment"]


def refundable(invoice: Doc, payments: list[Doc | None]) -> tuple[list[Doc], int]:
    """The invoice's successful payments (of ``payments``, as loaded by ``payment_ids``) and how
    much of them can still be refunded."""
    successful = [p for p in payments if p and p["status"] == "success"]
    links = invoice.get("linked_transactions", ())
    refunded = sum(int(lt["applied_amount"]) for lt in links
                   if lt["txn_type"] == "refund" and lt.get("txn_status") in COUNTED)
    paid = sum(int(lt["applied_amount"]) for lt in links  # failed attempts are listed too: they paid nothing
               if lt["txn_type"] == "payment" and lt.get("txn_status", "success") == "success")
    return successful, paid - refunded


def unrefunded(payment: Doc) -> int:
    """What is left of a payment after its refunds that did not fail."""
    done = sum(int(r["txn_amount"]) for r in payment.get("linked_refunds", ()) if r["txn_status"] != "failure")
    return int(payment["amount"]) - done


def original(payments: list[Doc], amount: int) -> Doc | None:
    """The payment a refund of ``amount`` comes out of: the latest that still holds it."""
    return next((p for p in reversed(payments) if unrefunded(p) >= amount), None)


def new_refund(invoice: Doc, original: Doc, amount: int, *, refund_id: str, status: str, payment_method: str,
               gateway: str, date: int, now: int, reference_number: str | None = None) -> Doc:
    """The refund transaction document (not saved)."""
    txn = {
        "id": refund_id, "object": "transaction", "customer_id": invoice["customer_id"],
        "payment_method": payment_method, "gateway": gateway, "type": "refund", "date": date,
        "currency_code": invoice["currency_code"], "amount": amount, "status": status,
        "refunded_txn_id": original["id"], "amount_unused": 0,
        "linked_invoices": [closing.invoice_link(invoice, amount, now)],
    }
    if invoice.get("subscription_id"):
        txn["subscription_id"] = invoice["subscription_id"]
    if original.get("masked_card_number"):
        txn["masked_card_number"] = original["masked_card_number"]
    if reference_number:
        txn["reference_number"] = reference_number
    return txn


def refund_link(refund: Doc) -> Doc:
    """The refunded payment's ``linked_refunds`` entry for ``refund``."""
    return {"txn_id": refund["id"], "txn_status": refund["status"], "txn_date": refund["date"],
            "txn_amount": refund["amount"]}


@dataclass(frozen=True)
class RefundSettlement:
    refund: Doc
    original: Doc  # the refunded payment (its linked_refunds entry updated)
    invoice: Doc  # its linked_transactions entry updated
    events: tuple[str, ...]  # transaction_* carry the refund; the others the refund, invoice, customer...


def settle(refund: Doc, original: Doc, invoice: Doc, answer: Answer) -> RefundSettlement:
    """The gateway's answer to a refund in progress (see the module docstring). Nothing given is
    changed."""
    if refund["status"] not in UNSETTLED:
        raise ValueError(f"refund {refund['id']} is settled already")
    r, orig, inv = copy.deepcopy(refund), copy.deepcopy(original), copy.deepcopy(invoice)
    first = r["status"] == "in_progress"
    if answer.reference:
        r["id_at_gateway"] = answer.reference
    r["status"] = {"success": "success", "failure": "failure"}.get(answer.status, "timeout")
    if r["status"] != "success":
        r["error_code"], r["error_text"] = answer.error_code or "failure", answer.error_text or "The refund failed"
    for lr in orig.get("linked_refunds", ()):
        if lr["txn_id"] == r["id"]:
            lr["txn_status"] = r["status"]
    for lt in inv.get("linked_transactions", ()):
        if lt["txn_id"] == r["id"]:
            lt["txn_status"] = r["status"]
    events: tuple[str, ...] = ("transaction_created" if first else "transaction_updated",)
    if r["status"] == "success":
        events += ("payment_refunded",)
    elif r["status"] == "timeout" and first:  # sent to the gateway, outcome not known yet
        events += ("refund_initiated",)
    return RefundSettlement(r, orig, inv, events)
