"""What the catalog services (plans, addons, coupons, coupon codes) share: documents shaped by
the spec, and inserts that turn a unique-key race into ``duplicate_entry``."""

from __future__ import annotations

import functools

from sqlalchemy import select, update

from billhive import spec
from billhive.errors import DuplicateEntry
from billhive.services.context import Work
from billhive.store.docs import DocTable
from billhive.util.jsonutil import loads


@functools.lru_cache(maxsize=None)
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


def _is_unique_violation(exc: BaseException) -> bool:
    # sqlite3.IntegrityError / psycopg.errors.UniqueViolation, without importing the drivers here
    return any(c.__name__ in ("IntegrityError", "UniqueViolation") for c in type(exc).__mro__)


def insert_new(table: DocTable, w: Work, doc: dict, *, param: str, columns: dict | None = None) -> None:
    """Insert a new resource whose id the caller chose. The caller checks for an existing id
    first (for a clear error); this also covers two requests racing for the same id."""
    try:
        table.insert(w.tx, w.site_id, doc, w.now, columns=columns)
    except Exception as exc:
        if _is_unique_violation(exc):
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
