"""The events outbox: events and their deliveries recorded in the change's own transaction
(``record``), and the delivery rows' life, shared by webhooks and emails: claim, lease, attempt,
retry.

``record`` writes the event (the API's representation, ``GET /events/{id}``) and, in the same
transaction, one delivery row per webhook endpoint that wants the event type and one email
delivery when the site mails that type. ``requeue`` starts a new round of webhook deliveries
for an event (``POST /events/{id}/resend``).

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

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, or_, select, text, update

from billhive import sites, webhook_endpoints
from billhive.errors import InvalidRequest
from billhive.store import schema as S
from billhive.store.db import Q, Tx
from billhive.store.docs import DocTable
from billhive.store.inlist import InList
from billhive.util.ids import event_id
from billhive.util.jsonutil import dumps, loads
from billhive.work.origin import Origin

PENDING = ("scheduled", "re_scheduled")
HELD = "held"  # events.webhook_status column of an event held for its charge's settlement (``record``)
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
    _in_lists: dict[str, InList] = field(default_factory=dict, repr=False)  # statuses_of, by columns

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
        a = self.attempts
        self._q["attempt"] = Q(insert(a).values({c: bindparam(c) for c in (
            "site_id", "delivery_pk", "attempt", "attempted_at", "status_code", "error", "duration_ms")}))
        self._q["attempt_result"] = Q(
            update(a).where(a.c.site_id == bindparam("site_id"), a.c.delivery_pk == bindparam("delivery_pk"),
                            a.c.attempt == bindparam("attempt"))
            .values(status_code=bindparam("status_code"), error=bindparam("error"),
                    duration_ms=bindparam("duration_ms")))
        # the fence: the attempt and round the claim took, the delivery still pending
        fenced = update(d).where(d.c.pk == bindparam("pk"), d.c.site_id == bindparam("site_id"),
                                 d.c.attempts == bindparam("attempt"), d.c.round_start == bindparam("round_start"),
                                 or_(*(d.c.status == p for p in PENDING)))  # (an IN list needs values to compile)
        self._q["finish"] = Q(fenced.values(
            claimed_until=None, updated_at=bindparam("updated_at"), status=bindparam("new_status"),
            next_attempt_at=bindparam("next_attempt_at"), last_status_code=bindparam("last_status_code"),
            last_error=bindparam("last_error")))
        self._q["finish_skipped"] = Q(fenced.values(
            claimed_until=None, updated_at=bindparam("updated_at"), status=bindparam("new_status"),
            next_attempt_at=None, last_error=bindparam("last_error")))
        # statements over a claim's deliveries (their pks; store/inlist.py: compiled once per size bucket)
        site = d.c.site_id == bindparam("site_id")
        self._abandon = InList(lambda pks: update(a).where(a.c.site_id == bindparam("site_id"),
                                                            a.c.delivery_pk.in_(pks),
                                                            a.c.error == bindparam("in_progress"))
                               .values(error=bindparam("error")), "pk")
        self._lease = InList(lambda pks: update(d).where(site, d.c.pk.in_(pks)).values(
            attempts=d.c.attempts + 1, claimed_until=bindparam("claimed_until"), updated_at=bindparam("updated_at")),
            "pk")
        self._lease_skipped = InList(lambda pks: update(d).where(site, d.c.pk.in_(pks))
                                     .values(claimed_until=bindparam("claimed_until")), "pk")

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
        flush(tx)
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
            tx.execute(*self._abandon(live, {"site_id": site_id, "error": ABANDONED, "in_progress": IN_PROGRESS}))
            tx.execute(*self._lease(live, {"site_id": site_id, "claimed_until": until, "updated_at": now}))
            tx.executemany(self._q["attempt"], [
                {"site_id": site_id, "delivery_pk": c.pk, "attempt": c.attempt, "attempted_at": now,
                 "status_code": None, "error": IN_PROGRESS, "duration_ms": None}
                for c in claims if c.skip is None])
        if skipped:
            tx.execute(*self._lease_skipped(skipped, {"site_id": site_id, "claimed_until": until}))
        ids = sorted({c.event_id for c in claims})
        events = dict(tx.all(*_EVENTS_IN(ids, {"site_id": site_id})))
        return Batch(site, claims, events, context)

    # ---- recording the result ---------------------------------------------------------------

    def finish(self, tx: Tx, claim: Claim, outcome: Outcome | None, *, skip_status: str = "disabled") -> str | None:
        """Record one claim's result; returns the delivery's new status, or None if the fence
        no longer holds (the row was resent, taken over or deleted meanwhile)."""
        now = claim.attempted_at
        fence = {"pk": claim.pk, "site_id": claim.site_id, "attempt": claim.attempt,
                 "round_start": claim.round_start, "updated_at": now}
        if outcome is None:
            status = skip_status
            n = tx.rowcount(self._q["finish_skipped"], {**fence, "new_status": status, "last_error": claim.skip})
            return status if n == 1 else None
        tx.execute(self._q["attempt_result"], {
            "site_id": claim.site_id, "delivery_pk": claim.pk, "attempt": claim.attempt,
            "status_code": outcome.status_code, "error": None if outcome.ok else outcome.error,
            "duration_ms": outcome.duration_ms})
        in_round = claim.attempt - claim.round_start
        next_attempt_at = None
        if outcome.ok:
            status = self.done_status
        elif outcome.permanent or in_round > len(self.retry_delays):
            status = "failed"
        else:
            status = "re_scheduled"
            next_attempt_at = now + self.retry_delays[in_round - 1]
        n = tx.rowcount(self._q["finish"], {**fence, "new_status": status, "next_attempt_at": next_attempt_at,
                                            "last_status_code": outcome.status_code,
                                            "last_error": None if outcome.ok else outcome.error})
        return status if n == 1 else None

    def statuses(self, tx: Tx, site_id: int, event_id: str, *cols: str) -> list[tuple]:
        flush(tx)
        key = "statuses " + ",".join(cols)
        q = self._q.get(key)
        if q is None:
            d = self.deliveries
            q = self._q[key] = Q(select(*(d.c[c] for c in cols), d.c.status)
                                 .where(d.c.site_id == bindparam("site_id"), d.c.event_id == bindparam("event_id"))
                                 .order_by(d.c.pk))
        return tx.all(q, {"site_id": site_id, "event_id": event_id})

    def statuses_of(self, tx: Tx, site_id: int, event_ids: list[str], *cols: str) -> dict[str, list[tuple]]:
        """``statuses`` of several events in one read: by event id, each in delivery order."""
        flush(tx)
        key = "statuses_of " + ",".join(cols)
        of = self._in_lists.get(key)
        if of is None:
            d = self.deliveries
            of = self._in_lists[key] = InList(
                lambda ids: select(d.c.event_id, *(d.c[c] for c in cols), d.c.status)
                .where(d.c.site_id == bindparam("site_id"), d.c.event_id.in_(ids)).order_by(d.c.pk), "event_id")
        out: dict[str, list[tuple]] = {}
        for r in tx.all(*of(event_ids, {"site_id": site_id})):
            out.setdefault(r[0], []).append(tuple(r[1:]))
        return out

    def requeue(self, tx: Tx, site_id: int, pk: int, now: int) -> None:
        """Start a new round for one delivery: due now, a fresh retry schedule, any claim voided."""
        d = self.deliveries
        tx.execute(update(d).where(d.c.site_id == site_id, d.c.pk == pk).values(
            status="scheduled", round_start=d.c.attempts, next_attempt_at=now, claimed_until=None,
            last_error=None, last_status_code=None, updated_at=now))


def lock_event(tx: Tx, site_id: int, event_id: str) -> dict | None:
    """Lock the event row (the order every delivery transaction takes: event, then deliveries)."""
    flush(tx)
    row = tx.one(_LOCK_EVENT, {"site_id": site_id, "id": event_id})
    return loads(row[0]) if row else None


def lock_events(tx: Tx, site_id: int, event_ids: list[str]) -> dict[str, dict]:
    """Lock several event rows in one statement, in id order (the order every worker takes them, as
    ``lock_event`` one at a time in sorted order would): the events found, by id."""
    flush(tx)
    ids = sorted(set(event_ids))
    return {r[0]: loads(r[1]) for r in tx.all(*_EVENTS_LOCKED(ids, {"site_id": site_id}))}


def _events_in(ids: list) -> Any:
    """(id, data) of a site's events ``ids``, in id order."""
    return (select(S.events.c.id, S.events.c.data)
            .where(S.events.c.site_id == bindparam("site_id"), S.events.c.id.in_(ids)).order_by(S.events.c.id))


