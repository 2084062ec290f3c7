"""Site administration for test suites and operators: create a test site with its keys, list,
look up, delete, reset (wipe its data and its time machine), rotate its keys. Called by the admin
API (billhive/http/admin_api.py) and usable from the CLI; each operation is one transaction.

Sites made here are test sites (their names end in ``-test``): the stand-in's purpose. Their
keys are shown once, when created or rotated.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, update

from billhive import sites
from billhive.errors import InvalidState, NotFound, ParamError, SettingError
from billhive.runtime import App
from billhive.store import schema as S
from billhive.store.db import Tx

# every table holding rows of one site (a site_id column), deleted with the site
SITE_TABLES = tuple(t for t in S.metadata.sorted_tables if "site_id" in t.c)


async def create_site(app: App, *, name: str | None = None, currency_code: str = "USD",
                      metered_billing: bool = False) -> dict[str, Any]:
    """A new test site and its keys (a full-access and a read-only key), shown this once."""
    name = name or f"t{secrets.token_hex(6)}-test"
    if not name.endswith("-test"):
        raise ParamError("name : must end in -test (the admin API makes test sites)", param="name")
    try:
        currency_code = sites.COLUMN_SETTINGS["currency_code"](currency_code)
    except SettingError as exc:
        raise ParamError(f"currency_code : {exc}", param="currency_code") from None
    now = int(app.wall())
    read_only = "test_ro_" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")

    def unit(tx: Tx) -> dict[str, Any]:
        try:
            site, keys = sites.create(tx, name, now=now, currency=currency_code, metered_billing=metered_billing,
                                      read_only_key=read_only)
        except SettingError as exc:
            raise ParamError(f"name : {exc}", param="name") from None
        return {**view(app, site), "api_key": keys["full"], "read_only_key": keys["read_only"]}
    return await app.db.write(unit)


async def list_sites(app: App) -> list[dict[str, Any]]:
    return await app.db.read(lambda tx: [view(app, s) for s in sites.all_sites(tx)])


async def get_site(app: App, name: str) -> dict[str, Any]:
    return view(app, await app.db.read(lambda tx: require(tx, name)))


async def delete_site(app: App, name: str) -> dict[str, Any]:
    """The site and every row of it (keys, endpoints, data) deleted."""
    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        for table in SITE_TABLES:
            tx.execute(delete(table).where(table.c.site_id == site.pk))
        tx.execute(delete(S.sites).where(S.sites.c.pk == site.pk))
        return {"name": site.name, "deleted": True}
    return await app.db.write(unit)


async def reset_site(app: App, name: str) -> dict[str, Any]:
    """The site's data wiped (customers, subscriptions, invoices, events, jobs...) and its time
    machine back to not_enabled (real time); settings, keys and webhook endpoints stay."""
    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        if site.tm_status == "in_progress":
            raise InvalidState("The site's time machine is travelling: reset it once the travel is over")
        sites.wipe_data(tx, site.pk)
        tx.execute(update(S.sites).where(S.sites.c.pk == site.pk).values(
            tm_now=None, tm_genesis_time=None, tm_destination_time=None, tm_status=None, invoice_next_number=1))
        return view(app, sites.load(tx, site.pk))
    return await app.db.write(unit)


async def rotate_keys(app: App, name: str) -> dict[str, Any]:
    """Every key of the site revoked; a new full-access and read-only key, shown this once."""
    now = int(app.wall())

    def unit(tx: Tx) -> dict[str, Any]:
        site = require(tx, name)
        tx.execute(delete(S.api_keys).where(S.api_keys.c.site_id == site.pk))
        full = sites.new_key(site.is_test)
        read_only = ("test_ro_" if site.is_test else "live_ro_") + secrets.token_urlsafe(24).replace("-", "x")
        sites.add_key(tx, site.pk, full, "full", "full_access_key", now)
        sites.add_key(tx, site.pk, read_only, "read_only", "read_only_key", now)
        return {**view(app, site), "api_key": full, "read_only_key": read_only}
    return await app.db.write(unit)


def require(tx: Tx, name: str) -> sites.Site:
    site = sites.by_name(tx, name) if sites.SITE_NAME.match(name) else None
    if site is None:
        raise NotFound(f"No site named {name}", api_error_code="resource_not_found")
    return site


def view(app: App, site: sites.Site) -> dict[str, Any]:
    """A site as the admin API shows it (never its keys: those only when made)."""
    return {
        "name": site.name,
        "test_site": site.is_test,
        "currency_code": site.currency_code,
        "created_at": site.created_at,
        "time_travel_status": site.tm_status or "not_enabled",
        # the site's API: the key chooses the site (no {site}.localhost name to resolve)
        "api_url": app.config.base_url.rstrip("/") + "/api/v1",
        "object": "site",
    }
