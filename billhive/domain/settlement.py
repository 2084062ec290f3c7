"""Settling a charge: the gateway's answer applied to the payment transaction and its invoice,
decided on loaded values.

``settle`` takes the unsettled transaction (``in_progress``: never settled; ``timeout``: the
gateway's outcome was not known at the first settlement), its invoice, the gateway's answer and
the charge's purpose, and answers a ``Settlement``: the transaction and invoice after, the amount
applied, the dunning decision and the events, in order. The service (services/payments.py
``settle``) loads the inputs, calls ``settle`` once, then saves and emits what it says.

The rules:
- ``timeout``: the gateway took the charge but its outcome is not known: the transaction is
  ``timeout`` (the payment is initiated); the invoice is unchanged; recovery settles it later.
- ``success``: the transaction's amount is applied to the invoice (``amount_paid``, a linked
  transaction); nothing left due -> ``paid`` (``paid_on`` now), and dunning ends (domain/dunning).
- ``failure``: the transaction is ``failure`` with the gateway's error; it is linked to the invoice
  both ways with the attempted amount (``linked_transactions`` entry with ``txn_status: failure``,
  ``linked_invoices[].applied_amount``: Chargebee's payment_failed sample) but pays nothing:
  ``amount_paid`` and ``amount_due`` count successful payments only (not for ``create``, whose
  invoice should never have existed); by purpose —
  ``close`` (an invoice closed with a charge) and ``dunning`` (a retry) start or advance dunning;
  ``create`` (a one-off invoice, which exists only if its charge succeeds: Chargebee) voids the
  invoice and gives back the balances it took (``undo_balances``); ``collect_payment`` leaves the
  invoice as it was (the caller answers 400).

``offline_payment`` is the same for a payment made outside billhive (record_payment): applied up
to the amount due, the rest an excess payment of the customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from billhive.domain import closing, dunning
from billhive.domain import invoices as D
from billhive.domain.document import Doc, clone
from billhive.errors import ParamError

UNSETTLED = ("in_progress", "timeout")
PURPOSES = ("close", "create", "collect_payment", "dunning")


class Answer(Protocol):
    """The gateway's answer (billhive.gateway.GatewayResult)."""

    @property
    def status(self) -> str: ...  # success | failure | timeout

    @property
    def reference(self) -> str: ...  # the gateway's id of the charge

    @property
    def error_code(self) -> str | None: ...

    @property
    def error_text(self) -> str | None: ...


@dataclass(frozen=True)
class Settlement:
    transaction: Doc  # the transaction after
    invoice: Doc  # the invoice after (unchanged on a timeout)
    applied: int = 0  # the amount applied to the invoice (the invoice_transactions row to set)
    final: bool = True  # False: a timeout, only the transaction is saved
    dunning: dunning.Decision | None = None  # dunning started, advanced or ended
    undo_balances: bool = False  # a voided one-off invoice: give back the balances its closing took
    events: tuple[str, ...] = ()  # in order; payment_* events carry the invoice's customer and card


def unsettled(transaction: Doc) -> bool:
    """Whether the transaction still waits for its settlement (racing settlers: one wins)."""
    return transaction["status"] in UNSETTLED


def needs_dunning_state(answer: Answer, purpose: str) -> bool:
    """Whether ``settle`` needs the invoice's dunning state (a failed close or retry)."""
    return answer.status == "failure" and purpose in ("close", "dunning")


