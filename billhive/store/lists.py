"""Keyset pagination and filters for every list operation.

``next_offset`` is opaque to clients: base64 of [sort column, direction, last sort value,
last pk]. Paging by key (not by row count) keeps pages stable while rows are inserted.

Filters are the v2-style extension billhive accepts on v1 list operations
(``status[is]=pending``, ``amount[gte]=100``, ``created_at[between]=[a,b]``...). Each
filterable field is a column of the resource's table; its type comes from the column and
the resource schema in the spec (enums are checked against the spec's enum).

Limits (docs/CHOICES.md, "Lists"): at most ``MAX_FILTERS`` filters in one request and
``MAX_FILTER_VALUES`` values in one ``[in]``/``[not_in]`` list; integer values within int64,
timestamps within the unix-time range parameters take (years 1970-9999). A forged
``next_offset`` is refused unless its values have the sort column's type.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BigInteger, Integer, and_, or_, select

from billhive import spec
from billhive.errors import ParamError
from billhive.store.db import Tx
from billhive.store.docs import DocTable
from billhive.util.bounds import INT64, UNIX_TIME, parse_int
from billhive.util.jsonutil import loads

STRING_OPS = ("is", "is_not", "in", "not_in", "starts_with", "is_present")
NUMBER_OPS = ("is", "is_not", "in", "not_in", "lt", "lte", "gt", "gte", "between", "is_present")
TIME_OPS = ("after", "before", "on", "between", "is_present")
ALL_OPS = frozenset(STRING_OPS + NUMBER_OPS + TIME_OPS)
TIMESTAMP_COLUMNS = frozenset({"created_at", "updated_at", "occurred_at", "date", "paid_on", "next_retry",
                               "expires_at", "due_at"})
# Chargebee's v2 lists take a handful of filters each; 50 is room for any real query, and keeps a
# statement's expression tree far from SQLite's depth limit (1,000) and its parse cheap.
MAX_FILTERS = 50
# values in one [in] / [not_in] list (as many as MAX_LIST_INDEX items in a form list parameter)
MAX_FILTER_VALUES = 250


@dataclass(frozen=True)
class FilterField:
    name: str
    kind: str  # string | integer | timestamp
    enum: tuple[str, ...] | None = None

    @property
    def ops(self) -> tuple[str, ...]:
        return {"string": STRING_OPS, "integer": NUMBER_OPS, "timestamp": TIME_OPS}[self.kind]


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: Any


@dataclass
class ListRequest:
    limit: int = 10
    offset: str | None = None
    filters: tuple[Filter, ...] = ()
    sort: tuple[str, bool] | None = None  # (column, descending)


@dataclass
class Page:
    items: list[Any]  # dicts, or orjson.Fragments (raw)
    next_offset: str | None

    def response(self, resource: str, extra: Any = None) -> dict:
        """{"list": [{resource: item}, ...], "next_offset": ...}; extra(item) adds siblings."""
        out = []
        for item in self.items:
            entry = {resource: item}
            if extra is not None:
                entry.update(extra(item))
            out.append(entry)
        body: dict = {"list": out}
        if self.next_offset:
            body["next_offset"] = self.next_offset
        return body


def filter_fields(table: DocTable) -> dict[str, FilterField]:
    """Filterable fields of a document table: id, created_at, updated_at and its index columns."""
    cached = getattr(table, "_filter_fields", None)
    if cached is not None:
        return cached
    try:
        props = spec.resource_schema(table.schema_name).get("properties", {})
    except KeyError:
        props = {}
    fields: dict[str, FilterField] = {}
    for col in table.t.c:
        name = col.name
        if name in ("pk", "site_id", "data", "internal"):  # internal: JSON state, not a field
            continue
        if name in TIMESTAMP_COLUMNS or props.get(name, {}).get("format") == "unix-time":
            fields[name] = FilterField(name, "timestamp")
        elif isinstance(col.type, (BigInteger, Integer)):
            fields[name] = FilterField(name, "integer")
        else:
            enum = props.get(name, {}).get("enum")
            fields[name] = FilterField(name, "string", tuple(enum) if enum else None)
    table._filter_fields = fields  # type: ignore[attr-defined]
    return fields


def parse_filter(table: DocTable, field: str, op: str, raw: str) -> Filter:
    """Validate one ``field[op]=raw`` pair against the table's filterable fields."""
    param = f"{field}[{op}]"
    ff = filter_fields(table).get(field)
    if ff is None:
        raise ParamError(f"{param} : {field} is not a filterable field of {table.resource}", param=param)
    if op not in ff.ops:
        raise ParamError(f"{param} : operator {op} is not supported for {field}", param=param)
    if op == "is_present":
        low = raw.lower()
        if low not in ("true", "false"):
            raise ParamError(f"{param} : must be true or false", param=param)
        return Filter(field, op, low == "true")
    if op in ("in", "not_in", "between"):
        values = _parse_list(raw, param)
        if op == "between" and len(values) != 2:
            raise ParamError(f"{param} : between takes exactly two values", param=param)
        if not values:
            raise ParamError(f"{param} : cannot be empty", param=param)
        if len(values) > MAX_FILTER_VALUES:
            raise ParamError(f"{param} : takes at most {MAX_FILTER_VALUES} values", param=param)
        return Filter(field, op, tuple(_typed(ff, v, param) for v in values))
    if op == "starts_with":
        return Filter(field, op, raw)
    return Filter(field, op, _typed(ff, raw, param))


