"""Per-site API rate limits (site setting ``rate_limit_per_minute``; 0, the default, is unlimited).

A request beyond the limit is answered as Chargebee does: ``429``, type ``operation_failed``,
``api_error_code`` ``api_request_limit_exceeded`` (the official Python SDK 1.x raises it as
``OperationFailedError``), with a ``Retry-After`` header (whole seconds). Every authenticated
request counts - any of the site's keys, reads and writes - and only admitted requests use
up the limit, so a client that waits ``Retry-After`` gets through.

The count is a sliding window: the requests admitted in the current wall-clock minute plus
those of the minute before, weighted by how much of it still lies within the last 60 s. A
request is admitted while that estimate is below the limit.

Where the count lives:
- PostgreSQL: in the database (table ``rate_limits``, one row per limited site, updated by
  one conditional upsert per request, committed without waiting for the WAL flush), so the
  limit holds across every API process.
- SQLite: in the process (billhive serves a SQLite database from one API process). A write
  per request there would take the single writer's time from every site.

Cost: a site without a limit pays one dict lookup per request (its limit is cached for
``Config.cache_ttl`` seconds, so a changed limit takes effect within that time); only a
limited site pays for counting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from sqlalchemy import BigInteger, Float, Integer, bindparam, case, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billhive import sites
from billhive.errors import RateLimited
from billhive.store import schema as S
from billhive.store.db import Database, Q, Tx

MINUTE = 60
R = S.rate_limits
_W = bindparam("window", type_=BigInteger)
_CUR = case((R.c.window_start == _W, R.c.count), else_=0)
_PREV = case((R.c.window_start == _W, R.c.prev_count), (R.c.window_start == _W - MINUTE, R.c.count), else_=0)
# admit and count in one statement: no row is returned when the request is over the limit
_ADMIT = Q(pg_insert(R).values(site_id=bindparam("site_id"), window_start=_W, count=1, prev_count=0)
           .on_conflict_do_update(index_elements=[R.c.site_id],
                                  set_={"count": _CUR + 1, "prev_count": _PREV, "window_start": _W},
                                  where=_PREV * bindparam("weight", type_=Float) + _CUR
                                  < bindparam("limit", type_=Integer))
           .returning(R.c.count))
_ROW = Q(select(R.c.window_start, R.c.count, R.c.prev_count).where(R.c.site_id == bindparam("site_id")))
_SYNC_OFF = Q(text("SELECT set_config('synchronous_commit', 'off', true)"))  # this transaction only


class RateLimiter:
    def __init__(self, db: Database, *, ttl: float, clock: Callable[[], float] = time.time):
        self.db = db
        self.ttl = ttl
        self.clock = clock
        self._limits: dict[int, tuple[float, int]] = {}  # site pk -> (cached until, limit)
        self._local: dict[int, list[int]] = {}  # SQLite: site pk -> [window_start, count, prev_count]

    def unlimited(self, site_pk: int) -> bool:
        """The hot path: True when the site is known (recently) to have no limit."""
        hit = self._limits.get(site_pk)
        return hit is not None and not hit[1] and hit[0] >= time.monotonic()

    async def admit(self, site_pk: int) -> None:
        """Count the request, or raise RateLimited (429) when the site is over its limit."""
        limit = await self._limit(site_pk)
        if not limit:
            return
        now = self.clock()
        window = int(now // MINUTE) * MINUTE
        elapsed = now - window
        if self.db.dialect == "postgresql":
            state = await self.db.write(_count_pg(site_pk, window, elapsed, limit))
        else:
            state = self._count_local(site_pk, window, elapsed, limit)
        if state is not None:
            cur, prev = state
            wait = retry_after(cur, prev, elapsed, limit)
            raise RateLimited(f"Sorry, this site's API rate limit of {limit} requests per minute is exceeded; "
                              f"retry after {wait} seconds", retry_after=wait)

    async def _limit(self, site_pk: int) -> int:
        now = time.monotonic()
        hit = self._limits.get(site_pk)
        if hit is None or hit[0] < now:
            site = await self.db.read(lambda tx: sites.load(tx, site_pk))
            hit = (now + self.ttl, int(site.setting("rate_limit_per_minute") or 0))
            self._limits[site_pk] = hit
        return hit[1]

    def _count_local(self, site_pk: int, window: int, elapsed: float, limit: int) -> tuple[int, int] | None:
        row = self._local.setdefault(site_pk, [window, 0, 0])
        cur, prev = _current(row[0], row[1], row[2], window)
        if prev * _weight(elapsed) + cur >= limit:
            return cur, prev
        row[:] = [window, cur + 1, prev]
        return None


def _count_pg(site_pk: int, window: int, elapsed: float, limit: int) -> Callable[[Tx], tuple[int, int] | None]:
    """None when admitted (and counted); else the window's (count, previous count)."""
    def unit(tx: Tx) -> tuple[int, int] | None:
        tx.execute(_SYNC_OFF)  # a lost count after a crash is harmless: do not wait for the WAL flush
        params = {"site_id": site_pk, "window": window, "weight": _weight(elapsed), "limit": limit}
        if tx.one(_ADMIT, params) is not None:
            return None
        row = tx.one(_ROW, {"site_id": site_pk})
        return _current(row[0], row[1], row[2], window) if row else (limit, 0)
    return unit


def _current(row_window: int, count: int, prev_count: int, window: int) -> tuple[int, int]:
    """(admitted this minute, admitted the minute before) as of ``window``."""
    if row_window == window:
        return count, prev_count
    if row_window == window - MINUTE:
        return 0, count
    return 0, 0


def _weight(elapsed: float) -> float:
    """How much of the previous minute still lies within the last 60 seconds."""
    return (MINUTE - elapsed) / MINUTE


def retry_after(cur: int, prev: int, elapsed: float, limit: int) -> int:
    """Whole seconds until a request would be admitted, if none came meanwhile."""
    if cur < limit and prev:
        # later this minute, once enough of the previous minute has slid out of the window
        wait = MINUTE - elapsed - MINUTE * (limit - cur) / prev
        if wait < MINUTE - elapsed:
            return max(1, math.floor(max(wait, 0.0)) + 1)
    # next minute: this minute's count becomes the weighted one
    wait = MINUTE - elapsed + (MINUTE * (1 - limit / cur) if cur > limit else 0.0)
    return max(1, math.floor(wait) + 1)
