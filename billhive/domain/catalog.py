"""Catalog rules: which combinations of plan, addon and coupon attributes Chargebee v1 accepts,
coupon status and redemption checks, and coupon applicability. Pure: no I/O, no clock.

The functions take a resource document as the API shows it (already merged with the request's
values) plus the names the request actually gave (``given``), so that an error names the
parameter the caller sent, in bracket form. They raise ``billhive.errors`` classes and return
the normalised document; they never change their arguments.
"""

from __future__ import annotations

from collections.abc import Collection

from billhive.domain.document import Doc
from billhive.errors import (
    InvalidState,
    ParamError,
    ParamRequired,
    ResourceLimitExhausted,
)

# ---- identifiers ---------------------------------------------------------------------------

# Ids and codes travel in URL paths (/plans/{plan-id}). The SDKs percent-encode them, but a '/'
# (decoded by the server before routing) or a '%' (decoded twice on the way) cannot round-trip,
# and whitespace or control characters are never intended. *(choice)*
_ID_FORBIDDEN = frozenset("/\\%")


def check_id(value: str, param: str) -> None:
    if not value or any(c in _ID_FORBIDDEN or c.isspace() or not c.isprintable() for c in value):
        raise ParamError(f"{param} : may contain letters, digits and punctuation other than / \\ %, "
                         "and no spaces", param=param)


def _blank(param: str) -> ParamRequired:
    return ParamRequired(f"{param} : cannot be blank", param=param)


# ---- plans ----------------------------------------------------------------------------------

# Chargebee v1 (update_a_plan): once a subscription or invoice is linked to a plan, only these
# can change.
PLAN_UPDATABLE_WHEN_IN_USE = frozenset({
    "name", "invoice_name", "setup_cost", "price", "trial_period", "trial_period_unit", "redirect_url",
    "enabled_in_hosted_pages",
})
# update_an_addon: the same for addons.
ADDON_UPDATABLE_WHEN_IN_USE = frozenset({"name", "invoice_name", "price"})


def normalize_plan(plan: Doc, given: Collection[str]) -> Doc:
    """Check a plan (new, or existing merged with an update) and return it normalised."""
    out = dict(plan)
    if out.get("trial_period") == 0:  # update_a_plan: zero removes the trial
        out.pop("trial_period", None)
        out.pop("trial_period_unit", None)
    has_period, has_unit = "trial_period" in out, "trial_period_unit" in out
    if has_period and not has_unit:
        raise _blank("trial_period_unit")
    if has_unit and not has_period:
        if "trial_period_unit" in given:
            raise _blank("trial_period")
        out.pop("trial_period_unit")
    if out.get("free_quantity", 0) > 0 and out.get("charge_model") != "per_unit":
        param = "free_quantity" if "free_quantity" in given else "charge_model"
        raise ParamError(f"{param} : free quantity applies only to plans with charge_model per_unit",
                         param=param)
    return out


def check_plan_update(plan: Doc, changes: Doc, *, in_use: bool) -> None:
    """update_a_plan preconditions: archived plans cannot change; plans in use change only a few fields."""
    if plan.get("status") != "active":
        raise InvalidState(f"The plan {plan['id']} is {plan.get('status')} and cannot be updated")
    if in_use:
        _only_when_in_use(plan, changes, PLAN_UPDATABLE_WHEN_IN_USE, "plan")


def _only_when_in_use(doc: Doc, changes: Doc, allowed: frozenset[str], what: str) -> None:
    for name, value in changes.items():
        if name not in allowed and doc.get(name) != value:
            raise ParamError(f"{name} : cannot be changed as the {what} is already used by subscriptions or "
                             "invoices", param=name)


# ---- addons ---------------------------------------------------------------------------------

def normalize_addon(addon: Doc, given: Collection[str]) -> Doc:
    """Check an addon (new, or existing merged with an update) and return it normalised.

    - recurring: needs a period_unit other than not_applicable; period defaults to 1 *(choice)*.
    - non_recurring: period_unit is not_applicable and there is no period; values the request
      did not give (left over from a recurring addon) are dropped, values it gave are refused.
    - unit applies only to quantity addons (dropped likewise when switching to on_off).
    """
    out = dict(addon)
    if out["charge_type"] == "recurring":
        unit = out.get("period_unit")
        if unit is None or unit == "not_applicable":
            if unit == "not_applicable" and "period_unit" in given:
                raise ParamError("period_unit : not_applicable is only for non_recurring addons",
                                 param="period_unit")
            raise _blank("period_unit")
        out.setdefault("period", 1)
    else:
        if "period" in out:
            if "period" in given:
                raise ParamError("period : applicable only for recurring addons", param="period")
            del out["period"]
        if out.get("period_unit", "not_applicable") != "not_applicable" and "period_unit" in given:
            raise ParamError("period_unit : applicable only for recurring addons; non_recurring addons have "
                             "not_applicable", param="period_unit")
        out["period_unit"] = "not_applicable"
    if out["type"] != "quantity" and "unit" in out:
        if "unit" in given:
            raise ParamError("unit : applicable only for quantity type addons", param="unit")
        del out["unit"]
    return out


