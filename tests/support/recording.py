"""A driver cursor that records the SQL a unit runs (``tx.cur = rec = RecordingCursor(tx.cur)``)."""

from __future__ import annotations

from typing import Any


class RecordingCursor:
    """A cursor that records the SQL it runs (and is otherwise the driver's)."""

    def __init__(self, cur: Any):
        self._cur, self.sql = cur, []

    def execute(self, sql: str, params: Any = None) -> RecordingCursor:
        self.sql.append(sql)
        self._cur.execute(sql, params)
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)
