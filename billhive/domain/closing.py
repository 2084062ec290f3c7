"""Closing an invoice: the decision, on loaded values (Chargebee's "close a pending invoice").

``close`` takes the invoice as it is before closing and what the customer has (its three
balances, its earlier payments with an unused amount, whether its card can be charged now) and
answers a ``Closing``: the closed invoice, the balances it takes and the charge to make. The
service (services/invoicing.py) loads those inputs, calls ``close`` once, then numbers the
invoice and saves everything the Closing says, with its events.

The rules, in this order:
1. an invoice without line items cannot be closed (delete it instead);
2. end date: the closing time, unless the site closes on the renewal date (``close_date =
   renewal_date``) and the invoice has one (a renewal's pending invoice);
3. the customer's promotional credits (a discount: ``account_credits``), then refundable credits
   (``credits_applied``), then excess payments (``amount_paid``, taken from the oldest payment
   first), each up to what is still due (domain/invoices.allocate); the invoice is taxed (given
   the ``taxes`` Basis the service loaded) before and again after the promotional credits, which
   come off before tax;
4. nothing due -> ``paid`` (``paid_on`` the closing time); else ``payment_due``, and when
   auto-collection is on and the customer's card can be charged, a charge of the amount due.
"""

from __future__ import annotations

from dataclasses import dataclass

from billhive.domain import invoices as D
from billhive.domain.document import Doc, clone
from billhive.domain.taxes import Basis
from billhive.errors import ConfigurationIncompatible, InvalidState

PROMOTIONAL_CREDITS = D.PROMOTIONAL_CREDITS


@dataclass(frozen=True)
class Balances:
    """The customer's balances when the invoice closes."""

    promotional: int  # customer.account_credits
    refundable: int  # customer.refundable_credits
    unused_payments: tuple[tuple[str, int], ...] = ()  # (txn id, amount_unused), oldest first

    @property
    def excess(self) -> int:
        return sum(amount for _, amount in self.unused_payments)


@dataclass(frozen=True)
class Payer:
    """How the invoice may be collected when it closes."""

    auto_collection: bool  # the subscription's override, else the customer's (``effective_auto_collection``)
    card_usable: bool  # the customer's payment method is a card that is not expired
    no_gateway: str | None = None  # why the site has no payment gateway to charge through (None: it has one)
    # without a gateway: "refuse" (an API request: ConfigurationIncompatible, nothing is written) or
    # "skip" (scheduled work, which has nobody to answer: closed as if there were no card)
    without_gateway: str = "refuse"


@dataclass(frozen=True)
class Closing:
    """What closing the invoice does. ``invoice`` is closed but keeps the id it had: the service
    gives it the next number of the site's sequence when it saves."""

    invoice: Doc
    promotional: int  # promotional credits taken (a discount on the invoice)
    refundable: int  # refundable credits taken (credits_applied)
    excess: tuple[tuple[str, int], ...]  # (txn id, amount taken) from earlier payments, oldest first
    charge: int  # the amount to charge the card now; 0: no charge

    @property
    def balances_moved(self) -> bool:
        return bool(self.promotional or self.refundable or self.excess)


def close(invoice: Doc, *, balances: Balances, payer: Payer, now: int, keep_end_date: bool = False,
          taxes: Basis | None = None) -> Closing:
    """The decision (see the module docstring). ``invoice`` is not changed. ``taxes``: the
    invoice's tax basis (None: keep the tax its lines carry)."""
    if not invoice.get("line_items"):
        raise InvalidState("The invoice has no line items and cannot be closed; delete it instead",
                           api_error_code="invalid_state_for_request")
    inv = clone(invoice)
    if not (keep_end_date and inv.get("end_date")):
        inv["end_date"] = now
    D.recompute(inv, taxes=taxes)
    alloc = D.allocate(inv, promotional=balances.promotional, refundable=balances.refundable,
                       excess=balances.excess, taxes=taxes)
    if alloc.promotional:
        inv.setdefault("discounts", []).append({"amount": alloc.promotional, "description": PROMOTIONAL_CREDITS,
                                                "type": "account_credits"})
    inv["credits_applied"] = int(inv.get("credits_applied", 0)) + alloc.refundable
    inv["amount_paid"] = int(inv.get("amount_paid", 0)) + alloc.excess
    excess = tuple(D.split_excess(alloc.excess, list(balances.unused_payments))) if alloc.excess else ()
    D.recompute(inv, taxes=taxes)
    charge = 0
    if inv["amount_due"] == 0:
        inv["status"] = "paid"
        inv["paid_on"] = now
    else:
        inv["status"] = "payment_due"
        if payer.auto_collection and payer.card_usable:
            if payer.no_gateway is None:
                charge = int(inv["amount_due"])
            elif payer.without_gateway == "refuse":
                raise ConfigurationIncompatible(payer.no_gateway)
    return Closing(inv, alloc.promotional, alloc.refundable, excess, charge)


