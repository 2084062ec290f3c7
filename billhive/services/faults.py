"""Faults on purpose, kept per site in the database (so every server process applies the same
rules and counts the same calls): operation fault rules (``fault_rules``) and webhook endpoints'
delivery modes (``webhook_endpoints.fault``). The decisions are billhive/domain/faults.py's; the
admin API (billhive/http/admin_api.py) manages them, the API endpoint applies the rules before an
operation runs (billhive/http/faults.py) and the webhook worker the modes
(billhive/delivery/webhooks.py).

Counting is exact under concurrency: a call is counted by one conditional UPDATE of the rule's
row (``calls < times``), which the database serialises (SQLite's single writer; PostgreSQL's row
lock held to the commit), so "the next N calls" strikes exactly N calls whatever the number of
processes and concurrent requests.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from billhive import webhook_endpoints
from billhive.domain import faults as F
from billhive.errors import NotFound
from billhive.runtime import App
from billhive.services.site_admin import require
from billhive.store import schema as S
from billhive.store.db import Q, Tx
from billhive.util.jsonutil import dumps, loads

T = S.fault_rules


@dataclass(frozen=True)
class Stored:
    pk: int
    id: str
    rule: F.Rule


# ---- operation fault rules: the admin API -------------------------------------------------------

async def add_rule(app: App, name: str, body: Mapping[str, Any], operations: Mapping[str, str]) -> dict[str, Any]:
    rule = F.rule_from_json(body, operations=operations, seed=secrets.randbits(31))
    now = int(app.wall())

    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        rule_id = "fault_" + secrets.token_hex(6)
        data = {k: v for k, v in rule.to_json().items() if k not in ("operation", "times")}
        tx.execute(insert(T).values(site_id=site.pk, id=rule_id, operation=rule.operation, rule=dumps(data),
                                    times=rule.times, calls=0, struck=0, created_at=now))
        return _view(_one(tx, site.pk, rule_id))
    return await app.db.write(unit)


async def list_rules(app: App, name: str) -> list[dict[str, Any]]:
    def unit(tx: Tx) -> list[dict[str, Any]]:
        site = require(tx, name)
        return [_view(r) for r in tx.all(select(*_COLS).where(T.c.site_id == site.pk).order_by(T.c.pk))]
    return await app.db.read(unit)


async def delete_rule(app: App, name: str, rule_id: str) -> dict[str, Any]:
    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        row = tx.one(select(*_COLS).where(T.c.site_id == site.pk, T.c.id == rule_id))
        if row is None:
            raise NotFound(f"No fault rule {rule_id} on site {name}", api_error_code="resource_not_found")
        tx.execute(delete(T).where(T.c.site_id == site.pk, T.c.id == rule_id))
        return {**_view(row), "deleted": True}
    return await app.db.write(unit)


async def webhook_faults(app: App, name: str) -> list[dict[str, Any]]:
    """The site's endpoints that have delivery modes set."""
    def unit(tx: Tx) -> list[dict[str, Any]]:
        site = require(tx, name)
        return [_endpoint_view(tx, site.pk, e.id) for e in webhook_endpoints.list_all(tx, site.pk) if e.fault]
    return await app.db.read(unit)


_COLS = (T.c.id, T.c.operation, T.c.times, T.c.rule, T.c.calls, T.c.struck, T.c.created_at)


def _one(tx: Tx, site_pk: int, rule_id: str) -> tuple:
    row = tx.one(select(*_COLS).where(T.c.site_id == site_pk, T.c.id == rule_id))
    assert row is not None
    return row


def _view(row: tuple) -> dict[str, Any]:
    rule_id, operation, times, data, calls, struck, created_at = row
    rule = F.rule_from_stored(operation, times, loads(data))
    out = {"id": rule_id, **rule.to_json(), "calls": calls, "struck": struck, "created_at": created_at}
    if times is not None:
        out["remaining"] = max(0, times - calls)
    out["object"] = "fault_rule"
    return out


# ---- operation fault rules: applying them -------------------------------------------------------

_SITES = Q(select(T.c.site_id).distinct())
_RULES = Q(select(T.c.pk, T.c.id, T.c.operation, T.c.times, T.c.rule).where(T.c.site_id == bindparam("site_id"))
           .order_by(T.c.pk))