def _parse_list(raw: str, param: str) -> list[str]:
    text = raw.strip()
    if text.startswith("["):
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError:
            inner = text[1:-1] if text.endswith("]") else None
            if inner is None:
                raise ParamError(f"{param} : expected a list like [a,b]", param=param) from None
            values = [v.strip().strip('"') for v in inner.split(",") if v.strip()]
        if not isinstance(values, list):
            raise ParamError(f"{param} : expected a list like [a,b]", param=param)
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
            raise ParamError(f"{param} : list items must be strings or integers", param=param)
        return [str(v) for v in values]
    return [v.strip() for v in text.split(",") if v.strip()]


def _typed(ff: FilterField, raw: str, param: str) -> Any:
    if ff.kind == "integer":
        return parse_int(raw, param, INT64)
    if ff.kind == "timestamp":
        return parse_int(raw, param, UNIX_TIME)
    if ff.enum and raw not in ff.enum:
        raise ParamError(f"{param} : invalid value {raw!r}; allowed: {', '.join(ff.enum)}", param=param)
    return raw


def _condition(table: DocTable, f: Filter) -> Any:
    col = table.t.c[f.field]
    op, v = f.op, f.value
    if op == "is":
        return col == v
    if op == "is_not":
        return or_(col != v, col.is_(None))
    if op == "in":
        return col.in_(v)
    if op == "not_in":
        return or_(col.not_in(v), col.is_(None))
    if op == "starts_with":
        escaped = v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return col.like(escaped + "%", escape="\\")
    if op in ("lt", "before"):
        return col < v
    if op == "lte":
        return col <= v
    if op in ("gt", "after"):
        return col > v
    if op == "gte":
        return col >= v
    if op == "between":
        lo, hi = v
        return and_(col >= lo, col <= hi)
    if op == "on":  # the UTC day of v (unix time has no leap seconds: every day is 86,400 s)
        start = v - v % 86400
        return and_(col >= start, col < start + 86400)
    if op == "is_present":
        return col.is_not(None) if v else col.is_(None)
    raise AssertionError(op)  # pragma: no cover - parse_filter admits only these


def encode_offset(sort_col: str, desc: bool, value: Any, pk: int) -> str:
    raw = orjson.dumps([sort_col, 1 if desc else 0, value, pk])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_offset(token: str, sort_col: str, desc: bool) -> tuple[Any, int]:
    """(last sort value, last pk) of a ``next_offset``; anything but what encode_offset makes for
    this sort order (an integer sort value and pk within int64) is a 400 naming ``offset``."""
    try:
        pad = "=" * (-len(token) % 4)
        col, d, value, pk = orjson.loads(base64.urlsafe_b64decode(token + pad))
    except (ValueError, binascii.Error, TypeError, orjson.JSONDecodeError):
        raise ParamError("offset : invalid value", param="offset") from None
    if col != sort_col or d not in (0, 1) or bool(d) != desc:
        raise ParamError("offset : does not belong to this list (sorting changed)", param="offset")
    if not (_is_int64(value) and _is_int64(pk)):  # every sort column is an integer (filter_fields)
        raise ParamError("offset : invalid value", param="offset")
    return value, pk


def _is_int64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and INT64[0] <= v <= INT64[1]


def fetch_page(tx: Tx, table: DocTable, site_id: int, req: ListRequest, *, where: Iterable[Any] = (),
               default_sort: tuple[str, bool] = ("created_at", True), raw: bool = False,
               parent: tuple[DocTable, str] | None = None) -> Page:
    """One page of a site's rows, newest first unless sorted otherwise.

    raw: items are the stored JSON as ``orjson.Fragment``s, spliced into the response as they
    are (no parsing and re-encoding) - for lists whose items go out unchanged.
    parent: (table, id) the list belongs to (``/customers/{id}/invoices``): it must exist on this
    site, else 404 - another site's id must not answer with an empty list."""
    if parent is not None:
        parent[0].require(tx, site_id, parent[1])
    t = table.t
    sort_col, desc = req.sort or default_sort
    col = t.c[sort_col]
    conds = [t.c.site_id == site_id, *where]
    conds += [_condition(table, f) for f in req.filters]
    nullable = col.nullable
    if nullable:
        conds.append(col.is_not(None))  # rows without a sort value cannot be paged by it
    if req.offset:
        value, pk = decode_offset(req.offset, sort_col, desc)
        if desc:
            conds.append(or_(col < value, and_(col == value, t.c.pk < pk)))
        else:
            conds.append(or_(col > value, and_(col == value, t.c.pk > pk)))
    order = [col.desc(), t.c.pk.desc()] if desc else [col.asc(), t.c.pk.asc()]
    stmt = select(t.c.pk, col, t.c.data).where(and_(*conds)).order_by(*order).limit(req.limit + 1)
    rows = tx.all(stmt)
    next_offset = None
    if len(rows) > req.limit:
        rows = rows[: req.limit]
        last = rows[-1]
        next_offset = encode_offset(sort_col, desc, last[1], last[0])
    if raw:
        return Page([orjson.Fragment(r[2]) for r in rows], next_offset)
    return Page([loads(r[2]) for r in rows], next_offset)


