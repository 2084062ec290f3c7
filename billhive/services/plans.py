"""Plans: create, update, retrieve, list, delete (archive), and the lookups other services use.

- Documents hold exactly the spec's Plan fields plus ``object``; defaults come from the spec
  (period 1, period_unit month, free_quantity 0, enabled_in_* true, taxable true) and, where the
  spec has none, ``charge_model = flat_fee`` and ``price = 0`` *(choice)*.
- delete archives (``status = archived``, ``archived_at``); archived plans stay retrievable and
  listed, cannot be updated (409) and cannot be used for new subscriptions (``use_plan``).
- Once a subscription or invoice uses a plan (``use_plan``), only the fields Chargebee lists for
  update_a_plan may change. No catalog events exist in v1, so none are recorded.
"""

from __future__ import annotations

from billhive.domain.catalog import check_id, check_plan_update, normalize_plan
from billhive.errors import InvalidState, ParamError, not_found
from billhive.services import _catalog as C
from billhive.services.context import Ctx, Work
from billhive.store import resources
from billhive.store import schema as S
from billhive.store.docs import DocTable
from billhive.store.lists import ListRequest, fetch_page

# in_use is not a document field: every update below passes it through ``columns``.
PLANS = resources.PLANS
_DEFAULTS = {"charge_model": "flat_fee", "price": 0}  # where the spec declares no default


# ---- for other services -----------------------------------------------------------------------

def get_plan(w: Work, plan_id: str, *, param: str | None = "plan_id", for_update: bool = False) -> dict:
    """The plan as the API shows it, whatever its status; 404 resource_not_found naming ``param``."""
    return PLANS.require(w.tx, w.site_id, plan_id, for_update=for_update, param=param)


def use_plan(w: Work, plan_id: str, *, param: str = "plan_id") -> dict:
    """The plan, for a new subscription or a plan change: it must exist (404) and be active
    (400 param_wrong_value otherwise). Marks the plan as used, which restricts later updates."""
    found = C.load(w, PLANS, plan_id, lock="share")
    if found is None:
        raise not_found("plan", plan_id, param=param)
    plan, in_use = found
    if plan["status"] != "active":
        raise ParamError(f"{param} : The plan {plan_id} is {plan['status']} and cannot be used", param=param)
    if not in_use:
        C.mark_in_use(w, PLANS, plan_id)
    return plan


# ---- API operations -----------------------------------------------------------------------------

async def create(ctx: Ctx, params: dict) -> dict:
    return await ctx.write(_create, params)


def _create(w: Work, params: dict) -> dict:
    check_id(params["id"], "id")
    values = {**C.spec_defaults("Plan"), **_DEFAULTS, **C.fields_of("Plan", params), "status": "active"}
    plan = C.document("Plan", "plan", normalize_plan(values, params.keys()))
    if PLANS.exists(w.tx, w.site_id, plan["id"]):
        raise C.duplicate("plan", plan["id"], "id")
    C.insert_new(PLANS, w, plan, param="id")
    return {"plan": plan}


async def update(ctx: Ctx, plan_id: str, params: dict) -> dict:
    return await ctx.write(_update, plan_id, params)


def _update(w: Work, plan_id: str, params: dict) -> dict:
    found = C.load(w, PLANS, plan_id, lock="update")
    if found is None:
        raise not_found("plan", plan_id)
    plan, in_use = found
    changes = C.fields_of("Plan", params)
    check_plan_update(plan, changes, in_use=in_use)
    new = C.document("Plan", "plan", normalize_plan({**plan, **changes}, changes.keys()))
    PLANS.update(w.tx, w.site_id, new, w.now, columns={"in_use": int(in_use)})
    return {"plan": new}


async def retrieve(ctx: Ctx, plan_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        return {"plan": PLANS.require(w.tx, w.site_id, plan_id)}
    return await ctx.read(run)


async def list_plans(ctx: Ctx, params: dict) -> dict:
    req: ListRequest = params["_list"]

    def run(w: Work) -> dict:
        return fetch_page(w.tx, PLANS, w.site_id, req).response("plan")
    return await ctx.read(run)


async def delete(ctx: Ctx, plan_id: str, params: dict) -> dict:
    return await ctx.write(_delete, plan_id)


def _delete(w: Work, plan_id: str) -> dict:
    found = C.load(w, PLANS, plan_id, lock="update")
    if found is None:
        raise not_found("plan", plan_id)
    plan, in_use = found
    if plan["status"] != "active":
        raise InvalidState(f"The plan {plan_id} is already {plan['status']}")
    archived = C.document("Plan", "plan", {**plan, "status": "archived", "archived_at": w.now})
    if not PLANS.update(w.tx, w.site_id, archived, w.now, expect={"status": "active"},
                        columns={"in_use": int(in_use)}):
        raise InvalidState(f"The plan {plan_id} was archived by another request")
    return {"plan": archived}
