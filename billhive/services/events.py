"""Events: recorded in the same transaction as the change they describe (the outbox), listed
and retrieved per the spec, and re-sent on request. Delivery (webhooks, emails: billhive.delivery)
reads the rows written here."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select

from billhive import webhook_endpoints
from billhive.delivery import webhooks
from billhive.errors import ParamError
from billhive.services.context import Ctx, Work
from billhive.store import schema as S
from billhive.store.db import Q
from billhive.store.docs import DocTable
from billhive.store.lists import Filter, ListRequest, fetch_page
from billhive.util.ids import event_id

EVENTS = DocTable(S.events, "event")
_WEBHOOK_DELIVERY = Q(insert(S.webhook_deliveries).values(
    {c: bindparam(c) for c in ("site_id", "event_id", "endpoint_id", "status", "attempts", "round_start",
                               "next_attempt_at", "created_at", "updated_at")}))
_EMAIL_DELIVERY = Q(insert(S.email_deliveries).values(
    {c: bindparam(c) for c in ("site_id", "event_id", "template", "recipient", "status", "attempts",
                               "round_start", "next_attempt_at", "created_at", "updated_at")}))


def _email_recipient(w: Work, content: dict) -> str | None:
    """The customer's email: from the content, else (invoice_generated carries only the
    invoice) from the customer the content's resources point to."""
    customer = content.get("customer")
    if isinstance(customer, dict):
        return customer.get("email")
    for resource in content.values():
        if isinstance(resource, dict) and resource.get("customer_id"):
            c = S.customers
            return w.tx.scalar(select(c.c.email).where(c.c.site_id == w.site_id,
                                                       c.c.id == resource["customer_id"]))
    return None


def record(w: Work, event_type: str, content: dict) -> dict:
    o = w.origin
    now = w.now
    eid = event_id()
    endpoints = webhook_endpoints.cached(w.tx, w.site_id, w.site.config_version)
    wanted = [e for e in endpoints if e.wants(event_type)]
    if o.skip_actions or o.skip_webhooks:
        webhook_status = "skipped"
        per_endpoint = [{"id": e.id, "webhook_status": "skipped"} for e in wanted]
    elif wanted:
        webhook_status = "scheduled"
        per_endpoint = [{"id": e.id, "webhook_status": "scheduled"} for e in wanted]
    else:
        webhook_status = "not_configured"
        per_endpoint = []
    recipient = None
    if o.skip_actions or o.skip_emails:
        email_status = "skipped"
    elif (w.site.setting("email_enabled") and event_type in w.site.setting("email_events")
          and (recipient := _email_recipient(w, content))):
        email_status = "scheduled"
    else:
        email_status = "not_applicable"
    event = {
        "id": eid,
        "occurred_at": now,
        "source": o.source,
        "object": "event",
        "api_version": "v1",
        "event_type": event_type,
        "webhook_status": webhook_status,
        "webhooks": per_endpoint,
        "content": content,
    }
    if o.user:
        event["user"] = o.user
    origin = o.origin_json
    if origin:
        event["origin"] = origin  # billhive extension: the request-origin headers
    EVENTS.insert(w.tx, w.site_id, event, now, columns={"email_status": email_status})
    if webhook_status == "scheduled":
        for e in wanted:
            w.tx.execute(_WEBHOOK_DELIVERY, dict(
                site_id=w.site_id, event_id=eid, endpoint_id=e.id, status="scheduled", attempts=0,
                round_start=0, next_attempt_at=now, created_at=now, updated_at=now))
    if email_status == "scheduled":
        w.tx.execute(_EMAIL_DELIVERY, dict(
            site_id=w.site_id, event_id=eid, template=event_type, recipient=recipient, status="scheduled",
            attempts=0, round_start=0, next_attempt_at=now, created_at=now, updated_at=now))
    return event


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
        return {"event": webhooks.requeue(w, event)}

    return await ctx.write(run)
