"""Addons: create, update, retrieve, list, delete (archive), and the lookups other services use.

- Documents hold exactly the spec's Addon fields plus ``object``; defaults come from the spec
  (charge_type recurring, enabled_in_portal, proration_type site_default, taxable) and, where
  the spec has none, ``type = on_off`` and ``price = 0`` *(choice)*.
- recurring addons need a period_unit (period defaults to 1); non_recurring ones have
  ``period_unit = not_applicable`` and no period; ``unit`` is for quantity addons only.
- delete archives; archived addons stay retrievable and listed and cannot be updated (409).
- Once used (``use_addon``), only name, invoice_name and price may change (update_an_addon).
"""

from __future__ import annotations

from billhive.domain.catalog import check_addon_update, normalize_addon
from billhive.services import _catalog as C
from billhive.store import resources
from billhive.work.context import Ctx, Work

ADDONS = resources.ADDONS
_DEFAULTS = {"type": "on_off", "price": 0}  # where the spec declares no default
_ITEMS = C.ArchivableItems(ADDONS, "addon", "Addon", _DEFAULTS, normalize_addon, check_addon_update)


# ---- for other services -----------------------------------------------------------------------

def get_addon(w: Work, addon_id: str, *, param: str | None = "addon_id", for_update: bool = False) -> dict:
    """The addon as the API shows it, whatever its status; 404 resource_not_found naming ``param``."""
    return _ITEMS.get(w, addon_id, param=param, for_update=for_update)


def use_addon(w: Work, addon_id: str, *, param: str = "addon_id") -> dict:
    """The addon, for a subscription or a charge: it must exist (404) and be active (400
    param_wrong_value otherwise). Marks the addon as used, which restricts later updates."""
    return _ITEMS.use(w, addon_id, param=param)


# ---- API operations -----------------------------------------------------------------------------

async def create(ctx: Ctx, params: dict) -> dict:
    return await ctx.write(_ITEMS.create, params)


async def update(ctx: Ctx, addon_id: str, params: dict) -> dict:
    return await ctx.write(_ITEMS.update, addon_id, params)


async def retrieve(ctx: Ctx, addon_id: str, params: dict) -> dict:
    return await ctx.read(_ITEMS.retrieve, addon_id)


async def list_addons(ctx: Ctx, params: dict) -> dict:
    return await ctx.read(_ITEMS.list, params["_list"])


async def delete(ctx: Ctx, addon_id: str, params: dict) -> dict:
    return await ctx.write(_ITEMS.delete, addon_id)
