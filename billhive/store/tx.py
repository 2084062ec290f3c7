"""What a unit of work sees: ``Tx`` (its connection) and ``Q`` (statements compiled once).

Statements are SQLAlchemy Core constructs, compiled once per dialect (``Q``) and run on the
driver connection directly: the hot path (collect) pays the driver's cost, not an ORM's.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy.dialects import postgresql as pg_dialects
from sqlalchemy.dialects import sqlite as sqlite_dialects

_DIALECTS = {
    "sqlite": sqlite_dialects.dialect(paramstyle="named"),
    "postgresql": pg_dialects.psycopg.dialect(),
}


class Q:
    """A statement compiled once per dialect. Literal values become default params."""

    __slots__ = ("stmt", "_compiled")

    def __init__(self, stmt: Any):
        self.stmt = stmt
        self._compiled: dict[str, tuple[str, dict]] = {}

    def sql(self, dialect: str) -> tuple[str, dict]:
        c = self._compiled.get(dialect)
        if c is None:
            c = compile_stmt(self.stmt, dialect)
            self._compiled[dialect] = c
        return c


def compile_stmt(stmt: Any, dialect: str) -> tuple[str, dict]:
    compiled = stmt.compile(dialect=_DIALECTS[dialect], compile_kwargs={"render_postcompile": True})
    return compiled.string, dict(compiled.params)


class Tx:
    """One unit of work's view of its connection."""

    __slots__ = ("conn", "dialect", "cur", "db_key", "_pipelined")

    def __init__(self, conn: Any, dialect: str, db_key: str = ""):
        self.conn = conn
        self.dialect = dialect
        self.cur = conn.cursor()
        self.db_key = db_key  # which database (for per-process caches keyed by site)
        self._pipelined = False  # inside pipeline() (PostgreSQL)

    def execute(self, stmt: Any, params: dict | None = None) -> Any:
        if isinstance(stmt, Q):
            sql, defaults = stmt.sql(self.dialect)
        else:
            sql, defaults = compile_stmt(stmt, self.dialect)
        if params:
            defaults = {**defaults, **params} if defaults else params
        cur = self.cur
        cur.execute(sql, defaults)
        return cur

    def executemany(self, stmt: Any, rows: list[dict]) -> None:
        """One statement over many parameter sets (bulk loads: psycopg pipelines them)."""
        if not rows:
            return
        sql, defaults = stmt.sql(self.dialect) if isinstance(stmt, Q) else compile_stmt(stmt, self.dialect)
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
        (in-process) there is nothing to save and the block runs as usual."""
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
        return entered

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        self.tx._pipelined = False
        return self.inner.__exit__(exc_type, exc, tb)


class _Savepoint:
    _n = 0

    def __init__(self, tx: Tx):
        self.tx = tx
        _Savepoint._n += 1
        self.name = f"sp{_Savepoint._n}"

    def __enter__(self) -> _Savepoint:
        self.tx.cur.execute(f"SAVEPOINT {self.name}")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:  # an error goes on up
        if exc_type is None:
            self.tx.cur.execute(f"RELEASE SAVEPOINT {self.name}")
        else:
            self.tx.cur.execute(f"ROLLBACK TO SAVEPOINT {self.name}")
            self.tx.cur.execute(f"RELEASE SAVEPOINT {self.name}")
