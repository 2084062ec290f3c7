"""Invoice rules: totals in named, ordered steps; balance application at closing; the state
machine. Pure: works on invoice documents (API shape) and plain integers.

    sub_total      = sum of line item amounts
    discounts      = coupons + credit adjustments + promotional (account) credits
    amount         = sub_total - discounts + tax      (tax_exclusive)
                   = sub_total - discounts            (tax_inclusive: the lines' amounts hold the tax)
    amount_due     = amount - credits_applied - amount_paid - amount_adjusted   (never below 0)

Tax: given a ``taxes.Basis`` (the rule, price type and taxable items the service loaded),
``recompute`` first taxes the lines (domain/taxes.apply: discounts come off before tax); without
one it keeps the tax the lines already carry (a payment or an adjustment changes no tax).

Every line amount and total stays within ``money.MAX_AMOUNT``: ``recompute`` refuses an invoice
beyond it (AmountTooLarge, naming the request parameter the caller says added to it).
"""

from __future__ import annotations

from dataclasses import dataclass

from billhive.domain import money
from billhive.domain import taxes as T
from billhive.domain.document import Doc, clone
from billhive.errors import InvalidState

STATUSES = ("pending", "paid", "payment_due", "not_paid", "voided")
CLOSED_UNPAID = ("payment_due", "not_paid")
PROMOTIONAL_CREDITS = "Promotional Credits"

# from -> allowed targets (SEMANTICS.md, "Invoice states")
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"paid", "payment_due", "not_paid"}),
    "payment_due": frozenset({"paid", "not_paid", "voided"}),
    "not_paid": frozenset({"paid", "voided", "payment_due"}),
    "paid": frozenset(),
    "voided": frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def transition(invoice: Doc, target: str) -> None:
    current = invoice["status"]
    if not can_transition(current, target):
        raise InvalidState(f"Invoice {invoice['id']} is {current}; it cannot become {target}")
    invoice["status"] = target


def line_amount(unit_amount: int, quantity: int, param: str | None = None) -> int:
    """unit_amount x quantity, within MAX_AMOUNT (``param``: the request parameter to blame)."""
    return money.check(unit_amount * quantity, param, "the line amount")


def sub_total(invoice: Doc, param: str | None = None) -> int:
    return money.total((int(li["amount"]) for li in invoice.get("line_items", ())), param, "the invoice sub_total")


def discount_total(invoice: Doc, *, types: tuple[str, ...] | None = None) -> int:
    return sum(int(d["amount"]) for d in invoice.get("discounts", ()) if types is None or d["type"] in types)


def tax_total(invoice: Doc) -> int:
    return sum(int(li.get("tax", 0) or 0) for li in invoice.get("line_items", ()))


def recompute(invoice: Doc, param: str | None = None, taxes: T.Basis | None = None) -> Doc:
    """Set sub_total, tax, amount and amount_due from the lines, discounts and payments; with
    ``taxes``, the lines' and the invoice's taxes first.

    A total beyond MAX_AMOUNT is AmountTooLarge naming ``param``: the request parameter that
    added to the invoice (None on paths without one, such as renewals)."""
    st = sub_total(invoice, param)
    if taxes is not None:
        T.apply(invoice, taxes)
    tax = money.check(tax_total(invoice), param, "the invoice tax")
    added = 0 if invoice.get("price_type") == T.INCLUSIVE else tax
    amount = money.check(max(0, st - discount_total(invoice) + added), param, "the invoice amount")
    invoice["sub_total"] = st
    invoice["tax"] = tax
    invoice["amount"] = amount
    invoice.setdefault("credits_applied", 0)
    invoice.setdefault("amount_paid", 0)
    invoice.setdefault("amount_adjusted", 0)
    invoice["amount_due"] = amount_due(invoice)
    return name_nested(invoice)


# the "object" of each kind of object an invoice holds, as Chargebee's v1 payloads name them
# ("object": "line_item", "billing_address"...; docs/PARITY.md). Its linked_transactions and
# linked_orders carry none in those payloads.
NESTED_OBJECTS = {"line_items": "line_item", "discounts": "discount", "taxes": "tax",
                  "billing_address": "billing_address", "shipping_address": "shipping_address"}


def name_nested(invoice: Doc) -> Doc:
    """Set ``object`` on the objects the invoice holds (recompute does, on every change)."""
    for key, kind in NESTED_OBJECTS.items():
        value = invoice.get(key)
        for item in (value if isinstance(value, list) else [value] if isinstance(value, dict) else ()):
            item["object"] = kind
    return invoice


def amount_due(invoice: Doc) -> int:
    return max(0, int(invoice["amount"]) - int(invoice.get("credits_applied", 0)) - int(invoice.get("amount_paid", 0))
               - int(invoice.get("amount_adjusted", 0)))


@dataclass(frozen=True)
class Allocation:
    """How much of each customer balance a closing invoice takes."""

    promotional: int  # account credits: a discount before tax
    refundable: int  # credits_applied
    excess: int  # earlier payments' unused amounts


def allocate(invoice: Doc, *, promotional: int, refundable: int, excess: int,
             taxes: T.Basis | None = None) -> Allocation:
    """Chargebee's precedence: promotional credits, then refundable credits, then excess
    payments, each up to what is still due. ``invoice`` must have current totals. Promotional
    credits are a discount before tax: with ``taxes`` the amount still due after them is taxed
    again (without, the invoice's tax is kept)."""
    if min(promotional, refundable, excess) < 0:
        raise ValueError("balances cannot be negative")
    discountable = max(0, sub_total(invoice) - discount_total(invoice))
    promo = min(promotional, discountable)
    after = with_promotional(invoice, promo)
    recompute(after, taxes=taxes)
    due = int(after["amount_due"])
    refund = min(refundable, due)
    due -= refund
    ex = min(excess, due)
    return Allocation(promo, refund, ex)


def with_promotional(invoice: Doc, amount: int) -> Doc:
    """A copy of ``invoice`` with ``amount`` of promotional credits as a discount (totals not
    recomputed)."""
    out = clone(invoice)
    if amount:
        out.setdefault("discounts", []).append({"amount": amount, "description": PROMOTIONAL_CREDITS,
                                                "type": "account_credits"})
    return out


def split_excess(amount: int, unused: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Take ``amount`` from earlier payments' unused amounts, oldest first: [(txn_id, taken)]."""
    out = []
    left = amount
    for txn_id, available in unused:
        if left <= 0:
            break
        take = min(available, left)
        if take > 0:
            out.append((txn_id, take))
            left -= take
    if left > 0:
        raise ValueError("not enough excess payments")
    return out


def issue_date(invoice: Doc) -> int:
    """The date the invoice is issued (Chargebee's ``invoice_date``: "The date this invoice is
    issued"): its ``end_date`` once closed, its ``start_date`` while pending. The one rule for
    transaction ``linked_invoices[].invoice_date``, the PDF and the emails."""
    return int(invoice.get("end_date") or invoice["start_date"])


def invoice_number(prefix: str, number: int) -> str:
    return f"{prefix}{number}"
