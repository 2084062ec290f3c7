"""Document tables: a resource's API representation plus the columns derived from it.

``DocTable`` is the one way resources are read and written. On every insert/update the
index columns are recomputed from the document, so a column and the JSON can never
disagree. Conditional updates (``expect=``) are how state transitions stay exactly-once
under concurrency: ``UPDATE ... WHERE status = 'pending'`` changes one row or none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
from sqlalchemy import Table, and_, bindparam, delete, insert, select, update

from billhive.errors import not_found
from billhive.store.db import Q, Tx
from billhive.util.jsonutil import dumps, loads

_BASE = ("pk", "site_id", "id", "created_at", "updated_at", "data")


class DocTable:
    def __init__(self, table: Table, resource: str, *,
                 columns: dict[str, Callable[[dict], Any]] | None = None,
                 schema_name: str | None = None, insert_only: tuple[str, ...] = (),
                 id_of: Callable[[dict], str] | None = None):
        """resource: the API's name for it ('invoice'); schema_name: the spec's ('Invoice').

        columns: how to derive an index column from the document (default: the field of the
        same name). insert_only: columns written on insert and never overwritten by updates
        (internal values that are not fields of the document, e.g. a gateway idempotency key).
        id_of: the row id of a document whose API representation has no ``id`` field (a card
        is keyed by its ``customer_id``); default ``doc["id"]``.
        """
        self.id_of: Callable[[dict], str] = id_of or (lambda d: d["id"])
        self.insert_only = frozenset(insert_only)
        self.t = table
        self.resource = resource
        self.schema_name = schema_name or "".join(p.capitalize() for p in resource.split("_"))
        self.index_columns = [c.name for c in table.c if c.name not in _BASE]
        overrides = columns or {}
        self.extract: dict[str, Callable[[dict], Any]] = {
            name: overrides.get(name) or _field(name) for name in self.index_columns
        }
        t = table
        key = and_(t.c.site_id == bindparam("site_id"), t.c.id == bindparam("id"))
        self._get = Q(select(t.c.data).where(key))
        self._get_lock = Q(select(t.c.data).where(key).with_for_update())
        self._exists = Q(select(t.c.pk).where(key))
        write_cols = ["site_id", "id", "created_at", "updated_at", *self.index_columns, "data"]
        self._write_cols = write_cols
        self._insert = Q(insert(t).values({c: bindparam(c) for c in write_cols}))
        self._update_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], Q] = {}
        self._delete = Q(delete(t).where(key))

    # ---- reads --------------------------------------------------------------------------

    def get(self, tx: Tx, site_id: int, id: str, *, for_update: bool = False) -> dict | None:
        row = tx.one(self._get_lock if for_update else self._get, {"site_id": site_id, "id": id})
        return loads(row[0]) if row else None

    def get_raw(self, tx: Tx, site_id: int, id: str) -> Any:
        """The stored JSON as an ``orjson.Fragment`` (spliced into a response unparsed), or None."""
        row = tx.one(self._get, {"site_id": site_id, "id": id})
        return orjson.Fragment(row[0]) if row else None

    def require(self, tx: Tx, site_id: int, id: str, *, for_update: bool = False,
                param: str | None = None) -> dict:
        doc = self.get(tx, site_id, id, for_update=for_update)
        if doc is None:
            raise not_found(self.resource, id, param=param)
        return doc

    def exists(self, tx: Tx, site_id: int, id: str) -> bool:
        return tx.one(self._exists, {"site_id": site_id, "id": id}) is not None

    def find(self, tx: Tx, site_id: int, *where: Any, order_by: Iterable[Any] = (), limit: int | None = None,
             for_update: bool = False) -> list[dict]:
        """Ad-hoc lookup by column conditions (always scoped to the site)."""
        t = self.t
        stmt = select(t.c.data).where(t.c.site_id == site_id, *where)
        order = list(order_by) or [t.c.pk]
        stmt = stmt.order_by(*order)
        if limit is not None:
            stmt = stmt.limit(limit)
        if for_update:
            stmt = stmt.with_for_update()
        return [loads(r[0]) for r in tx.all(stmt)]

    # ---- writes -------------------------------------------------------------------------

    def _params(self, site_id: int, doc: dict, now: int, columns: dict | None = None) -> dict:
        p = {
            "site_id": site_id,
            "id": self.id_of(doc),
            "created_at": doc.get("created_at") or now,
            "updated_at": now,
            "data": dumps(doc),
        }
        for name, fn in self.extract.items():
            p[name] = fn(doc)
        if columns:
            p.update(columns)
        return p

    def insert(self, tx: Tx, site_id: int, doc: dict, now: int, *, columns: dict | None = None) -> None:
        """columns: values for index columns that are not fields of the document."""
        tx.execute(self._insert, self._params(site_id, doc, now, columns))

    def insert_many(self, tx: Tx, site_id: int, docs: Iterable[dict], now: int) -> None:
        """Insert many documents with one executemany (seeding and bulk loads)."""
        tx.executemany(self._insert, [self._params(site_id, doc, now) for doc in docs])

    def update(self, tx: Tx, site_id: int, doc: dict, now: int, *, old_id: str | None = None,
               expect: dict[str, Any] | None = None, columns: dict | None = None) -> bool:
        """Write doc over the row (renaming it from old_id if given).

        ``expect`` adds column conditions; returns False (and writes nothing) when the row
        no longer matches them, so a concurrent transition loses cleanly.
        """
        keys = tuple(sorted(expect)) if expect else ()
        explicit = tuple(sorted(c for c in columns if c in self.insert_only)) if columns else ()
        q = self._update_cache.get((keys, explicit))
        if q is None:
            t = self.t
            cond = [t.c.site_id == bindparam("site_id"), t.c.id == bindparam("old_id")]
            cond += [t.c[k] == bindparam(f"expect_{k}") for k in keys]
            values: dict[str, Any] = {c: bindparam(c) for c in self._write_cols
                      if c not in ("site_id", "created_at") and (c not in self.insert_only or c in explicit)}
            q = Q(update(t).where(and_(*cond)).values(values))
            self._update_cache[(keys, explicit)] = q
        p = self._params(site_id, doc, now, columns)
        p.pop("created_at")
        p["old_id"] = old_id if old_id is not None else self.id_of(doc)
        if expect:
            if tx.pipelined:
                raise RuntimeError("a conditional update needs its rowcount: do it before tx.pipeline()")
            for k, v in expect.items():
                p[f"expect_{k}"] = v
        n = tx.rowcount(q, p)
        # pipelined (PostgreSQL): the count comes later; the caller holds the row (loaded for update)
        return n == 1 or (n < 0 and tx.pipelined)

    def save(self, tx: Tx, site_id: int, doc: dict, now: int) -> None:
        """Update an existing row that the caller has already loaded in this transaction."""
        if not self.update(tx, site_id, doc, now):
            raise not_found(self.resource, self.id_of(doc))

    def delete(self, tx: Tx, site_id: int, id: str) -> bool:
        return tx.rowcount(self._delete, {"site_id": site_id, "id": id}) == 1


def _field(name: str) -> Callable[[dict], Any]:
    """The default extractor of an index column: the document's field of the same name."""
    return lambda d: d.get(name)