_EVENTS_IN = InList(_events_in, "event_id")
_EVENTS_LOCKED = InList(lambda ids: _events_in(ids).with_for_update(), "event_id")


# ---- the two outboxes ----------------------------------------------------------------------------

EVENTS = DocTable(S.events, "event")
# Chargebee's webhook retry schedule (7 retries after the first attempt, on the site clock)
WEBHOOK_RETRY_DELAYS = (2 * 60, 6 * 60, 30 * 60, 3600, 5 * 3600, 86400, 2 * 86400)
EMAIL_RETRY_DELAYS = (5 * 60, 30 * 60, 2 * 3600, 6 * 3600, 86400)
WEBHOOKS = Outbox(S.webhook_deliveries, S.webhook_attempts, WEBHOOK_RETRY_DELAYS, "succeeded", ("endpoint_id",),
                  lane="endpoint_id")
EMAILS = Outbox(S.email_deliveries, S.email_attempts, EMAIL_RETRY_DELAYS, "sent", ("template", "recipient"))

_WEBHOOK_DELIVERY = Q(insert(S.webhook_deliveries).values(
    {c: bindparam(c) for c in ("site_id", "event_id", "endpoint_id", "status", "attempts", "round_start",
                               "next_attempt_at", "created_at", "updated_at")}))
