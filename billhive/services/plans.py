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

from billhive.domain.catalog import check_plan_update, normalize_plan
from billhive.services import _catalog as C
from billhive.store import resources
from billhive.work.context import Ctx, Work

PLANS = resources.PLANS
_DEFAULTS = {"charge_model": "flat_fee", "price": 0}  # where the spec declares no default
_ITEMS = C.ArchivableItems(PLANS, "plan", "Plan", _DEFAULTS, normalize_plan, check_plan_update)


# ---- for other services -----------------------------------------------------------------------

def get_plan(w: Work, plan_id: str, *, param: str | None = "plan_id", for_update: bool = False) -> dict:
    """The plan as the API shows it, whatever its status; 404 resource_not_found naming ``param``."""
    return _ITEMS.get(w, plan_id, param=param, for_update=for_update)


def use_plan(w: Work, plan_id: str, *, param: str = "plan_id") -> dict:
    """The plan, for a subscription or a charge: it must exist (404) and be active (400
    param_wrong_value otherwise). Marks the plan as used, which restricts later updates."""
    return _ITEMS.use(w, plan_id, param=param)


# ---- API operations -----------------------------------------------------------------------------

async def create(ctx: Ctx, params: dict) -> dict:
    return await ctx.write(_ITEMS.create, params)


async def update(ctx: Ctx, plan_id: str, params: dict) -> dict:
    return await ctx.write(_ITEMS.update, plan_id, params)


async def retrieve(ctx: Ctx, plan_id: str, params: dict) -> dict:
    return await ctx.read(_ITEMS.retrieve, plan_id)


async def list_plans(ctx: Ctx, params: dict) -> dict:
    return await ctx.read(_ITEMS.list, params["_list"])


async def delete(ctx: Ctx, plan_id: str, params: dict) -> dict:
    return await ctx.write(_ITEMS.delete, plan_id)
