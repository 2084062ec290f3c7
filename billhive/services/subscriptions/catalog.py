"""What a subscription operation reads from other services: plans, addons and coupons of the
catalog, and customers. "No such plan" (404) and "the plan is archived" (400) are raised here,
while loading; the rules about the loaded documents are in billing.py and domain/subscriptions.py.

``use`` marks a plan or addon in use (the real operation); estimates only look."""

from __future__ import annotations

from billhive.domain import catalog as catalog_rules
from billhive.domain.subscription_billing import Catalog, Settings
from billhive.domain.subscriptions import State
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


# ---- a decision's catalog: everything it may read, loaded before it decides ------------------------------

def given_addons(w: Work, given: list[dict], *, use: bool = True) -> list[tuple[dict, dict]]:
    """addons[id][i]: each row with its addon (it must exist and be active)."""
    seen: set[str] = set()
    out = []
    for i, row in enumerate(given):
        pid = f"addons[id][{i}]"
        if "id" not in row:
            raise ParamError(f"{pid} : cannot be blank", param=pid)
        if row["id"] in seen:
            raise ParamError(f"{pid} : {row['id']} is given more than once", param=pid)
        seen.add(row["id"])
        out.append((row, usable_addon(w, row["id"], pid, use=use)))
    return out


def load_catalog(w: Work, sub: dict | None = None, st: State | None = None, *, scheduled: bool = False,
                 plans: tuple[dict, ...] = (), addon_ids: tuple[str, ...] = (),
                 coupon_ids: tuple[str, ...] = ()) -> Catalog:
    """The subscription's current plan (and, with ``scheduled``, the plan of its scheduled change:
    409 if either no longer exists), every addon and coupon it, its scheduled change or its
    waiting charges refer to (those that still exist), and the given plans, addons and coupons."""
    plan_docs = {p["id"]: p for p in plans}
    addons_wanted = list(addon_ids)
    coupons_wanted = list(coupon_ids)
    if sub is not None:
        if sub["plan_id"] not in plan_docs:
            plan_docs[sub["plan_id"]] = current_plan(w, sub["plan_id"])
        addons_wanted += [a["id"] for a in sub.get("addons") or ()]
        coupons_wanted += [c["coupon_id"] for c in sub.get("coupons") or ()]
    if st is not None:
        addons_wanted += [c["addon_id"] for c in st.charges if "addon_id" in c]
        if st.scheduled:
            addons_wanted += [a["id"] for a in st.scheduled.get("addons") or ()]
            coupons_wanted += [c["coupon_id"] for c in st.scheduled.get("coupons") or ()]
            if scheduled and st.scheduled["plan_id"] not in plan_docs:
                plan_docs[st.scheduled["plan_id"]] = current_plan(w, st.scheduled["plan_id"])
    addon_docs = {a: doc for a in dict.fromkeys(addons_wanted) if (doc := find_addon(w, a)) is not None}
    coupon_docs = {c: doc for c in dict.fromkeys(coupons_wanted) if (doc := find_coupon(w, c)) is not None}
    return Catalog(plan_docs, addon_docs, coupon_docs)


def settings(w: Work) -> Settings:
    return Settings(metered_billing=bool(w.site.setting("metered_billing")),
                    prorate_changes=bool(w.site.setting("prorate_subscription_changes")))
