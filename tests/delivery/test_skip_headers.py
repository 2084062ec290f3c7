"""chargebee-event-actions / -webhook / -email: all-disabled on a request -> its events are
recorded, but no webhook and/or no email goes out for them.

The requests go through billhive's real API endpoint (header parsing, keys, Origin, the
service's transaction) to a test-only operation that records one event, because no API
operation in this branch records events yet. ``no_deliveries`` is the reusable check; the
same checks on a real ``collect`` request use it the same way.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from billhive.http.app import ApiEndpoint
from billhive.http.routes import unlisted
from billhive.work.context import Ctx, Work
from tests.support.delivery import (
    CUSTOMER,
    add_endpoint,
    email_deliveries,
    no_deliveries,
    wait_until,
)


async def _record_payment(ctx: Ctx, params: dict) -> dict:
    def run(w: Work) -> dict:
        return {"event": w.emit("payment_succeeded", {"customer": CUSTOMER})}
    return await ctx.write(run)


_ROUTE = unlisted("test_record_payment", "POST", "/test_record_payment", _record_payment, response="event")


def post(site, headers: dict[str, str]) -> dict:
    """POST through billhive's API endpoint (in-process ASGI) with these headers."""
    endpoint = ApiEndpoint(site.app, [_ROUTE])

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint), base_url="http://test") as c:
            return await c.post("/api/v1/test_record_payment", auth=(site.key, ""),
                                headers={"Host": f"{site.name}.localhost", **headers})
    r = asyncio.run(go())
    assert r.status_code == 200, r.text
    return r.json()["event"]


@pytest.fixture
def busy_site(tm_site, receiver, smtp):
    """A site where every event both fires a webhook and (payment_succeeded) sends an email."""
    add_endpoint(tm_site, receiver.url)
    tm_site.setting(**smtp.settings())
    return tm_site


def test_without_headers_both_go_out(busy_site, receiver, smtp):
    ev = post(busy_site, {})
    assert ev["webhook_status"] == "scheduled"
    wait_until(lambda: receiver.for_event(ev["id"]) and smtp.for_event(ev["id"]))


def test_event_actions_all_disabled_skips_webhooks_and_emails(busy_site, receiver, smtp):
    with no_deliveries(busy_site, webhook=True, email=True, receiver=receiver, smtp=smtp) as events:
        ev = post(busy_site, {"chargebee-event-actions": "all-disabled"})
    assert [e["id"] for e in events] == [ev["id"]]
    assert ev["webhook_status"] == "skipped" and ev["webhooks"][0]["webhook_status"] == "skipped"
    listed = busy_site.api.get("/events", {"webhook_status": "skipped"})["list"]
    assert [e["event"]["id"] for e in listed] == [ev["id"]]  # still recorded and listable


def test_event_webhook_all_disabled_skips_only_webhooks(busy_site, receiver, smtp):
    with no_deliveries(busy_site, webhook=True, email=False, receiver=receiver) as events:
        ev = post(busy_site, {"chargebee-event-webhook": "all-disabled"})
    assert [e["id"] for e in events] == [ev["id"]]
    wait_until(lambda: email_deliveries(busy_site, ev["id"])[0]["status"] == "sent", what="the email")
    assert len(smtp.for_event(ev["id"])) == 1
    assert receiver.for_event(ev["id"]) == []


def test_event_email_all_disabled_skips_only_emails(busy_site, receiver, smtp):
    with no_deliveries(busy_site, webhook=False, email=True, smtp=smtp) as events:
        ev = post(busy_site, {"chargebee-event-email": "all-disabled"})
    assert [e["id"] for e in events] == [ev["id"]]
    assert ev["webhook_status"] == "scheduled"
    wait_until(lambda: receiver.for_event(ev["id"]), what="the webhook")
    assert smtp.for_event(ev["id"]) == []


def test_no_deliveries_fails_when_something_is_scheduled(busy_site):
    with pytest.raises(AssertionError):
        with no_deliveries(busy_site):
            post(busy_site, {"chargebee-event-webhook": "all-disabled"})  # the email still goes out
    with pytest.raises(AssertionError, match="no events"):
        with no_deliveries(busy_site):
            pass
