"""Document tables: a resource's API representation plus the columns derived from it.

``DocTable`` is the one way resources are read and written. On every insert/update the
index columns are recomputed from the document, so a column and the JSON can never
disagree. An update writes the document and only those columns whose values differ from the
row's as this unit loaded or last wrote it (``Tx.rows``; without that, every column): an UPDATE
naming a column rewrites every index holding it, changed or not. Conditional updates
(``expect=``) are how state transitions stay exactly-once under concurrency:
``UPDATE ... WHERE status = 'pending'`` changes one row or none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Table, and_, bindparam, delete, insert, select, update

from billhive.errors import not_found
from billhive.store.db import Q, Tx
from billhive.store.inlist import InList
from billhive.store.tx import ROW_TABLES
from billhive.util.jsonutil import dumps, loads

_BASE = ("pk", "site_id", "id", "created_at", "updated_at", "data")
# a ``Tx.rows`` entry's stored document (the data column's text), when ``get_many`` loaded it: ``get``
# answers from it without a statement, and an update of the row keeps it (the row's new text)
_DOC = "data"
_EXTRA = "+"  # and the insert_only columns it loaded, by "+" and their name


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
        self.name = table.name
        ROW_TABLES.add(table.name)
        # the columns an update may leave out when their value is unchanged (Tx.rows knows them);
        # insert_only columns named in ``columns=`` are always written (others may set them)
        self._known = ("id", "updated_at", *(c for c in self.index_columns if c not in self.insert_only))
        key = and_(t.c.site_id == bindparam("site_id"), t.c.id == bindparam("id"))
        known = [t.c[c] for c in self._known]
        self._get = Q(select(t.c.data, *known).where(key))
        self._get_lock = Q(select(t.c.data, *known).where(key).with_for_update())
        self._get_raw = Q(select(t.c.data).where(key))
        self._exists = Q(select(t.c.pk).where(key))
        self._memo_columns: set[str] = set()  # the columns ``remember`` keeps results by
        # get_many's statements, by (for_update, extra columns)
        self._get_many: dict[tuple[bool, tuple[str, ...]], InList] = {}
        write_cols = ["site_id", "id", "created_at", "updated_at", *self.index_columns, "data"]
        self._write_cols = write_cols
        self._insert = _own(Q(insert(t).values({c: bindparam(c) for c in write_cols}), combinable=True))
        self._update_cache: dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None], Q] = {}
        self._delete = _own(Q(delete(t).where(key)))

    # ---- reads --------------------------------------------------------------------------

    def get(self, tx: Tx, site_id: int, id: str, *, for_update: bool = False) -> dict | None:
        known = tx.rows.get((self.name, site_id, id)) if tx.rows else None
        if known is not None and (doc := known.get(_DOC)) is not None:
            return loads(doc)  # loaded by get_many (PostgreSQL: locked) and unchanged since, or as updated since
        row = tx.one(self._get_lock if for_update else self._get, {"site_id": site_id, "id": id})
        if row is None:
            return None
        if for_update or tx.dialect == "sqlite":  # SQLite: one writer, nobody else changes it meanwhile
            tx.rows[(self.name, site_id, id)] = dict(zip(self._known, row[1:]))
        return loads(row[0])

    def get_many(self, tx: Tx, site_id: int, ids: Iterable[str], *, for_update: bool = False,
                 extra: tuple[str, ...] = ()) -> dict[str, dict]:
        """``get`` of several rows in one statement: the documents found, by id. Each row is
        registered in ``Tx.rows`` as ``get`` does (an update writes only what changed), with its
        document and the ``extra`` columns (insert_only ones, e.g. a subscription's internal
        state): a later ``get`` (or ``remembered``) of it in this unit is answered from memory
        while ``Tx.rows`` knows the row - until a savepoint rolls back or a statement other than
        this table's own writes to it; an update of the row keeps its new document. On PostgreSQL
        only rows loaded ``for_update`` are registered (another transaction may change the rest)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        q = self._get_many.get((for_update, extra))
        if q is None:
            t = self.t
            cols = [t.c.data, *(t.c[c] for c in self._known), *(t.c[c] for c in extra)]

            def build(values: list[Any], cols: list[Any] = cols, lock: bool = for_update) -> Any:
                stmt = select(*cols).where(t.c.site_id == bindparam("site_id"), t.c.id.in_(values))
                return stmt.with_for_update() if lock else stmt
            q = self._get_many[(for_update, extra)] = InList(build, "id")
        rows = tx.all(*q(wanted, {"site_id": site_id}))
        keep = for_update or tx.dialect == "sqlite"
        width = 1 + len(self._known)
        out = {}
        for row in rows:
            if keep:
                known = dict(zip(self._known, row[1:width]))
                known[_DOC] = row[0]
                for c, v in zip(extra, row[width:], strict=True):
                    known[_EXTRA + c] = v
                tx.rows[(self.name, site_id, row[1])] = known
            out[row[1]] = loads(row[0])
        return out

    def remembered(self, tx: Tx, site_id: int, id: str, *extra: str) -> tuple[dict, tuple] | None:
        """The document and the ``extra`` columns of a row ``get_many`` loaded with them in this
        unit, as the row holds them now, without a statement; None when not known so (read it)."""
        known = tx.rows.get((self.name, site_id, id)) if tx.rows else None
        if known is None or (doc := known.get(_DOC)) is None or any(_EXTRA + c not in known for c in extra):
            return None
        return loads(doc), tuple(known[_EXTRA + c] for c in extra)

    def remember(self, tx: Tx, site_id: int, column: str, value: Any, what: str, result: Any) -> None:
        """Keep ``result``, what this unit read of the rows whose ``column`` holds ``value`` (the
        caller's own read, e.g. the unpaid invoices of a subscription), for ``recall``: until a
        write to the table may change it (``Tx.memo``). On PostgreSQL the caller read them locked."""
        tx.memo.setdefault((self.name, column, site_id, value), {})[what] = result
        self._memo_columns.add(column)

    def recall(self, tx: Tx, site_id: int, column: str, value: Any, what: str) -> Any:
        """What ``remember`` kept, if nothing written since may have changed it (else None)."""
        if not tx.memo:
            return None
        return tx.memo.get((self.name, column, site_id, value), {}).get(what)

    def _touch(self, tx: Tx, site_id: int, before: dict | None, after: dict | None) -> None:
        """A row of the table is written (``before``/``after``: its columns, None when not
        known): ``Tx.memo`` forgets what it kept for the values the row had or has now."""
        memo, name = tx.memo, self.name
        for column in self._memo_columns:
            if before is None or column not in before:  # what it held is not known: all of the column's
                for key in [k for k in memo if k[0] == name and k[1] == column]:
                    del memo[key]
                continue
            memo.pop((name, column, site_id, before[column]), None)
            if after is not None:
                memo.pop((name, column, site_id, after.get(column)), None)

    def loaded_columns(self) -> list[Any]:
        """What a joined load selects of this table for ``take``: the document and the columns an
        update compares (``Tx.rows``), in that order (``width`` of them)."""
        return [self.t.c.data, *(self.t.c[c] for c in self._known)]

    @property
    def width(self) -> int:
        return 1 + len(self._known)

    def take(self, tx: Tx, site_id: int, values: Sequence[Any], *, locked: bool) -> dict | None:
        """The document of a row loaded by a joined statement (``values``: its ``loaded_columns``;
        all None when an outer join found none), registered in ``Tx.rows`` as ``get`` does, so a
        later update writes only the columns that changed. ``locked``: the statement holds the row
        ``FOR UPDATE`` (on PostgreSQL only locked rows are registered)."""
        if values[0] is None:
            return None
        if locked or tx.dialect == "sqlite":
            tx.rows[(self.name, site_id, values[1])] = dict(zip(self._known, values[1:]))
        return loads(values[0])

    def get_raw(self, tx: Tx, site_id: int, id: str) -> Any:
        """The stored JSON as an ``orjson.Fragment`` (spliced into a response unparsed), or None."""
        row = tx.one(self._get_raw, {"site_id": site_id, "id": id})
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

    def row_params(self, site_id: int, doc: dict, now: int, columns: dict | None = None) -> dict:
        """The row ``insert`` would write (for a caller that writes many rows in one statement)."""
        return self._params(site_id, doc, now, columns)

    def insert(self, tx: Tx, site_id: int, doc: dict, now: int, *, columns: dict | None = None) -> None:
        """columns: values for index columns that are not fields of the document."""
        p = self._params(site_id, doc, now, columns)
        if tx.memo:
            self._touch(tx, site_id, p, p)
        tx.execute(self._insert, p)
        tx.rows[(self.name, site_id, p["id"])] = {c: p[c] for c in self._known}

    def insert_many(self, tx: Tx, site_id: int, docs: Iterable[dict], now: int) -> None:
        """Insert many documents with one executemany (seeding and bulk loads)."""
        rows = [self._params(site_id, doc, now) for doc in docs]
        if tx.memo:
            for p in rows:
                self._touch(tx, site_id, p, p)
        tx.executemany(self._insert, rows)

    def update(self, tx: Tx, site_id: int, doc: dict, now: int, *, old_id: str | None = None,
               expect: dict[str, Any] | None = None, columns: dict | None = None) -> bool:
        """Write doc over the row (renaming it from old_id if given).

        ``expect`` adds column conditions; returns False (and writes nothing) when the row
        no longer matches them, so a concurrent transition loses cleanly.
        """
        keys = tuple(sorted(expect)) if expect else ()
        explicit = tuple(sorted(c for c in columns if c in self.insert_only)) if columns else ()
        p = self._params(site_id, doc, now, columns)
        p.pop("created_at")
        old = p["old_id"] = old_id if old_id is not None else p["id"]
        key = (self.name, site_id, old)
        rows = tx.rows
        prev = rows.get(key)
        changed = None if prev is None else tuple(c for c in self._known if p[c] != prev[c])
        q = self._update_cache.get((keys, explicit, changed))
        if q is None:
            t = self.t
            cond = [t.c.site_id == bindparam("site_id"), t.c.id == bindparam("old_id")]
            cond += [t.c[k] == bindparam(f"expect_{k}") for k in keys]
            if changed is None:
                names = [c for c in self._write_cols
                         if c not in ("site_id", "created_at") and (c not in self.insert_only or c in explicit)]
            else:
                names = [*changed, *explicit, "data"]
            q = _own(Q(update(t).where(and_(*cond)).values({c: bindparam(c) for c in names}), combinable=True))
            self._update_cache[(keys, explicit, changed)] = q
        if expect:
            if tx.pipelined:
                raise RuntimeError("a conditional update needs its rowcount: do it before tx.pipeline()")
            for k, v in expect.items():
                p[f"expect_{k}"] = v
        if tx.memo:
            self._touch(tx, site_id, prev, p)
        n = tx.rowcount(q, p)
        # pipelined (PostgreSQL): the count comes later; the caller holds the row (loaded for update)
        done = n == 1 or (n < 0 and tx.pipelined)
        if prev is not None:
            del rows[key]
        if done:  # the row is this transaction's now (PostgreSQL: locked by the update)
            known = rows[(self.name, site_id, p["id"])] = {c: p[c] for c in self._known}
            if prev is not None and _DOC in prev:  # get answers from memory still: the row as written now
                known[_DOC] = p["data"]
                for k, v in prev.items():
                    if k.startswith(_EXTRA):
                        known[k] = p[k[1:]] if k[1:] in explicit else v  # insert_only: written when named
        return done

    def save(self, tx: Tx, site_id: int, doc: dict, now: int) -> None:
        """Update an existing row that the caller has already loaded in this transaction."""
        if not self.update(tx, site_id, doc, now):
            raise not_found(self.resource, self.id_of(doc))

    def delete(self, tx: Tx, site_id: int, id: str) -> bool:
        prev = tx.rows.pop((self.name, site_id, id), None)
        if tx.memo:
            self._touch(tx, site_id, prev, None)
        return tx.rowcount(self._delete, {"site_id": site_id, "id": id}) == 1


def _own(q: Q) -> Q:
    """A DocTable statement: DocTable keeps ``Tx.rows`` for it (the Tx need not forget the table)."""
    q.writes = None
    return q


def _field(name: str) -> Callable[[dict], Any]:
    """The default extractor of an index column: the document's field of the same name."""
    return lambda d: d.get(name)