_EMAIL_DELIVERY = Q(insert(S.email_deliveries).values(
    {c: bindparam(c) for c in ("site_id", "event_id", "template", "recipient", "status", "attempts",
                               "round_start", "next_attempt_at", "created_at", "updated_at")}))


def record(tx: Tx, site: sites.Site, origin: Origin, now: int, event_type: str, content: dict, *,
           held: bool = False) -> dict:
    """Record an event of ``site`` at ``now`` with its deliveries; returns the event as the API shows it.

    ``held``: the event stands for a state a charge made right after commit settles (a
    subscription's first invoice, a renewal): its deliveries are not due (``next_attempt_at``
    NULL) and its row is marked ``HELD`` until ``release`` — in the settlement's transaction —
    puts the settled resources in it and makes them due. The charge is recorded ``in_progress``
    in this same transaction, so a crash before the settlement leaves it to recovery, whose
    settlement releases the event: delivered once, never lost."""
    eid = event_id()
    endpoints = webhook_endpoints.cached(tx, site.pk, site.config_version)
    wanted = [e for e in endpoints if e.wants(event_type)]
    if origin.skip_actions or origin.skip_webhooks:
        webhook_status = "skipped"
        per_endpoint = [{"id": e.id, "webhook_status": "skipped"} for e in wanted]
    elif wanted:
        webhook_status = "scheduled"
        per_endpoint = [{"id": e.id, "webhook_status": "scheduled"} for e in wanted]
    else:
        webhook_status = "not_configured"
        per_endpoint = []
    recipient = None
    if origin.skip_actions or origin.skip_emails:
        email_status = "skipped"
    elif (site.setting("email_enabled") and event_type in site.setting("email_events")
          and (recipient := _email_recipient(tx, site.pk, content))):
        email_status = "scheduled"
    else:
        email_status = "not_applicable"
    event = {
        "id": eid,
        "occurred_at": now,
        "source": origin.source,
        "object": "event",
        "api_version": "v1",
        "event_type": event_type,
        "webhook_status": webhook_status,
        "webhooks": per_endpoint,
        "content": content,
    }
    if origin.user:
        event["user"] = origin.user
    if origin.origin_json:
        event["origin"] = origin.origin_json  # billhive extension: the request-origin headers
    columns = {"email_status": email_status, **({"webhook_status": HELD} if held else {})}
    due = None if held else now
    webhooks = [{"site_id": site.pk, "event_id": eid, "endpoint_id": e.id, "status": "scheduled", "attempts": 0,
                 "round_start": 0, "next_attempt_at": due, "created_at": now, "updated_at": now}
                for e in wanted] if webhook_status == "scheduled" else []
    email = {"site_id": site.pk, "event_id": eid, "template": event_type, "recipient": recipient,
             "status": "scheduled", "attempts": 0, "round_start": 0, "next_attempt_at": due, "created_at": now,
             "updated_at": now} if email_status == "scheduled" else None
    if due is not None and (webhooks or email is not None):
        tx.deliveries = True  # once committed, the delivery loops are rung (Store.on_deliveries)
    buffer = _BUFFERS.get(id(tx))
    if buffer is not None and buffer.tx is tx:
        buffer.entries.append((EVENTS.row_params(site.pk, event, now, columns), webhooks, email))
        return event
    EVENTS.insert(tx, site.pk, event, now, columns=columns)
    for row in webhooks:
        tx.execute(_WEBHOOK_DELIVERY, row)
    if email is not None:
        tx.execute(_EMAIL_DELIVERY, email)
    return event


