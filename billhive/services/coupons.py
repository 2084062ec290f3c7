"""Coupons: create, retrieve, list; and redemption, which subscriptions call.

- Status: stored ``active`` until ``max_redemptions`` is reached (then stored ``expired``). A
  coupon whose ``valid_till`` has passed is *shown* as ``expired``: computed against the site
  clock on every read and list (and by the ``status`` list filter), so time travel needs no job.
- Coupon ids and coupon codes share one namespace per site, because v1's subscription ``coupon``
  parameter takes either *(choice)*.
- No catalog events exist in v1, so none are recorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, false, literal_column, true

from billhive.domain import catalog as rules
from billhive.errors import ParamError, ResourceLimitExhausted, not_found
from billhive.services import _catalog as C
from billhive.services import addons as addons_service
from billhive.services import plans as plans_service
from billhive.store import resources
from billhive.store import schema as S
from billhive.store.lists import Filter, ListRequest, fetch_page
from billhive.work.context import Ctx, Work

COUPONS = resources.COUPONS
# The code is the row id; the code's status (enabled | redeemed | archived) is a column only,
# since v1's CouponCode has no status field.
COUPON_CODES = resources.COUPON_CODES


def view(coupon: dict, now: int) -> dict:
    """The coupon as the API shows it at ``now``."""
    status = rules.coupon_status(coupon, now)
    return coupon if status == coupon.get("status") else {**coupon, "status": status}


# ---- for other services -----------------------------------------------------------------------

def get_coupon(w: Work, coupon_id: str, *, param: str | None = "coupon_id", for_update: bool = False) -> dict:
    """The coupon as the API shows it now; 404 resource_not_found naming ``param``."""
    return view(COUPONS.require(w.tx, w.site_id, coupon_id, for_update=for_update, param=param), w.now)


def on_invoice(w: Work, inv: dict) -> dict[str, dict]:
    """The catalog's coupons behind an invoice's coupon discounts, by id (deleted ones left out)."""
    ids = {d["entity_id"] for d in inv.get("discounts", ()) if d.get("type") == "coupon" and d.get("entity_id")}
    found = (COUPONS.get(w.tx, w.site_id, i) for i in sorted(ids))
    return {c["id"]: c for c in found if c is not None}


def resolve(w: Work, value: str, *, param: str = "coupon") -> tuple[dict, str | None]:
    """A v1 ``coupon`` parameter names a coupon id or a coupon code: (coupon, code or None)."""
    coupon = COUPONS.get(w.tx, w.site_id, value)
    if coupon is not None:
        return view(coupon, w.now), None
    code = COUPON_CODES.get(w.tx, w.site_id, value)
    if code is None:
        raise not_found("coupon", value, param=param)
    return get_coupon(w, code["coupon_id"], param=param), value


def redeem(w: Work, coupon_id: str, coupon_code: str | None = None, *, param: str = "coupon_id") -> dict:
    """Count one redemption of the coupon (and mark the code redeemed), in the caller's transaction.

    Raises 404 resource_not_found (unknown coupon or code), 400 resource_limit_exhausted (expired:
    valid_till passed or max_redemptions reached; code already redeemed), 400 param_wrong_value
    (code of another coupon), 409 invalid_state_for_request (archived coupon). Returns the coupon
    as the API now shows it (``redemptions`` incremented; ``expired`` when it hit max_redemptions).
    """
    coupon = COUPONS.require(w.tx, w.site_id, coupon_id, for_update=True, param=param)
    rules.check_redeemable(coupon, w.now, param=param)
    if coupon_code is not None:
        code = COUPON_CODES.get(w.tx, w.site_id, coupon_code)
        if code is None:
            raise not_found("coupon_code", coupon_code, param=param)
        if code["coupon_id"] != coupon_id:
            raise ParamError(f"{param} : The coupon code {coupon_code} does not belong to the coupon {coupon_id}",
                             param=param)
        if not COUPON_CODES.update(w.tx, w.site_id, code, w.now, expect={"status": "enabled"},
                                   columns={"status": "redeemed"}):
            raise ResourceLimitExhausted(f"{param} : The coupon code {coupon_code} has already been redeemed",
                                         param=param)
    after = rules.redeemed(coupon)
    COUPONS.update(w.tx, w.site_id, after, w.now)
    return view(after, w.now)


# ---- API operations -----------------------------------------------------------------------------

async def create(ctx: Ctx, params: dict) -> dict:
    return await ctx.write(_create, params)


def _create(w: Work, params: dict) -> dict:
    rules.check_id(params["id"], "id")
    values = {**C.spec_defaults("Coupon"), **C.fields_of("Coupon", params),
              "status": "active", "redemptions": 0, "created_at": w.now}
    coupon = C.document("Coupon", "coupon", rules.normalize_coupon(values, now=w.now))
    for i, plan_id in enumerate(coupon.get("plan_ids", ())):
        plan = plans_service.get_plan(w, plan_id, param=f"plan_ids[{i}]")
        if plan["status"] != "active":
            raise ParamError(f"plan_ids[{i}] : The plan {plan_id} is {plan['status']}", param=f"plan_ids[{i}]")
    for i, addon_id in enumerate(coupon.get("addon_ids", ())):
        addon = addons_service.get_addon(w, addon_id, param=f"addon_ids[{i}]")
        if addon["status"] != "active":
            raise ParamError(f"addon_ids[{i}] : The addon {addon_id} is {addon['status']}",
                             param=f"addon_ids[{i}]")
    if COUPONS.exists(w.tx, w.site_id, coupon["id"]) or COUPON_CODES.exists(w.tx, w.site_id, coupon["id"]):
        raise C.duplicate("coupon", coupon["id"], "id")
    C.insert_new(COUPONS, w, coupon, param="id")
    return {"coupon": coupon}


async def retrieve(ctx: Ctx, coupon_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        return {"coupon": get_coupon(w, coupon_id, param=None)}
    return await ctx.read(run)


async def list_coupons(ctx: Ctx, params: dict) -> dict:
    req: ListRequest = params["_list"]
    status_filters = [f for f in req.filters if f.field == "status"]
    rest = ListRequest(req.limit, req.offset, tuple(f for f in req.filters if f.field != "status"), req.sort)

    def run(w: Work) -> dict:
        where = [_status_condition(f, w.now) for f in status_filters]
        page = fetch_page(w.tx, COUPONS, w.site_id, rest, where=where)
        page.items = [view(c, w.now) for c in page.items]
        return page.response("coupon")
    return await ctx.read(run)


def _status_condition(f: Filter, now: int) -> Any:
    """A ``status[...]`` filter on the status as shown at ``now`` (see ``view``)."""
    t = S.coupons
    passed = and_(t.c.status == "active", t.c.valid_till.is_not(None), t.c.valid_till < now)
    status = case((passed, literal_column("'expired'")), else_=t.c.status)
    op, v = f.op, f.value
    if op == "is":
        return status == v
    if op == "is_not":
        return status != v
    if op == "in":
        return status.in_(v)
    if op == "not_in":
        return status.not_in(v)
    if op == "starts_with":
        escaped = v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return status.like(escaped + "%", escape="\\")
    if op == "is_present":
        return true() if v else false()  # every coupon has a status
    raise AssertionError(op)  # pragma: no cover - parse_filter admits only string operators here