# ---- the links a closing (or a payment) writes -------------------------------------------------

def invoice_link(invoice: Doc, applied: int, now: int) -> Doc:
    """A transaction's ``linked_invoices`` entry for ``invoice``."""
    return {"invoice_id": invoice["id"], "applied_amount": applied, "applied_at": now,
            "invoice_date": D.issue_date(invoice), "invoice_amount": invoice["amount"]}


def transaction_link(txn: Doc, applied: int, now: int) -> Doc:
    """An invoice's ``linked_transactions`` entry for ``txn``."""
    return {"txn_id": txn["id"], "applied_amount": applied, "applied_at": now, "txn_type": txn["type"],
            "txn_status": txn["status"], "txn_date": txn["date"], "txn_amount": txn["amount"]}


def use_excess(payment: Doc, invoice: Doc, take: int, now: int) -> Doc:
    """The earlier payment after ``take`` of its unused amount went to ``invoice`` (a copy)."""
    if not 0 < take <= int(payment.get("amount_unused", 0)):
        raise ValueError(f"cannot take {take} of payment {payment['id']}")
    out = clone(payment)
    out["amount_unused"] = int(out["amount_unused"]) - take
    out.setdefault("linked_invoices", []).append(invoice_link(invoice, take, now))
    return out


# ---- giving back what a closing took (a voided one-off invoice, a void, a delete) ---------------

@dataclass(frozen=True)
class GiveBack:
    """The balances an invoice took when it closed, to give back to the customer."""

    invoice: Doc  # the invoice without them (its full amount due again)
    promotional: int  # the account_credits discount
    refundable: int  # credits_applied
    excess: tuple[tuple[str, int], ...]  # (txn id, amount) taken from earlier payments

    @property
    def moved(self) -> bool:
        return bool(self.promotional or self.refundable or self.excess)


def give_back(invoice: Doc, *, taxes: Basis | None = None) -> GiveBack:
    """Everything ``close`` took for ``invoice`` (``invoice`` is not changed); ``taxes``: its tax
    basis, to tax it again without the promotional credits."""
    inv = clone(invoice)
    promotional = D.discount_total(inv, types=("account_credits",))
    if promotional:
        inv["discounts"] = [d for d in inv.get("discounts", ()) if d["type"] != "account_credits"]
    refundable = int(inv.get("credits_applied", 0))
    inv["credits_applied"] = 0 if refundable else inv.get("credits_applied", 0)
    kept, excess = [], []
    for lt in inv.get("linked_transactions", ()):
        if lt["txn_type"] != "payment" or lt.get("txn_status") != "success" or not lt["applied_amount"]:
            kept.append(lt)
            continue
        excess.append((lt["txn_id"], int(lt["applied_amount"])))
        inv["amount_paid"] = int(inv.get("amount_paid", 0)) - int(lt["applied_amount"])
    inv["linked_transactions"] = kept
    D.recompute(inv, taxes=taxes)
    return GiveBack(inv, promotional, refundable, tuple(excess))


def return_excess(payment: Doc, invoice_id: str, take: int) -> Doc:
    """The earlier payment after ``take`` went back from ``invoice_id`` to its unused amount (a copy;
    the reverse of ``use_excess``)."""
    out = clone(payment)
    out["amount_unused"] = int(out.get("amount_unused", 0)) + take
    out["linked_invoices"] = [li for li in out.get("linked_invoices", ()) if li["invoice_id"] != invoice_id]
    return out
