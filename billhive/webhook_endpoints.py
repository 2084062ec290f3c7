"""A site's webhook endpoints (Chargebee allows up to 5): URL, basic auth, signing secret,
subscribed event types, on/off. Managed by ``billhive webhook add|list|remove``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import urlparse

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy import update as sa_update

from billhive import spec
from billhive.errors import SettingError
from billhive.store import schema as S
from billhive.store.db import Q, Tx
from billhive.util.jsonutil import dumps, loads

MAX_ENDPOINTS = 5
T = S.webhook_endpoints


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    username: str | None
    password: str | None
    secret: str | None
    event_types: tuple[str, ...] | None  # None = every event type
    enabled: bool
    fault: dict | None = None  # delivery modes set on purpose (billhive/domain/faults.py); None: none

    def wants(self, event_type: str) -> bool:
        return self.enabled and (self.event_types is None or event_type in self.event_types)


_COLS = (T.c.id, T.c.url, T.c.username, T.c.password, T.c.secret, T.c.event_types, T.c.enabled, T.c.fault)
_ALL = Q(select(*_COLS).where(T.c.site_id == bindparam("site_id")).order_by(T.c.pk))


def _row(r: tuple) -> Endpoint:
    return Endpoint(r[0], r[1], r[2], r[3], r[4], tuple(loads(r[5])) if r[5] else None, bool(r[6]),
                    loads(r[7]) if r[7] else None)


def list_all(tx: Tx, site_pk: int) -> list[Endpoint]:
    return [_row(r) for r in tx.all(_ALL, {"site_id": site_pk})]


def get(tx: Tx, site_pk: int, endpoint_id: str) -> Endpoint | None:
    for e in list_all(tx, site_pk):
        if e.id == endpoint_id:
            return e
    return None


def _check_url(url: str) -> None:
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.netloc:
        raise SettingError("webhook URL must be an absolute http(s) URL")


def _check_types(event_types: list[str] | None) -> None:
    if event_types:
        known = set(spec.event_types())
        bad = [e for e in event_types if e not in known]
        if bad:
            raise SettingError(f"unknown event type(s): {', '.join(bad)}")


def add(tx: Tx, site_pk: int, url: str, *, now: int, endpoint_id: str | None = None, username: str | None = None,
        password: str | None = None, secret: str | None = None, event_types: list[str] | None = None,
        enabled: bool = True) -> Endpoint:
    _check_url(url)
    _check_types(event_types)
    existing = list_all(tx, site_pk)
    if len(existing) >= MAX_ENDPOINTS:
        raise SettingError(f"a site can have at most {MAX_ENDPOINTS} webhook endpoints")
    endpoint_id = endpoint_id or "wh_" + secrets.token_hex(6)
    if any(e.id == endpoint_id for e in existing):
        raise SettingError(f"webhook endpoint {endpoint_id} already exists")
    secret = secret or "whsec_" + secrets.token_hex(16)
    tx.execute(insert(T).values(site_id=site_pk, id=endpoint_id, url=url, username=username, password=password,
                                secret=secret, event_types=dumps(event_types) if event_types else None,
                                enabled=1 if enabled else 0, created_at=now))
    _bump(tx, site_pk)
    return get(tx, site_pk, endpoint_id)  # type: ignore[return-value]


def update(tx: Tx, site_pk: int, endpoint_id: str, **values: object) -> None:
    if "url" in values and values["url"] is not None:
        _check_url(str(values["url"]))
    if "event_types" in values:
        _check_types(values["event_types"])  # type: ignore[arg-type]
        values["event_types"] = dumps(values["event_types"]) if values["event_types"] else None
    if "enabled" in values:
        values["enabled"] = 1 if values["enabled"] else 0
    tx.execute(sa_update(T).where(T.c.site_id == site_pk, T.c.id == endpoint_id).values(**values))
    _bump(tx, site_pk)


def set_fault(tx: Tx, site_pk: int, endpoint_id: str, fault: dict | None) -> bool:
    """Set (or clear, with None) the endpoint's delivery modes; False if there is no such endpoint."""
    changed = tx.rowcount(sa_update(T).where(T.c.site_id == site_pk, T.c.id == endpoint_id)
                          .values(fault=dumps(fault) if fault else None)) == 1
    _bump(tx, site_pk)
    return changed


def remove(tx: Tx, site_pk: int, endpoint_id: str) -> bool:
    removed = tx.rowcount(delete(T).where(T.c.site_id == site_pk, T.c.id == endpoint_id)) == 1
    _bump(tx, site_pk)
    return removed


def _bump(tx: Tx, site_pk: int) -> None:
    bump_config(tx, site_pk)


_CACHE: dict[tuple[str, int], tuple[int, list[Endpoint]]] = {}


def cached(tx: Tx, site_pk: int, config_version: int) -> list[Endpoint]:
    """The site's endpoints, re-read only when the site's config_version moved."""
    key = (tx.db_key, site_pk)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == config_version:
        return hit[1]
    endpoints = list_all(tx, site_pk)
    _CACHE[key] = (config_version, endpoints)
    return endpoints


def describe(e: Endpoint) -> dict:
    return {"id": e.id, "url": e.url, "username": e.username, "password_set": bool(e.password),
            "secret": e.secret, "event_types": list(e.event_types) if e.event_types else "all",
            "enabled": e.enabled}


def bump_config(tx: Tx, site_pk: int) -> None:
    """Note that a site's settings or webhook endpoints changed (invalidates per-process caches)."""
    tx.execute(sa_update(S.sites).where(S.sites.c.pk == site_pk)
               .values(config_version=S.sites.c.config_version + 1))
