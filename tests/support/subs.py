"""Helpers for subscription tests: a site on a frozen clock, catalog items through the API, and
travelling in time."""

from __future__ import annotations

import datetime as dt

from tests.support import factories as F
from tests.support import timemachine
from tests.support.server import TestSite

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86400


def ts(y: int, m: int, d: int, h: int = 0) -> int:
    return int(dt.datetime(y, m, d, h, tzinfo=dt.UTC).timestamp())


def start(site: TestSite, at: int = GENESIS) -> TestSite:
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": at})
    return site


def travel(site: TestSite, to: int) -> None:
    timemachine.travel(site.api, to)


def plan(site: TestSite, id: str = "basic", price: int = 1000, **extra) -> dict:
    return site.api.post("/plans", {"id": id, "name": id.capitalize(), "price": price, **extra})["plan"]


def addon(site: TestSite, id: str, price: int, **extra) -> dict:
    body = {"id": id, "name": id.capitalize(), "price": price, "type": "on_off", "charge_type": "recurring",
            "period": 1, "period_unit": "month", **extra}
    if body["charge_type"] == "non_recurring":
        body.pop("period")
        body["period_unit"] = "not_applicable"
    return site.api.post("/addons", body)["addon"]


def coupon(site: TestSite, id: str, **body) -> dict:
    values = {"name": id, "discount_type": "percentage", "apply_on": "invoice_amount", "duration_type": "forever",
              **body}
    if values["discount_type"] == "percentage":
        values.setdefault("discount_percentage", 10)
    return site.api.post("/coupons", {"id": id, **values})["coupon"]


def subscribe(site: TestSite, customer_id: str, plan_id: str = "basic", **params) -> dict:
    """POST /customers/{id}/subscriptions; returns the whole response body."""
    return site.api.post(f"/customers/{customer_id}/subscriptions", {"plan_id": plan_id, **params}).body


def types(site: TestSite) -> list[str]:
    return [e["event_type"] for e in F.events_of(site)]


def events(site: TestSite, event_type: str) -> list[dict]:
    return [e for e in F.events_of(site) if e["event_type"] == event_type]


def invoices(site: TestSite, subscription_id: str) -> list[dict]:
    """The subscription's invoices, oldest first."""
    body = site.api.get(f"/subscriptions/{subscription_id}/invoices", {"limit": 100}).body
    return [i["invoice"] for i in reversed(body["list"])]


def subscription_id(site: TestSite) -> str:
    """One subscription on the site (for id-keyed tests such as tenant isolation): a plan and a
    customer with a card, through the API where it exists."""
    if site.api.get("/plans/iso-plan", expect=None).status == 404:
        site.api.post("/plans", {"id": "iso-plan", "name": "Isolation", "price": 100})
    return subscribe(site, F.customer(site)["id"], "iso-plan")["subscription"]["id"]
