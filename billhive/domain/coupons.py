"""Coupons on invoices and subscriptions. Pure.

Applying coupons to an invoice's lines (in this order):
1. ``each_specified_item`` coupons discount the plan/addon lines they name (plan_constraint /
   addon_constraint): a percentage of each line, a fixed amount per line, or ``offer_quantity``
   units of the line free; never more than the line's amount left.
2. ``invoice_amount`` coupons discount what remains of the whole invoice: a percentage of it,
   or a fixed amount.
Each discount is rounded once (half up); the discounts never exceed the sub total.

When a pending invoice's lines change (add_charge, add_addon_charge, at close) ``rediscount``
computes its coupons' discounts again for the new lines (the spec's apply_on: an invoice_amount
coupon "is applied to the invoice sub_total"); its other discounts keep their amounts, at most
what the coupons leave.

On a subscription a coupon is an entry ``{coupon_id, apply_till?, applied_count, coupon_code?}``
and its duration decides which invoices it discounts: ``one_time`` the first only, ``forever``
all, ``limited_period`` those dated before ``apply_till`` (attachment + duration_month months).
"""

from __future__ import annotations

from fractions import Fraction

from billhive.domain.catalog import applies_to_addon, applies_to_plan
from billhive.domain.document import Doc
from billhive.domain.money import percent_of
from billhive.domain.periods import add_months


def applies_to(coupon: Doc, entity_type: str, entity_id: str | None) -> bool:
    """Whether an each_specified_item coupon discounts a plan or addon line."""
    if entity_id is None:
        return False
    if entity_type == "plan":
        return applies_to_plan(coupon, entity_id)
    if entity_type == "addon":
        return applies_to_addon(coupon, entity_id)
    return False


def applicable(coupon: Doc, items: list[tuple[str, str | None]]) -> bool:
    """Whether the coupon discounts anything among (entity_type, entity_id) items."""
    if coupon.get("apply_on") == "invoice_amount":
        return True
    return any(applies_to(coupon, t, i) for t, i in items)


def line_discount(coupon: Doc, line: Doc, left: int) -> int:
    """What an each_specified_item coupon takes off one line it applies to, at most ``left``."""
    kind = coupon["discount_type"]
    if kind == "percentage":
        d = percent_of(int(line["amount"]), Fraction(str(coupon["discount_percentage"])))
    elif kind == "fixed_amount":
        d = int(coupon["discount_amount"])
    else:  # offer_quantity: that many units free
        d = int(line["unit_amount"]) * min(int(coupon.get("discount_quantity", 0)), int(line.get("quantity", 1)))
    return max(0, min(d, left))


def discounts(coupons: list[Doc], lines: list[Doc]) -> list[Doc]:
    """The ``discounts`` entries these coupons give an invoice with these lines (see the module
    docstring). Coupons that discount nothing give no entry."""
    left_by_line = [int(li["amount"]) for li in lines]
    out: list[Doc] = []
    for coupon in coupons:
        if coupon.get("apply_on") != "each_specified_item":
            continue
        total = 0
        for i, line in enumerate(lines):
            if applies_to(coupon, line.get("entity_type", ""), line.get("entity_id")):
                d = line_discount(coupon, line, left_by_line[i])
                left_by_line[i] -= d
                total += d
        if total > 0:
            out.append(_entry(coupon, total))
    remaining = sum(left_by_line)
    for coupon in coupons:
        if coupon.get("apply_on") != "invoice_amount" or remaining <= 0:
            continue
        if coupon["discount_type"] == "percentage":
            d = percent_of(remaining, Fraction(str(coupon["discount_percentage"])))
        elif coupon["discount_type"] == "fixed_amount":
            d = int(coupon.get("discount_amount", 0))
        else:  # offer_quantity names items: it discounts no invoice amount
            d = 0
        d = max(0, min(d, remaining))
        if d > 0:
            remaining -= d
            out.append(_entry(coupon, d))
    return out


def discount(coupon: Doc, lines: list[Doc]) -> Doc | None:
    """The ``discounts`` entry one coupon gives these lines (a one-off invoice's coupon), or None
    when it discounts nothing."""
    found = discounts([coupon], lines)
    return found[0] if found else None


def rediscount(current: list[Doc], coupons: dict[str, Doc], lines: list[Doc]) -> list[Doc]:
    """An invoice's discounts once its lines are ``lines``: each coupon entry of ``current`` whose
    coupon is in ``coupons`` (by id) is computed again (``discounts``: item coupons first, then
    invoice_amount ones) and leaves when it discounts nothing now; every other entry (a coupon no
    longer in the catalog, credit adjustments, account credits) keeps its amount, at most what is
    left of the sub total, in order. Entries keep their place and their other keys."""
    known = [coupons[d["entity_id"]] for d in current if _is_coupon(d) and d["entity_id"] in coupons]
    fresh = {d["entity_id"]: int(d["amount"]) for d in discounts(known, lines)}
    left = max(0, sum(int(li["amount"]) for li in lines) - sum(fresh.values()))
    out: list[Doc] = []
    for d in current:
        if _is_coupon(d) and d["entity_id"] in coupons:
            amount = fresh.get(d["entity_id"], 0)
        else:
            amount = min(int(d["amount"]), left)
            left -= amount
        if amount > 0:
            out.append({**d, "amount": amount})
    return out


def _is_coupon(entry: Doc) -> bool:
    return entry.get("type") == "coupon" and entry.get("entity_id") is not None


def _entry(coupon: Doc, amount: int) -> Doc:
    return {"amount": amount, "description": coupon.get("invoice_name") or coupon.get("name") or coupon["id"],
            "type": "coupon", "entity_id": coupon["id"]}


# ---- coupons attached to a subscription ------------------------------------------------------------

def attach(coupon: Doc, at: int, code: str | None = None) -> Doc:
    """The subscription's entry for a coupon attached at ``at``."""
    entry: Doc = {"coupon_id": coupon["id"]}
    if coupon.get("duration_type") == "limited_period":
        entry["apply_till"] = add_months(at, int(coupon.get("duration_month", 1)))
    entry["applied_count"] = 0
    if code:
        entry["coupon_code"] = code
    return entry


def in_effect(entry: Doc, coupon: Doc, at: int) -> bool:
    """Whether the entry still discounts an invoice dated ``at``."""
    duration = coupon.get("duration_type", "forever")
    if duration == "one_time":
        return int(entry.get("applied_count", 0)) < 1
    if duration == "limited_period":
        return "apply_till" not in entry or at < int(entry["apply_till"])
    return True
