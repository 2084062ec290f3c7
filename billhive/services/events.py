"""Events: listed and retrieved per the spec, and re-sent on request. They are recorded in the
same transaction as the change they describe by the unit of work (``Work.emit``, into
billhive/work/outbox.py); delivery (webhooks, emails: billhive.delivery) reads those rows."""

from __future__ import annotations

from billhive.errors import ParamError
from billhive.store.lists import Filter, ListRequest, fetch_page
from billhive.work import outbox
from billhive.work.context import Ctx, Work
from billhive.work.outbox import EVENTS


async def list_events(ctx: Ctx, params: dict) -> dict:
    req: ListRequest = params["_list"]
    filters = list(req.filters)
    if "start_time" in params:
        filters.append(Filter("occurred_at", "gte", params["start_time"]))
    if "end_time" in params:
        filters.append(Filter("occurred_at", "lte", params["end_time"]))
    if "start_time" in params and "end_time" in params and params["start_time"] > params["end_time"]:
        raise ParamError("end_time : must be after start_time", param="end_time")
    if "webhook_status" in params:
        filters.append(Filter("webhook_status", "is", params["webhook_status"]))
    if "event_type" in params:
        filters.append(Filter("event_type", "is", params["event_type"]))
    req = ListRequest(req.limit, req.offset, tuple(filters), req.sort)

    def run(w: Work) -> dict:
        page = fetch_page(w.tx, EVENTS, w.site_id, req, default_sort=("occurred_at", True), raw=True)
        return page.response("event")

    return await ctx.read(run)


async def retrieve(ctx: Ctx, event_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        return {"event": EVENTS.require(w.tx, w.site_id, event_id)}

    return await ctx.read(run)


async def resend(ctx: Ctx, event_id: str, params: dict) -> dict:
    """billhive extension: deliver the event again to every enabled endpoint that wants it."""
    def run(w: Work) -> dict:
        event = EVENTS.require(w.tx, w.site_id, event_id, for_update=True)
        return {"event": outbox.requeue(w.tx, w.site_id, event, w.now)}

    return await ctx.write(run)
