"""Factories for customer, card and credit tests: plain functions with fixed, valid defaults."""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import Any

import jsonschema

from billhive import spec
from billhive.store.resources import SUBSCRIPTIONS
from tests.support import timemachine

VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"
DISCOVER = "6011111111111117"
JCB = "3530111333300000"
DINERS = "38520000023237"
REFUSED = "4119862760338320"
INSUFFICIENT_FUNDS = "4005519200000004"
TIMES_OUT = "4000000000000119"

# 2030-06-15 12:00 UTC: a fixed site clock for expiry tests (start_afresh)
GENESIS = int(dt.datetime(2030, 6, 15, 12, tzinfo=dt.UTC).timestamp())


FUTURE_YEAR = 2040  # a valid expiry for real time and for the time machine's GENESIS

def card(number: str = VISA, *, prefix: str = "card", year: int | None = None, month: int = 12,
         **extra: Any) -> dict:
    """Card parameters, bracketed for create_a_customer (prefix='card') or flat (prefix='')."""
    fields = {"number": number, "expiry_month": month, "expiry_year": year or FUTURE_YEAR, **extra}
    if not prefix:
        return fields
    return {f"{prefix}[{k}]": v for k, v in fields.items()}


def create_customer(api, **params: Any) -> dict:
    """POST /customers; returns the whole body ({"customer": ..., "card"?: ...})."""
    body = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", **params}
    return api.post("/customers", body).body


def start_afresh(api, genesis: int = GENESIS) -> int:
    api.post("/time_machines/delorean/start_afresh", {"genesis_time": genesis})
    return genesis


def travel(api, destination: int) -> None:
    assert timemachine.travel(api, destination)["time_travel_status"] == "succeeded"


def events(api, event_type: str | None = None, **filters: Any) -> list[dict]:
    """The site's events, newest first; each one's content is checked against the spec's webhook
    schema for its type (``card`` may be absent: the customer has none)."""
    params: dict = {"limit": 100, **filters}
    if event_type:
        params["event_type"] = event_type
    out = [e["event"] for e in api.get("/events", params).body["list"]]
    for ev in out:
        errors = list(_content_validator(ev["event_type"]).iter_errors(ev["content"]))
        assert not errors, f"{ev['event_type']} content breaks the spec: {errors[0].message} at " \
                           f"{list(errors[0].absolute_path)}"
    return out


@functools.cache
def _content_validator(event_type: str) -> jsonschema.protocols.Validator:
    name = "".join(p.capitalize() for p in event_type.split("_")) + "Event"
    schema = dict(spec.resource_schema(name)["properties"]["content"])
    schema["required"] = [r for r in schema.get("required", ()) if r != "card"]
    return jsonschema.Draft202012Validator(schema)


def seed_subscription(site, customer_id: str, status: str = "active", sub_id: str | None = None) -> str:
    """A subscriptions row, written as the subscriptions service would (that service lives elsewhere)."""
    sid = sub_id or f"sub_{customer_id}_{status}"
    doc = {"id": sid, "plan_id": "basic", "plan_quantity": 1, "status": status, "customer_id": customer_id,
           "has_scheduled_changes": False, "object": "subscription"}
    site.app.db.write_sync(lambda tx: SUBSCRIPTIONS.insert(tx, site.pk, doc, int(time.time())))
    return sid
