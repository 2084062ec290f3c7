"""Comments: /api/v1/comments — notes attached to a customer, subscription, transaction, plan,
addon or order of the site.

Comments made through the API are ``type: user``, ``added_by`` the API key's name unless the
request names someone. billhive writes no ``system`` comments yet; if it ever does, they cannot
be deleted (as in Chargebee).
"""

from __future__ import annotations

from billhive.errors import InvalidRequest, not_found
from billhive.store.docs import DocTable
from billhive.store.lists import Filter, ListRequest, fetch_page
from billhive.store.resources import (
    ADDONS,
    COMMENTS,
    CUSTOMERS,
    ORDERS,
    PLANS,
    SUBSCRIPTIONS,
    TRANSACTIONS,
)
from billhive.util.ids import random_id
from billhive.work.context import Ctx, Work

# entity_type -> where such entities live. business_entity has no table: billhive sites have no
# business entities, so a comment on one is refused like one on any entity that does not exist.
ENTITY_TABLES: dict[str, DocTable] = {
    "customer": CUSTOMERS,
    "subscription": SUBSCRIPTIONS,
    "transaction": TRANSACTIONS,
    "plan": PLANS,
    "addon": ADDONS,
    "order": ORDERS,
}


def _require_entity(w: Work, entity_type: str, entity_id: str) -> None:
    table = ENTITY_TABLES.get(entity_type)
    if table is None or not table.exists(w.tx, w.site_id, entity_id):
        raise not_found(entity_type, entity_id, param="entity_id")


async def create(ctx: Ctx, params: dict) -> dict:
    def run(w: Work) -> dict:
        _require_entity(w, params["entity_type"], params["entity_id"])
        comment = {
            "id": random_id("cmt_", 20),
            "entity_type": params["entity_type"],
            "entity_id": params["entity_id"],
            "notes": params["notes"],
            "created_at": w.now,
            "type": "user",
            "object": "comment",
        }
        added_by = params.get("added_by") or w.origin.user
        if added_by:
            comment["added_by"] = added_by
        COMMENTS.insert(w.tx, w.site_id, comment, w.now)
        return {"comment": comment}

    return await ctx.write(run)


async def retrieve(ctx: Ctx, comment_id: str, params: dict) -> dict:
    return await ctx.read(lambda w: {"comment": COMMENTS.require(w.tx, w.site_id, comment_id)})


async def list_comments(ctx: Ctx, params: dict) -> dict:
    """Newest first; ``entity_type`` and ``entity_id`` filter (each alone or both)."""
    req: ListRequest = params["_list"]
    filters = list(req.filters)
    for name in ("entity_type", "entity_id"):
        if name in params:
            filters.append(Filter(name, "is", params[name]))
    req = ListRequest(req.limit, req.offset, tuple(filters), req.sort)

    def run(w: Work) -> dict:
        return fetch_page(w.tx, COMMENTS, w.site_id, req).response("comment")

    return await ctx.read(run)


async def delete(ctx: Ctx, comment_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        comment = COMMENTS.require(w.tx, w.site_id, comment_id, for_update=True)
        if comment.get("type") == "system":
            raise InvalidRequest("System comments cannot be deleted")
        if not COMMENTS.delete(w.tx, w.site_id, comment_id):
            raise not_found("comment", comment_id)  # deleted by a concurrent request
        return {"comment": comment}

    return await ctx.write(run)