_COUNT = Q(update(T).where(T.c.site_id == bindparam("site_id"), T.c.pk == bindparam("rule_pk"),
                           (T.c.times.is_(None)) | (T.c.calls < T.c.times))
           .values(calls=T.c.calls + 1))
_CALLS = Q(select(T.c.calls).where(T.c.site_id == bindparam("site_id"), T.c.pk == bindparam("rule_pk")))
_STRUCK = Q(update(T).where(T.c.site_id == bindparam("site_id"), T.c.pk == bindparam("rule_pk"))
            .values(struck=T.c.struck + 1))


def sites_with_rules(tx: Tx) -> frozenset[int]:
    """The sites that have at least one fault rule (one query for every site)."""
    return frozenset(r[0] for r in tx.all(_SITES))


def site_rules(tx: Tx, site_pk: int) -> list[Stored]:
    return [Stored(r[0], r[1], F.rule_from_stored(r[2], r[3], loads(r[4])))
            for r in tx.all(_RULES, {"site_id": site_pk})]


def count_calls(site_pk: int, rules: list[Stored]):
    """A write unit counting one call of each rule; returns, per rule, True (the rule strikes
    this call), False (it does not), or None (it has run out of calls: it never strikes again)."""
    def unit(tx: Tx) -> list[bool | None]:
        out: list[bool | None] = []
        for r in rules:
            args = {"site_id": site_pk, "rule_pk": r.pk}
            if tx.rowcount(_COUNT, args) != 1:
                out.append(None)  # out of calls (or deleted meanwhile)
                continue
            hit = F.strikes(r.rule, int(tx.scalar(_CALLS, args)))
            if hit:
                tx.execute(_STRUCK, args)
            out.append(hit)
        return out
    return unit


# ---- webhook endpoints' delivery modes ---------------------------------------------------------

async def set_webhook_fault(app: App, name: str, endpoint_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    fault = F.webhook_fault_from_json(body)

    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        if not webhook_endpoints.set_fault(tx, site.pk, endpoint_id, fault.to_json()):
            raise _no_endpoint(name, endpoint_id)
        return _endpoint_view(tx, site.pk, endpoint_id)
    return await app.db.write(unit)


async def clear_webhook_fault(app: App, name: str, endpoint_id: str) -> dict[str, Any]:
    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        if not webhook_endpoints.set_fault(tx, site.pk, endpoint_id, None):
            raise _no_endpoint(name, endpoint_id)
        return _endpoint_view(tx, site.pk, endpoint_id)
    return await app.db.write(unit)


async def get_webhook_fault(app: App, name: str, endpoint_id: str) -> dict[str, Any]:
    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        return _endpoint_view(tx, site.pk, endpoint_id)
    return await app.db.read(unit)


async def clear_all(app: App, name: str) -> dict[str, Any]:
    """Every fault of the site off: its rules deleted and every endpoint delivered normally."""
    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        n = tx.rowcount(delete(T).where(T.c.site_id == site.pk))
        cleared = [e.id for e in webhook_endpoints.list_all(tx, site.pk) if e.fault]
        for endpoint_id in cleared:
            webhook_endpoints.set_fault(tx, site.pk, endpoint_id, None)
        return {"fault_rules_deleted": n, "webhook_endpoints_cleared": cleared, "object": "faults_cleared"}
    return await app.db.write(unit)


def _endpoint_view(tx: Tx, site_pk: int, endpoint_id: str) -> dict[str, Any]:
    e = webhook_endpoints.get(tx, site_pk, endpoint_id)
    if e is None:
        raise NotFound(f"No webhook endpoint {endpoint_id}", api_error_code="resource_not_found")
    fault = F.webhook_fault_from_stored(e.fault)
    return {"endpoint_id": e.id, "url": e.url, **({"fault": fault.to_json()} if fault else {}),
            "object": "webhook_endpoint_fault"}


def _no_endpoint(name: str, endpoint_id: str) -> NotFound:
    return NotFound(f"No webhook endpoint {endpoint_id} on site {name}", api_error_code="resource_not_found")
