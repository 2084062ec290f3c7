"""Statements with an ``IN (...)`` list of bound values, compiled once per size bucket.

A list of n values is padded to the next power of two by repeating its last value (IN is a set:
the result is the same), so a statement built for a list compiles at most ~7 times however the
lists' lengths vary (SQL compilation costs milliseconds; a time travel's groups vary in size)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam

from billhive.store.db import Q


def bucket(n: int) -> int:
    size = 1
    while size < n:
        size *= 2
    return size


class InList:
    """``InList(lambda values: <statement using values in an IN>, "name")``; ``q, params = it(values)``."""

    def __init__(self, build: Callable[[list[Any]], Any], name: str, *, forgets_rows: bool = True):
        """``forgets_rows=False``: a write to a table no DocTable keeps rows of (``Q.writes``)."""
        self.build = build
        self.name = name
        self.forgets_rows = forgets_rows
        self._by_size: dict[int, Q] = {}

    def __call__(self, values: Sequence[Any], params: dict | None = None) -> tuple[Q, dict]:
        if not values:
            raise ValueError("an IN list needs at least one value")
        size = bucket(len(values))
        q = self._by_size.get(size)
        if q is None:
            q = self._by_size[size] = Q(self.build([bindparam(f"{self.name}{i}") for i in range(size)]))
            if not self.forgets_rows:
                q.writes = None
        padded = [*values, *([values[-1]] * (size - len(values)))]
        return q, {**(params or {}), **{f"{self.name}{i}": v for i, v in enumerate(padded)}}