def check_addon_update(addon: Doc, changes: Doc, *, in_use: bool) -> None:
    if addon.get("status") != "active":
        raise InvalidState(f"The addon {addon['id']} is {addon.get('status')} and cannot be updated")
    if in_use:
        _only_when_in_use(addon, changes, ADDON_UPDATABLE_WHEN_IN_USE, "addon")


# ---- coupons --------------------------------------------------------------------------------

_AMOUNT_FIELD = {"percentage": "discount_percentage", "fixed_amount": "discount_amount",
                 "offer_quantity": "discount_quantity"}


def normalize_coupon(coupon: Doc, *, now: int) -> Doc:
    """Check a new coupon (request values over the spec's defaults) and return it normalised.

    Returns the document with plan_constraint / addon_constraint filled in (``not_applicable``
    for invoice_amount coupons). Existence of plan_ids / addon_ids is the caller's to check.
    """
    out = dict(coupon)
    dtype = out["discount_type"]
    wanted = _AMOUNT_FIELD[dtype]
    if wanted not in out:
        raise _blank(wanted)
    for other in _AMOUNT_FIELD.values():
        if other != wanted and other in out:
            raise ParamError(f"{other} : not applicable for discount_type {dtype}", param=other)
    if dtype == "fixed_amount" and out["discount_amount"] < 1:
        raise ParamError("discount_amount : must be greater than 0", param="discount_amount")
    if dtype == "offer_quantity" and out["apply_on"] != "each_specified_item":
        raise ParamError("apply_on : offer_quantity coupons apply to each_specified_item", param="apply_on")

    if out["duration_type"] == "limited_period":
        if "duration_month" not in out:
            raise _blank("duration_month")
    elif "duration_month" in out:
        raise ParamError("duration_month : applicable only when duration_type is limited_period",
                         param="duration_month")

    if "valid_till" in out and out["valid_till"] <= now:
        raise ParamError("valid_till : must be in the future", param="valid_till")

    if out["apply_on"] == "invoice_amount":
        for name in ("plan_constraint", "addon_constraint", "plan_ids", "addon_ids"):
            if name in out:
                raise ParamError(f"{name} : not applicable when apply_on is invoice_amount", param=name)
        out["plan_constraint"] = out["addon_constraint"] = "not_applicable"
    else:
        for kind in ("plan", "addon"):
            constraint, ids = f"{kind}_constraint", f"{kind}_ids"
            if constraint not in out:
                raise _blank(constraint)
            if out[constraint] == "specific":
                if not out.get(ids):
                    raise _blank(f"{ids}[0]")
                seen: set[str] = set()
                for i, ident in enumerate(out[ids]):
                    if ident in seen:
                        raise ParamError(f"{ids}[{i}] : {ident} is given more than once", param=f"{ids}[{i}]")
                    seen.add(ident)
            elif ids in out:
                raise ParamError(f"{ids} : applicable only when {constraint} is specific", param=f"{ids}[0]")
    return out


def coupon_status(coupon: Doc, now: int) -> str:
    """The status as of now: an active coupon whose valid_till has passed is expired."""
    status: str = coupon.get("status", "active")
    if status == "active" and coupon.get("valid_till") is not None and now > coupon["valid_till"]:
        return "expired"
    return status


def check_redeemable(coupon: Doc, now: int, *, param: str) -> None:
    """A coupon can be redeemed when it is active, within valid_till and under max_redemptions."""
    status = coupon_status(coupon, now)
    max_r = coupon.get("max_redemptions")
    if status == "expired" or (max_r is not None and coupon.get("redemptions", 0) >= max_r):
        raise ResourceLimitExhausted(f"{param} : the coupon {coupon['id']} has expired or reached its maximum "
                                     "redemptions", param=param)
    if status != "active":
        raise InvalidState(f"The coupon {coupon['id']} is {status}", param=param)


def redeemed(coupon: Doc) -> Doc:
    """The coupon after one more redemption (stored as expired once max_redemptions is reached)."""
    out = dict(coupon)
    out["redemptions"] = out.get("redemptions", 0) + 1
    if out.get("max_redemptions") is not None and out["redemptions"] >= out["max_redemptions"]:
        out["status"] = "expired"
    return out


def applies_to_plan(coupon: Doc, plan_id: str) -> bool:
    """Whether the coupon discounts the plan's line item (each_specified_item coupons)."""
    c = coupon.get("plan_constraint")
    return c == "all" or (c == "specific" and plan_id in coupon.get("plan_ids", ()))


def applies_to_addon(coupon: Doc, addon_id: str) -> bool:
    c = coupon.get("addon_constraint")
    return c == "all" or (c == "specific" and addon_id in coupon.get("addon_ids", ()))
