"""Site snapshots: everything of one site as one JSON document, and its restore into the same
site (replacing its data) or another site. Called by the admin API (billhive/http/admin_api.py)
and ``billhive site snapshot`` / ``billhive site restore``.

What a snapshot holds is derived from the schema, never hand-listed: every table with a
``site_id`` column (``SITE_TABLES``) and the site row's columns other than its identity
(``SITE_IDENTITY``): settings, currency, the invoice number sequence and the time machine's
state (the site clock). Rows are kept as the store holds them (documents, cards' gateway
tokens, jobs, events, deliveries), so a restored site answers the API exactly as the original.

Restoring:
- refused when the snapshot's format version, schema revision or tables/columns differ from
  this billhive's (``configuration_incompatible``), and while either site's time machine travels;
- one transaction: the target's rows deleted, the snapshot's inserted in bulk (executemany);
- surrogate keys (``pk``) are billhive's own and global per table: restored rows get fresh
  ones in the original order (keyset pagination keeps its order), and the columns that hold
  another row's pk (``PK_REFERENCES``) are mapped to the new values;
- API keys: restored only into the site the snapshot was taken of (same name); into another
  site the target keeps its own keys (a key belongs to one site: they are unique globally).
  The target keeps its name, creation time, test/live kind and download-link key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, select, text, update

from billhive.errors import InvalidState, ParamError
from billhive.runtime import App
from billhive.services import site_admin
from billhive.store import migrate
from billhive.store import schema as S
from billhive.store.db import Q, Tx

FORMAT = "billhive.site_snapshot"
VERSION = 1

# every table holding rows of one site, in the schema's dependency order
SITE_TABLES: tuple[Table, ...] = site_admin.SITE_TABLES
# the site row's columns that stay the target's own; every other column is restored
SITE_IDENTITY = frozenset({"pk", "name", "is_test", "created_at", "download_key", "config_version"})
SITE_COLUMNS: tuple[str, ...] = tuple(str(c.name) for c in S.sites.c if c.name not in SITE_IDENTITY)
# columns holding another table's pk (restored rows get new pks): (table, column) -> referenced table
PK_REFERENCES: dict[tuple[str, str], str] = {
    ("webhook_attempts", "delivery_pk"): "webhook_deliveries",
    ("email_attempts", "delivery_pk"): "email_deliveries",
}
# the tables restored only into the snapshot's own site
OWN_SITE_ONLY = frozenset({"api_keys"})
_BYTES = "$base64"


def schema_fingerprint() -> str:
    """A digest of the site tables and their columns (and the site row's restored columns): a
    snapshot restores only into the same shape."""
    shape = [[t.name, [c.name for c in t.c]] for t in SITE_TABLES] + [["sites", list(SITE_COLUMNS)]]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {_BYTES: base64.b64encode(bytes(value)).decode()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and _BYTES in value:
        return base64.b64decode(value[_BYTES])
    return value


def _order(table: Table) -> list:
    return [table.c.pk] if "pk" in table.c else list(table.primary_key.columns)


class _TableStatements:
    """A site table's statements for snapshots and restores, compiled once (a snapshot reads every
    site table, a restore deletes and inserts them all: compiling them each time cost more than
    running them)."""

    def __init__(self, table: Table):
        cols = tuple(str(c.name) for c in table.c if c.name != "site_id")
        self.rows = (cols, Q(select(*(table.c[c] for c in cols)).where(table.c.site_id == bindparam("site_id"))
                             .order_by(*_order(table))))
        self.delete = Q(delete(table).where(table.c.site_id == bindparam("site_id")))
        self.insert = Q(insert(table))
        if "pk" in table.c:
            self.next_pks = Q(text(f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'pk')) "
                                   "FROM generate_series(1, :n)"))
            self.top_pk = Q(select(func.max(table.c.pk)))


_STATEMENTS = {str(t.name): _TableStatements(t) for t in SITE_TABLES}
_SITE_ROW = Q(select(*(S.sites.c[c] for c in SITE_COLUMNS)).where(S.sites.c.pk == bindparam("pk")))


async def snapshot(app: App, name: str) -> dict[str, Any]:
    """Everything of the site ``name`` as one JSON-ready document, read in one transaction."""
    taken_at = int(app.wall())

    def unit(tx: Tx) -> dict[str, Any]:
        site = site_admin.require(tx, name)
        if site.tm_status == "in_progress":
            raise InvalidState("The site's time machine is travelling: take the snapshot once the travel is over")
        row = tx.one(_SITE_ROW, {"pk": site.pk})
        assert row is not None
        tables = {}
        for table in SITE_TABLES:
            cols, q = _STATEMENTS[table.name].rows
            rows = tx.all(q, {"site_id": site.pk})
            tables[str(table.name)] = {"columns": list(cols), "rows": [[_encode(v) for v in r] for r in rows]}
        return {
            "object": "site_snapshot", "format": FORMAT, "version": VERSION,
            "schema_revision": migrate.head(), "schema": schema_fingerprint(),
            "taken_at": taken_at, "site": {"name": site.name, "settings": dict(zip(SITE_COLUMNS, row))},
            "tables": tables,
        }
    return await app.db.read(unit)


def check(doc: Any) -> None:
    """Refuse a document that is not a snapshot this billhive can restore (ParamError
    ``configuration_incompatible``, naming what differs)."""
    def bad(msg: str) -> ParamError:
        return ParamError(f"snapshot : {msg}", param="snapshot", api_error_code="configuration_incompatible")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"not a billhive site snapshot (no format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise bad(f"format version {doc.get('version')!r}; this billhive restores version {VERSION}")
    if doc.get("schema_revision") != migrate.head() or doc.get("schema") != schema_fingerprint():
        raise bad(f"taken at schema revision {doc.get('schema_revision')!r} ({doc.get('schema')!r}); this "
                  f"billhive is at {migrate.head()!r} ({schema_fingerprint()!r})")
    tables = doc.get("tables")
    site = doc.get("site")
    if not isinstance(tables, dict) or not isinstance(site, dict) or not isinstance(site.get("settings"), dict):
        raise bad("tables and site are required")
    if set(tables) != {t.name for t in SITE_TABLES} or set(site["settings"]) != set(SITE_COLUMNS):
        raise bad("its tables differ from this billhive's")
    for table in SITE_TABLES:
        entry = tables[table.name]
        if not isinstance(entry, dict) or entry.get("columns") != [c.name for c in table.c if c.name != "site_id"] \
                or not isinstance(entry.get("rows"), list):
            raise bad(f"table {table.name}: its columns differ from this billhive's")


def _new_pks(tx: Tx, table: Table, n: int) -> list[int]:
    """``n`` fresh pks of ``table``, ascending, that no other transaction will take."""
    if n == 0:
        return []
    if tx.is_postgres:
        rows = tx.all(_STATEMENTS[table.name].next_pks, {"n": n})
        return sorted(r[0] for r in rows)
    # SQLite: writes are serialized, and a rowid table takes max(rowid) + 1 for the next insert
    top = tx.scalar(_STATEMENTS[table.name].top_pk) or 0
    return list(range(top + 1, top + 1 + n))


async def restore(app: App, name: str, doc: Any) -> dict[str, Any]:
    """Replace the data of site ``name`` by the snapshot's, in one transaction. Returns what was
    restored: the site's name, the snapshot's site, rows per table, whether keys were restored."""
    check(doc)

    def unit(tx: Tx) -> dict[str, Any]:
        site = site_admin.require(tx, name)
        if site.tm_status == "in_progress":
            raise InvalidState("The site's time machine is travelling: restore once the travel is over")
        own = doc["site"].get("name") == site.name
        settings = dict(doc["site"]["settings"])
        if settings.get("tm_status") == "in_progress":
            raise ParamError("snapshot : taken while the time machine travelled", param="snapshot",
                             api_error_code="configuration_incompatible")
        skipped = set() if own else OWN_SITE_ONLY
        for table in reversed(SITE_TABLES):
            if table.name not in skipped:
                tx.execute(_STATEMENTS[table.name].delete, {"site_id": site.pk})
        pk_maps: dict[str, dict[int, int]] = {}
        counts: dict[str, int] = {}
        referenced = set(PK_REFERENCES.values())
        for table in sorted(SITE_TABLES, key=lambda t: t.name not in referenced):  # referenced pks mapped first
            if table.name in skipped:
                continue
            entry = doc["tables"][table.name]
            cols = entry["columns"]
            rows = [dict(zip(cols, (_decode(v) for v in r))) for r in entry["rows"]]
            if "pk" in table.c:
                new = _new_pks(tx, table, len(rows))
                pk_maps[table.name] = {r["pk"]: p for r, p in zip(rows, new)}
                for r, p in zip(rows, new):
                    r["pk"] = p
            for (tname, col), target in PK_REFERENCES.items():
                if tname == table.name:
                    mapping = pk_maps[target]
                    for r in rows:
                        r[col] = mapping.get(r[col], r[col])
            for r in rows:
                r["site_id"] = site.pk
            tx.executemany(_STATEMENTS[table.name].insert, rows)
            counts[str(table.name)] = len(rows)
        tx.execute(update(S.sites).where(S.sites.c.pk == site.pk)
                   .values(**settings, config_version=S.sites.c.config_version + 1))
        return {"object": "site_restore", "name": site.name, "snapshot_of": doc["site"].get("name"),
                "keys_restored": own, "rows": counts}
    return await app.db.write(unit)


def site_pk(tx: Tx, name: str) -> int:
    """The pk of the site ``name`` (NotFound when there is none)."""
    return site_admin.require(tx, name).pk
