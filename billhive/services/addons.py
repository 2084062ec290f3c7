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

from billhive.domain.catalog import check_addon_update, check_id, normalize_addon
from billhive.errors import InvalidState, ParamError, not_found
from billhive.services import _catalog as C
from billhive.services.context import Ctx, Work
from billhive.store import resources
from billhive.store import schema as S
from billhive.store.docs import DocTable
from billhive.store.lists import ListRequest, fetch_page

# in_use is not a document field: every update below passes it through ``columns``.
ADDONS = resources.ADDONS
_DEFAULTS = {"type": "on_off", "price": 0}  # where the spec declares no default


# ---- for other services -----------------------------------------------------------------------

def get_addon(w: Work, addon_id: str, *, param: str | None = "addon_id", for_update: bool = False) -> dict:
    """The addon as the API shows it, whatever its status; 404 resource_not_found naming ``param``."""
    return ADDONS.require(w.tx, w.site_id, addon_id, for_update=for_update, param=param)


def use_addon(w: Work, addon_id: str, *, param: str = "addon_id") -> dict:
    """The addon, for a subscription or a charge: it must exist (404) and be active (400
    param_wrong_value otherwise). Marks the addon as used, which restricts later updates."""
    found = C.load(w, ADDONS, addon_id, lock="share")
    if found is None:
        raise not_found("addon", addon_id, param=param)
    addon, in_use = found
    if addon["status"] != "active":
        raise ParamError(f"{param} : The addon {addon_id} is {addon['status']} and cannot be used", param=param)
    if not in_use:
        C.mark_in_use(w, ADDONS, addon_id)
    return addon


# ---- API operations -----------------------------------------------------------------------------

async def create(ctx: Ctx, params: dict) -> dict:
    return await ctx.write(_create, params)


def _create(w: Work, params: dict) -> dict:
    check_id(params["id"], "id")
    values = {**C.spec_defaults("Addon"), **_DEFAULTS, **C.fields_of("Addon", params), "status": "active"}
    addon = C.document("Addon", "addon", normalize_addon(values, params.keys()))
    if ADDONS.exists(w.tx, w.site_id, addon["id"]):
        raise C.duplicate("addon", addon["id"], "id")
    C.insert_new(ADDONS, w, addon, param="id")
    return {"addon": addon}


async def update(ctx: Ctx, addon_id: str, params: dict) -> dict:
    return await ctx.write(_update, addon_id, params)


def _update(w: Work, addon_id: str, params: dict) -> dict:
    found = C.load(w, ADDONS, addon_id, lock="update")
    if found is None:
        raise not_found("addon", addon_id)
    addon, in_use = found
    changes = C.fields_of("Addon", params)
    check_addon_update(addon, changes, in_use=in_use)
    new = C.document("Addon", "addon", normalize_addon({**addon, **changes}, changes.keys()))
    ADDONS.update(w.tx, w.site_id, new, w.now, columns={"in_use": int(in_use)})
    return {"addon": new}


async def retrieve(ctx: Ctx, addon_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        return {"addon": ADDONS.require(w.tx, w.site_id, addon_id)}
    return await ctx.read(run)


async def list_addons(ctx: Ctx, params: dict) -> dict:
    req: ListRequest = params["_list"]

    def run(w: Work) -> dict:
        return fetch_page(w.tx, ADDONS, w.site_id, req).response("addon")
    return await ctx.read(run)


async def delete(ctx: Ctx, addon_id: str, params: dict) -> dict:
    return await ctx.write(_delete, addon_id)


def _delete(w: Work, addon_id: str) -> dict:
    found = C.load(w, ADDONS, addon_id, lock="update")
    if found is None:
        raise not_found("addon", addon_id)
    addon, in_use = found
    if addon["status"] != "active":
        raise InvalidState(f"The addon {addon_id} is already {addon['status']}")
    archived = C.document("Addon", "addon", {**addon, "status": "archived", "archived_at": w.now})
    if not ADDONS.update(w.tx, w.site_id, archived, w.now, expect={"status": "active"},
                         columns={"in_use": int(in_use)}):
        raise InvalidState(f"The addon {addon_id} was archived by another request")
    return {"addon": archived}
