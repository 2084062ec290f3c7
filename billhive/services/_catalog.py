"""What the catalog services (plans, addons, coupons, coupon codes) share: documents shaped by
the spec, and inserts that turn a unique-key race into ``duplicate_entry``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection

from sqlalchemy import select, update

from billhive import spec
from billhive.domain.catalog import check_id
from billhive.errors import DuplicateEntry, InvalidState, ParamError, not_found
from billhive.store.db import is_unique_violation
from billhive.store.docs import DocTable
from billhive.store.lists import ListRequest, fetch_page
from billhive.util.jsonutil import loads
from billhive.work.context import Work


@functools.cache
def spec_defaults(schema_name: str) -> dict:
    """The defaults the spec declares for a resource's fields (e.g. Plan.period = 1)."""
    props = spec.resource_schema(schema_name).get("properties", {})
    return {k: v["default"] for k, v in props.items() if "default" in v}


def document(schema_name: str, resource: str, values: dict) -> dict:
    """The resource as the API shows it: the spec's fields in the spec's order, absent ones
    omitted, plus ``object``."""
    doc = {k: values[k] for k in spec.resource_fields(schema_name) if values.get(k) is not None}
    doc["object"] = resource
    return doc


def fields_of(schema_name: str, params: dict) -> dict:
    """The request values that are fields of the resource (drops e.g. list controls)."""
    names = spec.resource_fields(schema_name)
    return {k: v for k, v in params.items() if k in names}


def insert_new(table: DocTable, w: Work, doc: dict, *, param: str, columns: dict | None = None) -> None:
    """Insert a new resource whose id the caller chose. The caller checks for an existing id
    first (for a clear error); this also covers two requests racing for the same id."""
    try:
        table.insert(w.tx, w.site_id, doc, w.now, columns=columns)
    except Exception as exc:
        if is_unique_violation(exc):
            raise duplicate(table.resource, doc["id"], param) from None
        raise


def duplicate(resource: str, ident: str, param: str) -> DuplicateEntry:
    label = resource.replace("_", " ")
    return DuplicateEntry(f"{param} : The {label} {ident} already exists", param=param)


def load(w: Work, table: DocTable, ident: str, *, lock: str | None = None) -> tuple[dict, bool] | None:
    """(document, in_use) of a plan or addon row; lock: None, "update" (row lock) or "share"
    (PostgreSQL FOR SHARE: blocks archiving/updates, not other users of the row)."""
    t = table.t
    stmt = select(t.c.data, t.c.in_use).where(t.c.site_id == w.site_id, t.c.id == ident)
    if lock is not None:
        stmt = stmt.with_for_update(read=lock == "share")
    row = w.tx.one(stmt)
    return (loads(row[0]), bool(row[1])) if row else None


def mark_in_use(w: Work, table: DocTable, ident: str) -> None:
    t = table.t
    w.tx.execute(update(t).where(t.c.site_id == w.site_id, t.c.id == ident, t.c.in_use == 0).values(in_use=1))


class ArchivableItems:
    """The five operations plans and addons share (create, update, retrieve, list, delete =
    archive) and the lookups other services use; each resource passes its own rules."""

    def __init__(self, table: DocTable, resource: str, schema_name: str, defaults: dict,
                 normalize: Callable[[dict, Collection[str]], dict],
                 check_update: Callable[..., None]):
        self.table = table
        self.resource = resource
        self.schema_name = schema_name
        self.defaults = defaults
        self.normalize = normalize
        self.check_update = check_update

    # ---- for other services

    def get(self, w: Work, ident: str, *, param: str | None, for_update: bool = False) -> dict:
        """The item as the API shows it, whatever its status; 404 resource_not_found naming ``param``."""
        return self.table.require(w.tx, w.site_id, ident, for_update=for_update, param=param)

    def use(self, w: Work, ident: str, *, param: str) -> dict:
        """The item, for a subscription or a charge: it must exist (404) and be active (400
        param_wrong_value otherwise). Marks it as used, which restricts later updates."""
        found = load(w, self.table, ident, lock="share")
        if found is None:
            raise not_found(self.resource, ident, param=param)
        item, in_use = found
        if item["status"] != "active":
            raise ParamError(f"{param} : The {self.resource} {ident} is {item['status']} and cannot be used",
                             param=param)
        if not in_use:
            mark_in_use(w, self.table, ident)
        return item

    # ---- API operations (units of work)

    def create(self, w: Work, params: dict) -> dict:
        check_id(params["id"], "id")
        values = {**spec_defaults(self.schema_name), **self.defaults, **fields_of(self.schema_name, params),
                  "status": "active"}
        item = document(self.schema_name, self.resource, self.normalize(values, params.keys()))
        if self.table.exists(w.tx, w.site_id, item["id"]):
            raise duplicate(self.resource, item["id"], "id")
        insert_new(self.table, w, item, param="id")
        return {self.resource: item}

    def update(self, w: Work, ident: str, params: dict) -> dict:
        found = load(w, self.table, ident, lock="update")
        if found is None:
            raise not_found(self.resource, ident)
        item, in_use = found
        changes = fields_of(self.schema_name, params)
        self.check_update(item, changes, in_use=in_use)
        new = document(self.schema_name, self.resource, self.normalize({**item, **changes}, changes.keys()))
        # in_use is not a document field: updates pass it through ``columns``
        self.table.update(w.tx, w.site_id, new, w.now, columns={"in_use": int(in_use)})
        return {self.resource: new}

    def retrieve(self, w: Work, ident: str) -> dict:
        return {self.resource: self.table.require(w.tx, w.site_id, ident)}

    def list(self, w: Work, req: ListRequest) -> dict:
        return fetch_page(w.tx, self.table, w.site_id, req).response(self.resource)

    def delete(self, w: Work, ident: str) -> dict:
        found = load(w, self.table, ident, lock="update")
        if found is None:
            raise not_found(self.resource, ident)
        item, in_use = found
        if item["status"] != "active":
            raise InvalidState(f"The {self.resource} {ident} is already {item['status']}")
        archived = document(self.schema_name, self.resource, {**item, "status": "archived", "archived_at": w.now})
        if not self.table.update(w.tx, w.site_id, archived, w.now, expect={"status": "active"},
                                 columns={"in_use": int(in_use)}):
            raise InvalidState(f"The {self.resource} {ident} was archived by another request")
        return {self.resource: archived}
