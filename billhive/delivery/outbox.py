"""The delivery outbox shared by webhooks and emails: claim, lease, attempt, retry.

A delivery row (``webhook_deliveries`` / ``email_deliveries``) is written in the same
transaction as the event it delivers. A worker then runs three steps, never holding a
transaction across the network call:

1. **claim** (one short write transaction): take up to ``limit`` due rows of one site
   (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's single writer serialises
   claims), bump ``attempts`` (the attempt's number, also the fencing token), set the lease
   ``claimed_until`` (wall clock) and insert the attempt row as ``in progress``.
2. **deliver** (no transaction): POST / send.
3. **finish** (one write transaction): fill in the attempt row; move the delivery to its
   final status or re-schedule it on the site clock - only if the fence still holds
   (``attempts`` and ``round_start`` unchanged, so a resend or a worker that took over an
   expired lease wins over a late answer).

A worker that dies between 1 and 3 leaves the row claimed; when the lease runs out the row
is due again and another worker delivers it once more (at-least-once: never lost, possibly
duplicated). The abandoned attempt row is then marked as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import Table, bindparam, func, insert, or_, select, text, update

from billhive import sites
from billhive.store import schema as S
from billhive.store.db import Q, Tx

PENDING = ("scheduled", "re_scheduled")
IN_PROGRESS = "in progress"
ABANDONED = "no result recorded: the worker stopped before the answer was saved (lease expired)"


@dataclass
class Claim:
    pk: int
    site_id: int
    event_id: str
    attempt: int  # this attempt's number; with round_start, the fence for finish()
    round_start: int
    attempted_at: int  # site clock
    row: dict[str, Any]  # the table's own columns (endpoint_id, or template and recipient)
    skip: str | None = None  # a reason not to deliver (endpoint disabled); no attempt is made


@dataclass
class Batch:
    site: sites.Site
    claims: list[Claim]
    events: dict[str, str]  # event id -> the stored event document (JSON text)
    context: Any = None  # what the channel loaded in the claim transaction (endpoints...)


@dataclass
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    permanent: bool = False  # retrying cannot help (e.g. SMTP 5xx): fail now


@dataclass
class Outbox:
    deliveries: Table
    attempts: Table
    retry_delays: tuple[int, ...]  # seconds after the previous attempt, one per retry
    done_status: str  # succeeded | sent
    columns: tuple[str, ...]  # channel-specific delivery columns handed to the deliverer
    # the column that splits a site's deliveries into lanes (destinations delivered side by side,
    # see billhive.delivery.lanes): endpoint_id for webhooks; None: one lane per site
    lane: str | None = None
    _q: dict[str, Q] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        d, s = self.deliveries, S.sites
        # literal values, as in the partial "due" index, so both databases use that index
        pending = text(f"{d.name}.{S.PENDING_DELIVERY}")
        lane = (d.c[self.lane],) if self.lane else ()
        self._q["due_lanes"] = Q(
            select(d.c.site_id, *lane).select_from(d.join(s, s.c.pk == d.c.site_id))
            .where(pending,
                   # the site clock, as sites.Site.now computes it
                   d.c.next_attempt_at <= func.coalesce(s.c.tm_now, bindparam("wall")),
                   or_(d.c.claimed_until.is_(None), d.c.claimed_until <= bindparam("wall")))
            .group_by(d.c.site_id, *lane))
        claim = (select(d.c.pk, d.c.event_id, d.c.attempts, d.c.round_start, *(d.c[c] for c in self.columns))
                 .where(d.c.site_id == bindparam("site_id"), pending, d.c.next_attempt_at <= bindparam("now"),
                        or_(d.c.claimed_until.is_(None), d.c.claimed_until <= bindparam("wall"))))
        if self.lane:
            claim = claim.where(d.c[self.lane] == bindparam("lane"))
        self._q["claim"] = Q(claim.order_by(d.c.next_attempt_at, d.c.pk).limit(bindparam("limit"))
                             .with_for_update(skip_locked=True))

    # ---- finding and claiming due work ------------------------------------------------------

    def due_lanes(self, tx: Tx, wall: int) -> list:
        """Lanes with at least one due, unclaimed delivery (one query over the partial index):
        ``(site_id, lane value)`` pairs, or site ids when the outbox has no lane column."""
        rows = tx.all(self._q["due_lanes"], {"wall": wall})
        return [(r[0], r[1]) for r in rows] if self.lane else [r[0] for r in rows]

    def claim(self, tx: Tx, site_id: int, *, wall: float, limit: int, lease: Callable[[sites.Site], float],
              load: Callable[[Tx, sites.Site], Any] | None = None,
              skip: Callable[[Any, dict], str | None] | None = None, lane: Any = None) -> Batch:
        """Claim up to ``limit`` due deliveries of one site (run inside a write transaction), of
        one lane when the outbox has a lane column (``lane``: its value).

        ``load(tx, site)`` loads what the channel needs (its endpoints); ``skip(context, row)``
        names a reason not to deliver a row (no attempt is counted for it).
        """
        d, a = self.deliveries, self.attempts
        site = sites.load(tx, site_id)
        now = site.now(lambda: wall)
        wall_s = int(wall)
        args = {"site_id": site_id, "now": now, "wall": wall_s, "limit": limit}
        if self.lane:
            args["lane"] = lane
        rows = tx.all(self._q["claim"], args)
        if not rows:
            return Batch(site, [], {})
        context = load(tx, site) if load else None
        until = int(math.ceil(wall + lease(site)))
        claims: list[Claim] = []
        for r in rows:
            extra = dict(zip(self.columns, r[4:]))
            reason = skip(context, extra) if skip else None
            attempt = r[2] if reason else r[2] + 1
            claims.append(Claim(r[0], site_id, r[1], attempt, r[3], now, extra, reason))
        live = [c.pk for c in claims if c.skip is None]
        skipped = [c.pk for c in claims if c.skip is not None]
        if live:
            # an attempt whose worker died is closed before the next one starts
            tx.execute(update(a).where(a.c.site_id == site_id, a.c.delivery_pk.in_(live), a.c.error == IN_PROGRESS)
                       .values(error=ABANDONED))
            tx.execute(update(d).where(d.c.site_id == site_id, d.c.pk.in_(live))
                       .values(attempts=d.c.attempts + 1, claimed_until=until, updated_at=now))
            tx.execute(insert(a).values([
                {"site_id": site_id, "delivery_pk": c.pk, "attempt": c.attempt, "attempted_at": now,
                 "status_code": None, "error": IN_PROGRESS, "duration_ms": None}
                for c in claims if c.skip is None]))
        if skipped:
            tx.execute(update(d).where(d.c.site_id == site_id, d.c.pk.in_(skipped)).values(claimed_until=until))
        ev = S.events
        ids = sorted({c.event_id for c in claims})
        events = dict(tx.all(select(ev.c.id, ev.c.data).where(ev.c.site_id == site_id, ev.c.id.in_(ids))))
        return Batch(site, claims, events, context)

    # ---- recording the result ---------------------------------------------------------------

    def finish(self, tx: Tx, claim: Claim, outcome: Outcome | None, *, skip_status: str = "disabled") -> str | None:
        """Record one claim's result; returns the delivery's new status, or None if the fence
        no longer holds (the row was resent, taken over or deleted meanwhile)."""
        d, a = self.deliveries, self.attempts
        now = claim.attempted_at
        if outcome is not None:
            tx.execute(update(a).where(a.c.site_id == claim.site_id, a.c.delivery_pk == claim.pk,
                                       a.c.attempt == claim.attempt)
                       .values(status_code=outcome.status_code, error=None if outcome.ok else outcome.error,
                               duration_ms=outcome.duration_ms))
        values: dict[str, Any] = {"claimed_until": None, "updated_at": now}
        if outcome is None:
            status = skip_status
            values.update(status=status, next_attempt_at=None, last_error=claim.skip)
        else:
            values.update(last_status_code=outcome.status_code, last_error=None if outcome.ok else outcome.error)
            in_round = claim.attempt - claim.round_start
            if outcome.ok:
                status = self.done_status
                values.update(next_attempt_at=None)
            elif outcome.permanent or in_round > len(self.retry_delays):
                status = "failed"
                values.update(next_attempt_at=None)
            else:
                status = "re_scheduled"
                values.update(next_attempt_at=now + self.retry_delays[in_round - 1])
            values["status"] = status
        n = tx.rowcount(update(d).where(d.c.pk == claim.pk, d.c.site_id == claim.site_id,
                                        d.c.attempts == claim.attempt, d.c.round_start == claim.round_start,
                                        d.c.status.in_(PENDING)).values(**values))
        return status if n == 1 else None

    def statuses(self, tx: Tx, site_id: int, event_id: str, *cols: str) -> list[tuple]:
        d = self.deliveries
        return tx.all(select(*(d.c[c] for c in cols), d.c.status)
                      .where(d.c.site_id == site_id, d.c.event_id == event_id).order_by(d.c.pk))

    def requeue(self, tx: Tx, site_id: int, pk: int, now: int) -> None:
        """Start a new round for one delivery: due now, a fresh retry schedule, any claim voided."""
        d = self.deliveries
        tx.execute(update(d).where(d.c.site_id == site_id, d.c.pk == pk).values(
            status="scheduled", round_start=d.c.attempts, next_attempt_at=now, claimed_until=None,
            last_error=None, last_status_code=None, updated_at=now))


def lock_event(tx: Tx, site_id: int, event_id: str) -> dict | None:
    """Lock the event row (the order every delivery transaction takes: event, then deliveries)."""
    from billhive.util.jsonutil import loads

    ev = S.events
    row = tx.one(select(ev.c.data).where(ev.c.site_id == site_id, ev.c.id == event_id).with_for_update())
    return loads(row[0]) if row else None
