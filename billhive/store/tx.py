"""What a unit of work sees: ``Tx`` (its connection) and ``Q`` (statements compiled once).

Statements are SQLAlchemy Core constructs, compiled once per dialect (``Q``) and run on the
driver connection directly: the hot path (collect) pays the driver's cost, not an ORM's.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from sqlalchemy import Delete, Insert, Update
from sqlalchemy.dialects import postgresql as pg_dialects
from sqlalchemy.dialects import sqlite as sqlite_dialects

_DIALECTS = {
    "sqlite": sqlite_dialects.dialect(paramstyle="named"),
    "postgresql": pg_dialects.psycopg.dialect(),
}


class Q:
    """A statement compiled once per dialect. Literal values become default params.

    ``writes``: the table an INSERT, UPDATE or DELETE changes (``Tx.rows`` forgets that table's
    rows when it runs); DocTable's own statements set it to None (it keeps ``Tx.rows`` itself).

    ``combinable``: the table of a write whose result nobody reads and which reads no other table
    (an INSERT of VALUES, an UPDATE of one row by its key): inside ``Tx.pipeline()`` on
    PostgreSQL it may go to the server combined with others into one statement (see there)."""

    __slots__ = ("stmt", "_compiled", "writes", "combinable")

    def __init__(self, stmt: Any, *, combinable: bool = False):
        self.stmt = stmt
        self._compiled: dict[str, tuple[str, dict]] = {}
        self.writes: str | None = _written_table(stmt)
        self.combinable: str | None = _written_table(stmt) if combinable else None

    def sql(self, dialect: str) -> tuple[str, dict]:
        c = self._compiled.get(dialect)
        if c is None:
            c = compile_stmt(self.stmt, dialect)
            self._compiled[dialect] = c
        return c


def compile_stmt(stmt: Any, dialect: str) -> tuple[str, dict]:
    compiled = stmt.compile(dialect=_DIALECTS[dialect], compile_kwargs={"render_postcompile": True})
    return compiled.string, dict(compiled.params)


def _written_table(stmt: Any) -> str | None:
    if isinstance(stmt, (Insert, Update, Delete)):
        return getattr(stmt.table, "name", None) or "?"
    return None


# the tables whose rows ``Tx.rows`` may know (DocTable registers its table when it is made)
ROW_TABLES: set[str] = set()


class Tx:
    """One unit of work's view of its connection.

    ``rows``: the stored column values of document rows this unit has loaded or written, by
    (table, site_id, id), kept by ``DocTable`` so that an update writes only the columns that
    changed (an UPDATE that names a column rewrites every index holding it). It must only ever
    say what the row holds now, so it is forgotten whenever that may no longer be true: a unit
    starts (``forget_rows``: the batch runner), a savepoint rolls back, or a statement other than
    DocTable's own writes to the table. On PostgreSQL only rows this transaction holds locked
    (loaded ``for_update``, inserted or updated) are kept: another transaction may change the rest.

    ``memo``: results of reads of a document table by one column's value (e.g. a subscription's
    unpaid invoices), kept by ``DocTable.remember`` - by (table, column, site_id, value), each a
    dict of results by what was read - and forgotten as ``rows`` is, and also whenever a DocTable
    write to the table gives a row that value or takes it away (``DocTable.recall``).
    """

    __slots__ = ("conn", "dialect", "cur", "db_key", "_pipelined", "rows", "memo", "_combined", "deliveries")

    def __init__(self, conn: Any, dialect: str, db_key: str = ""):
        self.conn = conn
        self.dialect = dialect
        self.cur = conn.cursor()
        self.db_key = db_key  # which database (for per-process caches keyed by site)
        self._pipelined = False  # inside pipeline() (PostgreSQL)
        self.rows: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.memo: dict[tuple[str, str, int, Any], dict[str, Any]] = {}
        # inside pipeline() (PostgreSQL): combinable writes not sent yet, (table, sql, params)
        self._combined: list[tuple[str, str, dict]] | None = None
        # the running unit recorded webhook or email deliveries that are due (the outbox says so):
        # once it commits, the store rings the delivery loops (``Store.on_deliveries``)
        self.deliveries = False

    def forget_rows(self, table: str | None = None) -> None:
        """Forget the rows ``rows`` knows (of one table, or all)."""
        if table is None or table == "?":
            self.rows.clear()
            self.memo.clear()
        elif table in ROW_TABLES:  # no other table has rows here: nothing to scan for
            if self.memo:
                for memo_key in [k for k in self.memo if k[0] == table]:
                    del self.memo[memo_key]
            for key in [k for k in self.rows if k[0] == table]:
                del self.rows[key]

    def execute(self, stmt: Any, params: dict | None = None) -> Any:
        if isinstance(stmt, Q):
            sql, defaults = stmt.sql(self.dialect)
            if stmt.writes is not None and (self.rows or self.memo):
                self.forget_rows(stmt.writes)
        else:
            sql, defaults = compile_stmt(stmt, self.dialect)
            if (self.rows or self.memo) and (written := _written_table(stmt)) is not None:
                self.forget_rows(written)
        if params:
            defaults = {**defaults, **params} if defaults else params
        combined = self._combined
        if combined is not None:
            if not isinstance(stmt, Q) or (table := stmt.combinable) is None:
                self.flush()  # anything else (a read...) sees the writes made before it
            else:
                # one statement per table: a second write to a table held waits for the first (even
                # two inserts: one statement's new rows would take their keys in no given order)
                if any(t == table for t, _, _ in combined):
                    self.flush()
                combined.append((table, sql, defaults))  # flush() empties the list in place
                return _NOT_YET
        cur = self.cur
        cur.execute(sql, defaults)
        return cur

    def flush(self) -> None:
        """Send the combinable writes held inside ``pipeline()`` (one statement), if any."""
        held = self._combined
        if not held:
            return
        combined = held[:]
        held.clear()
        if len(combined) == 1:
            self.cur.execute(combined[0][1], combined[0][2])
            return
        sql, params = _combine([(s, p) for _, s, p in combined])
        self.cur.execute(sql, params)

    def executemany(self, stmt: Any, rows: list[dict]) -> None:
        """One statement over many parameter sets (bulk loads: psycopg pipelines them)."""
        if not rows:
            return
        self.flush()
        sql, defaults = stmt.sql(self.dialect) if isinstance(stmt, Q) else compile_stmt(stmt, self.dialect)
        written = stmt.writes if isinstance(stmt, Q) else _written_table(stmt)
        if (self.rows or self.memo) and written is not None:
            self.forget_rows(written)
        if not defaults.keys() <= rows[0].keys():  # values the statement carries itself (literals)
            rows = [{**defaults, **r} for r in rows]
        self.cur.executemany(sql, rows)

    def one(self, stmt: Any, params: dict | None = None) -> tuple | None:
        return self.execute(stmt, params).fetchone()

    def all(self, stmt: Any, params: dict | None = None) -> list[tuple]:
        return self.execute(stmt, params).fetchall()

    def scalar(self, stmt: Any, params: dict | None = None) -> Any:
        row = self.execute(stmt, params).fetchone()
        return row[0] if row else None

    def rowcount(self, stmt: Any, params: dict | None = None) -> int:
        return self.execute(stmt, params).rowcount

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def pipelined(self) -> bool:
        """Inside ``pipeline()`` on PostgreSQL: results (rowcount) arrive only when it ends."""
        return self._pipelined

    def pipeline(self) -> Any:
        """``with tx.pipeline():`` - on PostgreSQL, statements inside are sent without waiting
        for each answer (one round trip for the lot); errors surface when the block ends.
        Inside, do not rely on a statement's result (rowcount) before the block ends. On SQLite
        (in-process) there is nothing to save and the block runs as usual.

        On PostgreSQL, consecutive ``combinable`` writes (``Q``; DocTable's inserts and updates),
        each to a different table, are also sent as one statement (data-modifying ``WITH``
        clauses: ``WITH c0 AS (UPDATE ...), c1 AS (INSERT ...) INSERT ...``): one parse, plan and
        driver call instead of several. They run on one snapshot and see none of each other's
        changes, which is why only writes that read no other table combine, and a second write to
        a table already held (even an insert after an insert: the rows of one statement take
        their keys, and so their order, in no given order), any other statement, a savepoint and
        the block's end send what is held first: no statement takes effect before one made
        earlier that it could depend on."""
        if self.dialect == "postgresql" and not self._pipelined:
            return _Pipeline(self)
        return contextlib.nullcontext()

    def savepoint(self) -> _Savepoint:
        """``with tx.savepoint():`` - a failure inside rolls back only what the block did."""
        return _Savepoint(self)


class _Pipeline:
    """psycopg's ``conn.pipeline()``, and the Tx knowing it is inside one."""

    __slots__ = ("tx", "inner")

    def __init__(self, tx: Tx):
        self.tx = tx
        self.inner = tx.conn.pipeline()

    def __enter__(self) -> Any:
        entered = self.inner.__enter__()
        self.tx._pipelined = True
        self.tx._combined = []
        return entered

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        tx = self.tx
        try:
            if exc_type is None:
                tx.flush()
        finally:
            tx._combined = None
            tx._pipelined = False
        return self.inner.__exit__(exc_type, exc, tb)


class _NotYet:
    """What ``Tx.execute`` answers for a write held to be combined: its result is not known yet."""

    rowcount = -1


_NOT_YET = _NotYet()
_PARAM = re.compile(r"%\((\w+)\)s")
_COMBINED: dict[tuple[str, ...], tuple[str, tuple[tuple[str, ...], ...]]] = {}


def _combine(parts: list[tuple[str, dict]]) -> tuple[str, dict]:
    """Several writes as one PostgreSQL statement: each but the last a ``WITH`` clause, each
    statement's parameters renamed apart (``c<i>_<name>``)."""
    key = tuple(sql for sql, _ in parts)
    cached = _COMBINED.get(key)
    if cached is None:
        texts, names = [], []
        for i, (sql, _) in enumerate(parts):
            texts.append(_PARAM.sub(f"%(c{i}_\\1)s", sql))
            names.append(tuple(dict.fromkeys(_PARAM.findall(sql))))
        text = "WITH " + ", ".join(f"c{i} AS ({t})" for i, t in enumerate(texts[:-1])) + " " + texts[-1]
        cached = (text, tuple(names))
        if len(_COMBINED) < 1024:  # the shapes a unit makes are few
            _COMBINED[key] = cached
    text, all_names = cached
    params = {f"c{i}_{n}": p[n] for i, ((_, p), ns) in enumerate(zip(parts, all_names, strict=True)) for n in ns}
    return text, params


class _Savepoint:
    _n = 0

    def __init__(self, tx: Tx):
        self.tx = tx
        _Savepoint._n += 1
        self.name = f"sp{_Savepoint._n}"

    def __enter__(self) -> _Savepoint:
        self.tx.flush()
        self.tx.cur.execute(f"SAVEPOINT {self.name}")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:  # an error goes on up
        if exc_type is None:
            self.tx.flush()
            self.tx.cur.execute(f"RELEASE SAVEPOINT {self.name}")
        else:
            if self.tx._combined:
                self.tx._combined.clear()  # what the block held is undone with it
            self.tx.rows.clear()  # what they say may have been undone
            self.tx.memo.clear()
            self.tx.cur.execute(f"ROLLBACK TO SAVEPOINT {self.name}")
            self.tx.cur.execute(f"RELEASE SAVEPOINT {self.name}")