# ---- a unit's events written together -------------------------------------------------------------

@dataclass
class _Buffer:
    tx: Tx
    # (the event row's values, its webhook delivery rows, its email delivery row), in recording order
    entries: list[tuple[dict, list[dict], dict | None]] = field(default_factory=list)
    written: int = 0  # entries[:written] are in the tables already (``flush``)


_BUFFERS: dict[int, _Buffer] = {}  # by id(tx); an entry holds its Tx, so the id is not reused meanwhile
_MULTI_MAX = 100  # rows to one INSERT (SQLite allows 32,766 parameters, PostgreSQL 65,535)
_MULTI: dict[tuple, str] = {}  # (dialect, table, columns, rows) -> the INSERT


@contextlib.contextmanager
def buffered(tx: Tx) -> Iterator[None]:
    """Inside the block, the events ``record`` writes in ``tx`` (with their deliveries) are kept and
    written together when the block ends - one multi-row INSERT per table - or earlier, before
    anything here reads events or deliveries in ``tx`` (``flush``). Whoever rolls back a savepoint
    inside the block must drop the events recorded in it: ``mark`` before it, ``rollback_to`` after
    (billhive/work/scheduler.py, a job's savepoint). Nested blocks share the outer one's buffer."""
    key = id(tx)
    if key in _BUFFERS:
        yield
        return
    _BUFFERS[key] = _Buffer(tx)
    try:
        yield
        flush(tx)
    finally:
        del _BUFFERS[key]


def mark(tx: Tx) -> tuple[int, int] | None:
    """Where ``tx``'s buffer stands (None when ``record`` writes at once)."""
    buffer = _BUFFERS.get(id(tx))
    return (len(buffer.entries), buffer.written) if buffer is not None else None


def rollback_to(tx: Tx, at: tuple[int, int] | None) -> None:
    """A savepoint opened at ``at`` (``mark``) rolled back: the events recorded since are dropped,
    and those flushed inside it (undone with it) are written again at the next flush."""
    buffer = _BUFFERS.get(id(tx))
    if buffer is None or at is None:
        return
    del buffer.entries[at[0]:]
    buffer.written = min(buffer.written, at[1])


def _unwritten(tx: Tx, event_id: str) -> bool:
    """Whether the event is in ``tx``'s buffer and not written yet."""
    buffer = _BUFFERS.get(id(tx))
    return buffer is not None and any(e["id"] == event_id for e, _, _ in buffer.entries[buffer.written:])


def flush(tx: Tx) -> None:
    """Write the buffered events of ``tx`` and their deliveries now (see ``buffered``)."""
    buffer = _BUFFERS.get(id(tx))
    if buffer is None or buffer.written == len(buffer.entries):
        return
    todo = buffer.entries[buffer.written:]
    _insert_rows(tx, S.events, [e for e, _, _ in todo])
    _insert_rows(tx, S.webhook_deliveries, [w for _, ws, _ in todo for w in ws])
    _insert_rows(tx, S.email_deliveries, [m for _, _, m in todo if m is not None])
    buffer.written = len(buffer.entries)


def _insert_rows(tx: Tx, table: Table, rows: list[dict]) -> None:
    """One multi-row INSERT per ``_MULTI_MAX`` rows, in their order (ids ascending as recorded).
    The SQL is written here, not compiled by SQLAlchemy: a compilation costs milliseconds and the
    number of rows varies from one unit to the next. New rows make nothing ``Tx.rows`` knows
    untrue, so the statement goes to the cursor directly."""
    for start in range(0, len(rows), _MULTI_MAX):
        chunk = rows[start:start + _MULTI_MAX]
        names = tuple(chunk[0])
        key = (tx.dialect, table.name, names, len(chunk))
        sql = _MULTI.get(key)
        if sql is None:
            mark = (lambda n: f":{n}") if tx.dialect == "sqlite" else (lambda n: f"%({n})s")
            values = ", ".join("(" + ", ".join(mark(f"{c}_{i}") for c in names) + ")" for i in range(len(chunk)))
            sql = _MULTI[key] = (f'INSERT INTO "{table.name}" (' + ", ".join(f'"{c}"' for c in names)
                                 + f") VALUES {values}")
        tx.cur.execute(sql, {f"{c}_{i}": row[c] for i, row in enumerate(chunk) for c in names})


