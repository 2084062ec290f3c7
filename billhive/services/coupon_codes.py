"""Coupon codes: create (for an existing, active coupon) and retrieve.

A code is unique per site, and distinct from every coupon id (the v1 ``coupon`` parameter takes
either). A coupon set (``coupon_set_name``) belongs to one coupon: the first code names it. Each
code can be redeemed once (``coupons.redeem``); its status lives beside the document, since the
v1 CouponCode has no status field.
"""

from __future__ import annotations

from billhive.domain import catalog as rules
from billhive.errors import InvalidState, ParamError, ResourceLimitExhausted, not_found
from billhive.services import _catalog as C
from billhive.services.coupons import COUPON_CODES, COUPONS
from billhive.work.context import Ctx, Work

_T = COUPON_CODES.t


def view(row: dict) -> dict:
    """The stored row (keyed by ``id`` = code) as the API shows it."""
    return C.document("CouponCode", "coupon_code", row)


async def create(ctx: Ctx, params: dict) -> dict:
    return await ctx.write(_create, params)


def _create(w: Work, params: dict) -> dict:
    code, coupon_id, set_name = params["code"], params["coupon_id"], params["coupon_set_name"]
    rules.check_id(code, "code")
    coupon = COUPONS.get(w.tx, w.site_id, coupon_id)
    if coupon is None:
        raise not_found("coupon", coupon_id, param="coupon_id")
    status = rules.coupon_status(coupon, w.now)
    if status == "expired":
        raise ResourceLimitExhausted(f"coupon_id : The coupon {coupon_id} has expired", param="coupon_id")
    if status != "active":
        raise InvalidState(f"The coupon {coupon_id} is {status}", param="coupon_id")
    if COUPON_CODES.exists(w.tx, w.site_id, code) or COUPONS.exists(w.tx, w.site_id, code):
        raise C.duplicate("coupon_code", code, "code")
    same_set = COUPON_CODES.find(w.tx, w.site_id, _T.c.coupon_set_name == set_name, limit=1)
    if same_set and same_set[0]["coupon_id"] != coupon_id:
        raise ParamError(f"coupon_set_name : The coupon set {set_name} belongs to the coupon "
                         f"{same_set[0]['coupon_id']}", param="coupon_set_name")
    row = {"id": code, "code": code, "coupon_id": coupon_id, "coupon_set_name": set_name}
    C.insert_new(COUPON_CODES, w, row, param="code", columns={"status": "enabled"})
    return {"coupon_code": view(row)}


async def retrieve(ctx: Ctx, code: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        return {"coupon_code": view(COUPON_CODES.require(w.tx, w.site_id, code))}
    return await ctx.read(run)
