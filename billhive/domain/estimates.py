"""The v1 Estimate resource of an invoice built in memory (never saved). Pure.

``balances`` (promotional, refundable, excess: the customer's credits) are applied in closing
order (``invoices.allocate``) when given and something is due: promotional credits as a
discount, refundable credits and excess payments as ``credits_applied``.
"""

from __future__ import annotations

import copy

from billhive.domain import invoices as D
from billhive.domain.document import Doc
from billhive.domain.taxes import Basis

_LINE_FIELDS = ("date_from", "date_to", "unit_amount", "quantity", "amount", "is_taxed", "tax", "tax_rate",
                "reference_line_item_id", "description", "type", "entity_type", "entity_id", "object")


def estimate(inv: Doc | None, sub: Doc | None, now: int, *, collect_now: bool,
             balances: dict[str, int] | None = None, taxes: Basis | None = None,
             price_type: str = "tax_exclusive") -> Doc:
    """The Estimate of ``inv`` (or an empty one, priced as ``price_type``) for ``sub`` (its status
    and term end after the estimated operation). ``taxes``: the invoice's tax basis, used when
    ``balances`` are applied (promotional credits come off before tax, as at closing)."""
    inv = copy.deepcopy(inv) if inv is not None else {"line_items": [], "discounts": [], "taxes": [],
                                                      "price_type": price_type}
    D.recompute(inv)
    if balances is not None and inv["amount_due"] > 0:
        _apply_balances(inv, balances, taxes)
    est: Doc = {"created_at": now, "recurring": bool(inv.get("recurring", True))}
    if sub is not None:
        est["subscription_id"] = sub["id"]
        est["subscription_status"] = sub["status"]
        if sub.get("current_term_end") is not None:
            est["term_ends_at"] = sub["current_term_end"]
    est.update({"collect_now": collect_now, "price_type": inv.get("price_type", "tax_exclusive"),
                "amount": inv["amount"], "credits_applied": int(inv.get("credits_applied", 0)),
                "amount_due": inv["amount_due"], "sub_total": inv["sub_total"],
                "line_items": [{k: li[k] for k in _LINE_FIELDS if k in li} for li in inv.get("line_items", ())],
                "discounts": list(inv.get("discounts", ())), "taxes": list(inv.get("taxes", ())),
                "object": "estimate"})
    return est


def _apply_balances(inv: Doc, balances: dict[str, int], taxes: Basis | None) -> None:
    alloc = D.allocate(inv, promotional=balances["promotional"], refundable=balances["refundable"],
                       excess=balances["excess"], taxes=taxes)
    if alloc.promotional:
        inv["discounts"].append({"amount": alloc.promotional, "description": D.PROMOTIONAL_CREDITS,
                                 "type": "account_credits"})
        D.recompute(inv, taxes=taxes)
    inv["credits_applied"] = int(inv.get("credits_applied", 0)) + alloc.refundable + alloc.excess
    D.recompute(inv)