_EV = S.events
_LOCK_EVENT = Q(select(_EV.c.data).where(_EV.c.site_id == bindparam("site_id"), _EV.c.id == bindparam("id"))
                .with_for_update())
# no ORDER BY (sorted here): ordered, SQLite walks the site's (site_id, occurred_at) index over every event
# instead of the few held ones' (site_id, webhook_status) - 38% of a time travel's writer time on a plain site
_HELD = Q(select(_EV.c.id, _EV.c.data, _EV.c.occurred_at).where(_EV.c.site_id == bindparam("site_id"),
                                                                 _EV.c.webhook_status == HELD))
_HELD_LIKE = Q(_HELD.stmt.where(_EV.c.data.like(bindparam("pattern"))))
_RELEASE_EVENT = Q(update(_EV).where(_EV.c.site_id == bindparam("site_id"), _EV.c.id == bindparam("id")).values(
    data=bindparam("data"), webhook_status=bindparam("webhook_status"), updated_at=bindparam("updated_at")))
_RELEASE_DELIVERIES = tuple(
    Q(update(d).where(d.c.site_id == bindparam("site_id"), d.c.event_id == bindparam("event_id"),
                      d.c.next_attempt_at.is_(None), or_(*(d.c.status == p for p in PENDING)))
      .values(next_attempt_at=bindparam("next_attempt_at"), updated_at=bindparam("updated_at")))
    for d in (WEBHOOKS.deliveries, EMAILS.deliveries))


def _plain_token(invoice_id: str) -> bool:
    """The id's JSON token is the same in any serializer (plain printable ASCII, nothing escaped)."""
    return invoice_id.isascii() and invoice_id.isprintable() and not any(c in invoice_id for c in '"\\/')


_HELD_MANY = InList(lambda patterns: _HELD.stmt.where(or_(*(_EV.c.data.like(p) for p in patterns)))
                    .with_for_update(), "pattern")
_HELD_ALL = Q(_HELD.stmt.with_for_update())


def held_for_many(tx: Tx, site_pk: int, invoice_ids: list[str]) -> dict[str, list[dict]]:
    """``held_for`` of several invoices in one statement (a batch's settlements): by invoice id,
    each list oldest first (the invoices without any left out), locked."""
    flush(tx)
    wanted = sorted(set(invoice_ids))
    if not wanted:
        return {}
    if all(_plain_token(i) for i in wanted):  # as held_for: the database passes over the others
        found = tx.all(*_HELD_MANY([f"%{dumps(i)}%" for i in wanted], {"site_id": site_pk}))
    else:
        found = tx.all(_HELD_ALL, {"site_id": site_pk})
    out: dict[str, list[dict]] = {}
    keep = set(wanted)
    for row in sorted(found, key=lambda r: (r[2], r[0])):
        event = loads(row[1])
        inv_id = (event["content"].get("invoice") or {}).get("id")
        if inv_id in keep:
            out.setdefault(inv_id, []).append(event)
    return out


def held_for(tx: Tx, site_pk: int, invoice_id: str) -> list[dict]:
    """The held events (``record(held=True)``) whose content carries the invoice ``invoice_id``,
    locked, oldest first."""
    flush(tx)
    # an event whose stored JSON does not hold the id as a JSON string cannot carry the invoice: the
    # database passes over the others (a batch's settlements each see all the batch's held events:
    # O(batch) rows fetched and parsed per settlement otherwise). The id's JSON token is the same in
    # any serializer when it is plain printable ASCII (else every held row is read); LIKE's own
    # wildcards (_ %) and case folding only let more rows through, and each is checked below.
    if _plain_token(invoice_id):
        found = tx.all(_HELD_LIKE, {"site_id": site_pk, "pattern": f"%{dumps(invoice_id)}%"})
    else:
        found = tx.all(_HELD, {"site_id": site_pk})
    rows = sorted(found, key=lambda r: (r[2], r[0]))
    ids = [r[0] for r in rows if (loads(r[1])["content"].get("invoice") or {}).get("id") == invoice_id]
    locked = (lock_event(tx, site_pk, i) for i in ids)  # only this invoice's: other settlements go on
    return [e for e in locked if e is not None]