def settle(transaction: Doc, invoice: Doc, answer: Answer, *, purpose: str, now: int,
           dunning_state: dunning.State | None = None,
           dunning_settings: dunning.Settings | None = None) -> Settlement:
    """The decision (see the module docstring). Neither document is changed."""
    if not unsettled(transaction):
        raise ValueError(f"transaction {transaction['id']} is settled already")
    # copies of what is changed (on the hot path: cheaper than deep copies of both documents)
    txn = {**transaction, "linked_invoices": [dict(li) for li in transaction["linked_invoices"]]}
    inv = dict(invoice)
    if "linked_transactions" in inv:
        inv["linked_transactions"] = list(inv["linked_transactions"])
    first = txn["status"] == "in_progress"
    if answer.reference:
        txn["id_at_gateway"] = answer.reference
    if answer.status == "timeout":
        txn["status"] = "timeout"
        txn["error_code"], txn["error_text"] = answer.error_code or "timeout", answer.error_text or "timeout"
        events: tuple[str, ...] = ()
        if first:
            events = (("invoice_generated",) if purpose in ("close", "create") else ()) \
                + ("transaction_created", "payment_initiated")
        return Settlement(txn, invoice, final=False, events=events)
    txn.pop("error_code", None)
    txn.pop("error_text", None)
    ok = answer.status == "success"
    applied, decision, undo = 0, None, False
    if ok:
        applied = int(txn["amount"])
        txn["status"] = "success"
        txn["linked_invoices"][0]["applied_amount"] = applied
        inv["amount_paid"] = int(inv.get("amount_paid", 0)) + applied
        if applied > 0:
            inv.setdefault("linked_transactions", []).append(closing.transaction_link(txn, applied, now))
        D.recompute(inv)
        if inv["amount_due"] == 0 and inv["status"] != "paid":
            D.transition(inv, "paid")
            inv["paid_on"] = now
            decision = dunning.on_paid(inv, by_retry=purpose == "dunning")
    else:
        txn["status"] = "failure"
        txn["error_code"] = answer.error_code or "failure"
        txn["error_text"] = answer.error_text or "The payment failed"
        if purpose != "create":  # on both documents, as Chargebee's payment_failed sample; it pays nothing
            attempted = int(txn["amount"])
            txn["linked_invoices"][0]["applied_amount"] = attempted
            inv.setdefault("linked_transactions", []).append(closing.transaction_link(txn, attempted, now))
        if purpose in ("close", "dunning"):
            decision = dunning.on_failure(inv, dunning_state or dunning.State(), dunning_settings or dunning.Settings(),
                                          now, retry=purpose == "dunning")
        elif purpose == "create":
            D.transition(inv, "voided")
            undo = True
    if decision is not None:
        inv = decision.invoice
    events = ()
    if first and (purpose == "close" or (purpose == "create" and ok)):
        events += ("invoice_generated",)
    elif purpose == "create" and not first and not ok:  # announced at the timeout, now voided
        events += ("invoice_updated",)
    events += ("transaction_created" if first else "transaction_updated",)
    events += ("payment_succeeded" if ok else "payment_failed",)
    return Settlement(txn, inv, applied, True, decision, undo, events)


@dataclass(frozen=True)
class OfflinePayment:
    transaction: Doc  # the new payment (success)
    invoice: Doc  # the invoice after
    applied: int  # the part of the payment applied to the invoice
    excess: int  # the rest: the customer's excess payment
    dunning: dunning.Decision | None = None  # the invoice got paid: dunning ends


def offline_payment(invoice: Doc, *, txn_id: str, payment_method: str, paid_at: int, now: int,
                    amount: int | None = None, reference_number: str | None = None,
                    memo: str | None = None) -> OfflinePayment:
    """record_payment: ``amount`` (default: the amount due) paid at ``paid_at``, not in the future."""
    if paid_at > now:
        raise ParamError("paid_at : cannot be in the future", param="paid_at")
    inv = clone(invoice)
    amount = inv["amount_due"] if amount is None else amount
    applied = min(amount, inv["amount_due"])
    excess = amount - applied
    txn = {
        "id": txn_id, "object": "transaction", "customer_id": inv["customer_id"], "payment_method": payment_method,
        "gateway": "not_applicable", "type": "payment", "date": paid_at, "currency_code": inv["currency_code"],
        "amount": amount, "status": "success", "amount_unused": excess,
        "linked_invoices": [closing.invoice_link(inv, applied, now)],
    }
    if inv.get("subscription_id"):
        txn["subscription_id"] = inv["subscription_id"]
    if reference_number:
        txn["reference_number"] = reference_number
    if memo:  # the spec: "This will be the description in the transaction created."
        txn["description"] = memo
    inv["amount_paid"] = int(inv.get("amount_paid", 0)) + applied
    if applied > 0:
        inv.setdefault("linked_transactions", []).append(closing.transaction_link(txn, applied, now))
    D.recompute(inv)
    decision = None
    if inv["amount_due"] == 0:
        D.transition(inv, "paid")
        inv["paid_on"] = paid_at
        decision = dunning.on_paid(inv, by_retry=False)
        inv = decision.invoice
    return OfflinePayment(txn, inv, applied, excess, decision)
