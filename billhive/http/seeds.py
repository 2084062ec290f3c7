"""Seeds: a site's fixtures - plans, addons, coupons, customers (with test cards),
subscriptions and webhook endpoints - loaded from one document (YAML or JSON) through the API's
own operations, so ids, events and invariants are those of API calls. Used by
``billhive site seed NAME FILE`` and ``POST /admin/api/sites/{name}/seed``; an example with
every section is examples/seed.yaml.

Each entry holds the parameters of the v1 operation that creates it, nested as JSON instead of
form-encoded (``card: {number: "4111111111111111", expiry_month: 12, ...}``,
``addons: [{id: seats, quantity: 3}]``): they are turned into the operation's form pairs
(``card[number]``, ``addons[id][0]``) and decoded and validated from the spec exactly as a
request's (``ApiEndpoint.call``). A subscription entry with ``customer: ID`` is created for that
customer (POST /customers/{id}/subscriptions); with ``customer: {email: ...}`` (the
operation's customer[...] parameters) or none, with its own customer (POST /subscriptions).
Webhook endpoints (not a v1 operation) take the fields of
``billhive webhook add``: url, id, username, password, secret, event_types, enabled; they are
added last, so the seed's own events are not delivered to them.

All or nothing: the sections are loaded in the order above, one operation (one transaction) per
entry; on the first bad entry the site is put back as it was before the seed (a snapshot taken
first is restored) and the error names the entry (``customers[2]``) and its parameter. Work done
after an earlier entry's commit outside the database (a webhook already sent) is not undone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import yaml

from billhive import webhook_endpoints
from billhive.errors import BillhiveError, ParamError, SettingError
from billhive.runtime import App
from billhive.services import snapshots
from billhive.work.context import Ctx
from billhive.work.origin import Origin

Call = Callable[[Ctx, str, str, Sequence[tuple[str, str]]], Awaitable[dict]]
ORIGIN = Origin(source="api", user="seed")  # the events of API calls (the spec knows no other source for them)
# section -> (operation path, what the answer holds)
SECTIONS: dict[str, tuple[str, str]] = {
    "plans": ("/plans", "plan"),
    "addons": ("/addons", "addon"),
    "coupons": ("/coupons", "coupon"),
    "customers": ("/customers", "customer"),
    "subscriptions": ("/subscriptions", "subscription"),
    "webhook_endpoints": ("", "webhook_endpoint"),
}
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
ENDPOINT_FIELDS = {"url", "id", "username", "password", "secret", "event_types", "enabled"}


def parse(text: str | bytes) -> dict[str, Any]:
    """A seed document from YAML or JSON text (JSON is YAML). ParamError when it is neither or
    not a mapping."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamError(f"seed : not valid YAML or JSON ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0]})", param="seed") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ParamError("seed : must be a mapping of sections (plans, addons, ...)", param="seed")
    return doc


def pairs(params: dict[str, Any]) -> list[tuple[str, str]]:
    """An entry's nested parameters as the operation's form pairs (Chargebee v1 encoding)."""
    out: list[tuple[str, str]] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                if v is not None:
                    out.append((f"{key}[{sub}]", scalar(v)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    out += [(f"{key}[{sub}][{i}]", scalar(v)) for sub, v in item.items() if v is not None]
                else:
                    out.append((f"{key}[{i}]", scalar(item)))
        else:
            out.append((key, scalar(value)))
    return out


async def load(app: App, call: Call, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Load the seed ``doc`` into site ``name``; returns the ids made per section."""
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ParamError(f"seed : unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})", param=unknown[0])
    for section in SECTIONS:
        entries = doc.get(section) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ParamError(f"{section} : must be a list of entries (mappings)", param=section)
    before = await snapshots.snapshot(app, name)  # also: NotFound for an unknown site
    site_pk = await app.db.read(lambda tx: snapshots.site_pk(tx, name))
    ctx = Ctx(app, site_pk, ORIGIN)
    made: dict[str, list[str]] = {s: [] for s in SECTIONS}
    where, entry = "", dict[str, Any]()
    try:
        for section, (path, obj) in SECTIONS.items():
            for i, entry in enumerate(doc.get(section) or []):
                where = f"{section}[{i}]"
                if section == "webhook_endpoints":
                    made[section].append(await _endpoint(app, site_pk, entry))
                    continue
                params = dict(entry)
                op = path
                if section == "subscriptions" and isinstance(params.get("customer"), str):
                    op = f"/customers/{params.pop('customer')}/subscriptions"  # else customer[...] params
                result = await call(ctx, "POST", op, pairs(params))
                made[section].append(result[obj]["id"])
    except BillhiveError as exc:
        await snapshots.restore(app, name, before)
        label = where + (f" (id {entry.get('id')})" if isinstance(entry.get("id"), str) else "")
        exc.message = f"seed entry {label}: {exc.message}"
        exc.param = f"{where}.{exc.param}" if exc.param else where
        raise
    return {"object": "site_seed", "name": name, "created": made}


async def _endpoint(app: App, site_pk: int, entry: dict[str, Any]) -> str:
    unknown = sorted(set(entry) - ENDPOINT_FIELDS)
    if unknown:
        raise ParamError(f"{unknown[0]} : unknown field (known: {', '.join(sorted(ENDPOINT_FIELDS))})",
                         param=unknown[0])
    if not isinstance(entry.get("url"), str):
        raise ParamError("url : cannot be blank", param="url")
    types = entry.get("event_types")
    if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        raise ParamError("event_types : must be a list of event types", param="event_types")
    now = int(app.wall())

    def unit(tx: Any) -> str:
        try:
            return webhook_endpoints.add(
                tx, site_pk, entry["url"], now=now, endpoint_id=entry.get("id"), username=entry.get("username"),
                password=entry.get("password"), secret=entry.get("secret"), event_types=types,
                enabled=entry.get("enabled", True) is not False).id
        except SettingError as exc:
            raise ParamError(str(exc)) from None
    return await app.db.write(unit)
