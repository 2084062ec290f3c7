"""What a subscription operation reads from other services: plans, addons and coupons of the
catalog, and customers. "No such plan" (404) and "the plan is archived" (400) are raised here,
while loading; the rules about the loaded documents are in billing.py and domain/subscriptions.py.

``use`` marks a plan or addon in use (the real operation); estimates only look."""

from __future__ import annotations

from billhive.domain import catalog as catalog_rules
from billhive.errors import InvalidState, ParamError
from billhive.services import addons, coupons, customers, plans
from billhive.store.resources import ADDONS, COUPONS, PLANS
from billhive.work.context import Work


def usable_plan(w: Work, plan_id: str, param: str, *, use: bool = True) -> dict:
    """A plan for a new subscription or a change: it must exist and be active."""
    if use:
        return plans.use_plan(w, plan_id, param=param)
    plan = plans.get_plan(w, plan_id, param=param)
    if plan["status"] != "active":
        raise ParamError(f"{param} : The plan {plan_id} is {plan['status']} and cannot be used", param=param)
    return plan


def current_plan(w: Work, plan_id: str) -> dict:
    """The subscription's current plan, whatever its status now."""
    plan = PLANS.get(w.tx, w.site_id, plan_id)
    if plan is None:
        raise InvalidState(f"The plan {plan_id} of this subscription no longer exists")
    return plan


def usable_addon(w: Work, addon_id: str, param: str, *, use: bool = True) -> dict:
    if use:
        return addons.use_addon(w, addon_id, param=param)
    addon = addons.get_addon(w, addon_id, param=param)
    if addon["status"] != "active":
        raise ParamError(f"{param} : The addon {addon_id} is {addon['status']} and cannot be used", param=param)
    return addon


def find_addon(w: Work, addon_id: str) -> dict | None:
    return ADDONS.get(w.tx, w.site_id, addon_id)


def redeemable_coupon(w: Work, value: str, param: str) -> tuple[dict, str | None]:
    """A ``coupon`` parameter names a coupon id or a coupon code: (coupon, code or None), checked
    redeemable (404 / 400 resource_limit_exhausted / 409) — redeemed only when committing."""
    coupon, code = coupons.resolve(w, value, param=param)
    catalog_rules.check_redeemable(coupon, w.now, param=param)
    return coupon, code


def redeem_coupon(w: Work, coupon: dict, code: str | None, param: str) -> None:
    coupons.redeem(w, coupon["id"], code, param=param)


def find_coupon(w: Work, coupon_id: str) -> dict | None:
    return COUPONS.get(w.tx, w.site_id, coupon_id)


def get_customer(w: Work, customer_id: str, *, for_update: bool = False, param: str | None = None) -> dict:
    return customers.get_customer(w, customer_id, for_update=for_update, param=param)