def release(tx: Tx, site_pk: int, now: int, event: dict) -> None:
    """A held event, its content now the settled state, is stored and its deliveries made due."""
    if _unwritten(tx, event["id"]):
        flush(tx)  # recorded in this unit and still buffered: its rows first
    tx.execute(_RELEASE_EVENT, {"site_id": site_pk, "id": event["id"], "data": dumps(event),  # the column as the
                                "webhook_status": event["webhook_status"], "updated_at": now})  # document
    for due in _RELEASE_DELIVERIES:
        if tx.execute(due, {"site_id": site_pk, "event_id": event["id"], "next_attempt_at": now,
                            "updated_at": now}).rowcount:
            # made due: once committed, the delivery loops are rung (inside a PostgreSQL pipeline the
            # rowcount is not known yet, -1: a ring too many costs an idle loop one pass)
            tx.deliveries = True


def _email_recipient(tx: Tx, site_id: int, content: dict) -> str | None:
    """The customer's email: from the content, else (invoice_generated carries only the
    invoice) from the customer the content's resources point to."""
    customer = content.get("customer")
    if isinstance(customer, dict):
        return customer.get("email")
    for resource in content.values():
        if isinstance(resource, dict) and resource.get("customer_id"):
            c = S.customers
            return tx.scalar(select(c.c.email).where(c.c.site_id == site_id, c.c.id == resource["customer_id"]))
    return None


def webhook_status(statuses: list[str]) -> str:
    """The event's webhook_status from its per-endpoint delivery statuses.

    Deliveries to disabled or removed endpoints do not count (all of them: ``disabled``).
    While any delivery is pending the event is ``re_scheduled`` if some delivery has already
    failed an attempt, else ``scheduled``. Once all are done: ``failed`` if any failed for
    good, else ``succeeded``.
    """
    live = [s for s in statuses if s != "disabled"]
    if not live:
        return "disabled"
    if any(s in ("scheduled", "re_scheduled") for s in live):
        return "re_scheduled" if any(s in ("re_scheduled", "failed") for s in live) else "scheduled"
    return "failed" if "failed" in live else "succeeded"


def sync_event(tx: Tx, site_id: int, event: dict, now: int) -> dict:
    """Rewrite the event's webhooks[] and webhook_status from its delivery rows."""
    flush(tx)
    _synced(tx, site_id, event, WEBHOOKS.statuses(tx, site_id, event["id"], "endpoint_id"), now)
    return event


def sync_events(tx: Tx, site_id: int, events: list[dict], now: int) -> None:
    """``sync_event`` of several events (locked by the caller): their delivery rows in one read."""
    if not events:
        return
    rows = WEBHOOKS.statuses_of(tx, site_id, [e["id"] for e in events], "endpoint_id")
    for event in events:
        _synced(tx, site_id, event, rows.get(event["id"], []), now)


def _synced(tx: Tx, site_id: int, event: dict, rows: list[tuple], now: int) -> None:
    if not rows:
        return
    event["webhooks"] = [{"id": ep, "webhook_status": status} for ep, status in rows]
    event["webhook_status"] = webhook_status([status for _, status in rows])
    tx.execute(_SYNC_EVENT, {"site_id": site_id, "id": event["id"], "data": dumps(event),
                             "webhook_status": event["webhook_status"], "updated_at": now})


_SYNC_EVENT = Q(update(_EV).where(_EV.c.site_id == bindparam("site_id"), _EV.c.id == bindparam("id")).values(
    data=bindparam("data"), webhook_status=bindparam("webhook_status"), updated_at=bindparam("updated_at")))


def requeue(tx: Tx, site_id: int, event: dict, now: int) -> dict:
    """Deliver the event again to every enabled endpoint that wants its type (a new round of
    attempts with a fresh retry schedule). ``event`` must be locked by the caller."""
    flush(tx)
    endpoints = [e for e in webhook_endpoints.list_all(tx, site_id) if e.wants(event["event_type"])]
    if not endpoints:
        raise InvalidRequest(f"No enabled webhook endpoint is subscribed to {event['event_type']} events")
    d = S.webhook_deliveries
    existing = dict(tx.all(select(d.c.endpoint_id, d.c.pk).where(d.c.site_id == site_id, d.c.event_id == event["id"])))
    for e in endpoints:
        if e.id in existing:
            WEBHOOKS.requeue(tx, site_id, existing[e.id], now)
        else:
            tx.execute(insert(d).values(
                site_id=site_id, event_id=event["id"], endpoint_id=e.id, status="scheduled", attempts=0,
                round_start=0, next_attempt_at=now, created_at=now, updated_at=now))
    return sync_event(tx, site_id, event, now)
