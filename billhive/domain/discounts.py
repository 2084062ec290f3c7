"""Coupon discounts on an invoice's line items. Pure: coupon and line items as the API shows them.

- ``apply_on = invoice_amount``: the percentage of (or the fixed amount off) the sum of the lines,
  rounded once.
- ``apply_on = each_specified_item``: per line whose plan/addon the coupon names (``plan_constraint``
  / ``addon_constraint``: ``all`` or ``specific`` with ``plan_ids`` / ``addon_ids``); ad-hoc lines
  are never discounted. Percentage: of the line, rounded once per line; fixed amount: off each
  line, at most the line; offer quantity: that many units of the line free.
A discount never exceeds what the lines add up to, and is never negative.
"""

from __future__ import annotations

from fractions import Fraction

from billhive.domain.catalog import applies_to_addon, applies_to_plan
from billhive.domain.money import percent_of


def _applies(coupon: dict, line: dict) -> bool:
    kind, ident = line.get("entity_type"), line.get("entity_id") or ""
    if kind == "plan":
        return applies_to_plan(coupon, ident)
    if kind == "addon":
        return applies_to_addon(coupon, ident)
    return False  # ad-hoc charges


def _percentage(coupon: dict) -> Fraction:
    # the spec's percentage is a double: take its decimal text, not its binary value
    return Fraction(str(coupon.get("discount_percentage", 0)))


def coupon_discount(coupon: dict, line_items: list[dict]) -> int:
    """The coupon's discount (minor units) on these lines."""
    total = sum(int(li["amount"]) for li in line_items)
    if total <= 0:
        return 0
    dtype = coupon.get("discount_type")
    amount = 0
    if coupon.get("apply_on", "invoice_amount") == "invoice_amount":
        if dtype == "percentage":
            amount = percent_of(total, _percentage(coupon))
        elif dtype == "fixed_amount":
            amount = int(coupon.get("discount_amount", 0))
    else:
        for li in line_items:
            if not _applies(coupon, li):
                continue
            line = max(0, int(li["amount"]))
            if dtype == "percentage":
                amount += percent_of(line, _percentage(coupon))
            elif dtype == "fixed_amount":
                amount += min(int(coupon.get("discount_amount", 0)), line)
            elif dtype == "offer_quantity":
                free = min(int(coupon.get("discount_quantity", 0)), int(li.get("quantity", 1)))
                amount += min(free * int(li["unit_amount"]), line)
    return max(0, min(amount, total))
