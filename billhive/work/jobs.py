"""Due work on the site clock: renewals, trial ends, scheduled changes, reminders, dunning
retries, card expiry...

A job is a row (site, key, kind, ref_id, due_at). Each kind has one handler, a function of
``(w: Work, job: Job)`` listed in the table billhive/services/jobs.py; services schedule work
from inside their own transactions:

    jobs.schedule(w, "renewal", sub_id, due_at=sub["current_term_end"])

Each job runs in its own transaction that first claims it (PostgreSQL: ``FOR UPDATE SKIP
LOCKED``; SQLite: the single writer) and deletes it, then calls the handler: the job runs
exactly once, even with several workers. A handler may schedule the same key again
(the next renewal). A failing handler rolls back; the failure is recorded and the job is
retried later with back-off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, insert, select, update

from billhive.store import schema as S
from billhive.store.db import Q, Tx
from billhive.util.jsonutil import dumps, loads
from billhive.work.context import Work

log = logging.getLogger("billhive.scheduler")
J = S.jobs


@dataclass(frozen=True)
class Job:
    pk: int
    key: str
    kind: str
    ref_id: str
    due_at: int
    payload: dict | None
    attempts: int


# what runs a job of one kind, in the job's own transaction (billhive/services/jobs.py: the table)
Handler = Callable[[Work, Job], None]
Handlers = Mapping[str, Handler]
MAX_ATTEMPTS = 8


_COLS = (J.c.pk, J.c.key, J.c.kind, J.c.ref_id, J.c.due_at, J.c.payload, J.c.attempts)
_BY_KEY = Q(select(J.c.pk).where(J.c.site_id == bindparam("site_id"), J.c.key == bindparam("key")))
_NEXT_DUE = Q(select(J.c.due_at).where(J.c.site_id == bindparam("site_id"), J.c.attempts < MAX_ATTEMPTS)
              .order_by(J.c.due_at, J.c.pk).limit(1))
_CLAIM = Q(select(*_COLS).where(J.c.site_id == bindparam("site_id"), J.c.due_at <= bindparam("now"),
                                J.c.attempts < MAX_ATTEMPTS)
           .order_by(J.c.due_at, J.c.pk).limit(1).with_for_update(skip_locked=True))
_DELETE = Q(delete(J).where(J.c.pk == bindparam("pk")))
_MOVE = Q(update(J).where(J.c.pk == bindparam("pk")).values(
    kind=bindparam("kind"), ref_id=bindparam("ref_id"), due_at=bindparam("due_at"), payload=bindparam("payload"),
    attempts=0, last_error=None))
_INSERT = Q(insert(J).values({c: bindparam(c) for c in ("site_id", "key", "kind", "ref_id", "due_at", "payload",
                                                         "attempts", "created_at")}))
_CANCEL = Q(delete(J).where(J.c.site_id == bindparam("site_id"), J.c.key == bindparam("key")))


def _job(row: tuple) -> Job:
    return Job(row[0], row[1], row[2], row[3], row[4], loads(row[5]) if row[5] else None, row[6])


def schedule(w: Work, kind: str, ref_id: str, due_at: int, *, key: str | None = None,
             payload: dict | None = None) -> None:
    """Create or move the job with this key (default ``kind:ref_id``) to due_at."""
    key = key or f"{kind}:{ref_id}"
    tx, site_id = w.tx, w.site_id
    existing = tx.one(_BY_KEY, {"site_id": site_id, "key": key})
    data = dumps(payload) if payload is not None else None
    if existing:
        tx.execute(_MOVE, dict(pk=existing[0], kind=kind, ref_id=ref_id, due_at=due_at, payload=data))
    else:
        tx.execute(_INSERT, dict(site_id=site_id, key=key, kind=kind, ref_id=ref_id, due_at=due_at, payload=data,
                                 attempts=0, created_at=w.now))


_GET = Q(select(*_COLS).where(J.c.site_id == bindparam("site_id"), J.c.key == bindparam("key")).with_for_update())


def get(w: Work, key: str) -> Job | None:
    """The job with this key, locked until the transaction ends (or None)."""
    row = w.tx.one(_GET, {"site_id": w.site_id, "key": key})
    return _job(row) if row is not None else None


def cancel(w: Work, key: str) -> None:
    w.tx.execute(_CANCEL, {"site_id": w.site_id, "key": key})


def cancel_prefix(w: Work, prefix: str) -> None:
    """Cancel every job whose key starts with prefix (e.g. all of one subscription's jobs)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    w.tx.execute(delete(J).where(J.c.site_id == w.site_id, J.c.key.like(escaped + "%", escape="\\")))


def pending(tx: Tx, site_id: int) -> list[Job]:
    return [_job(r) for r in tx.all(select(*_COLS).where(J.c.site_id == site_id).order_by(J.c.due_at, J.c.pk))]


def next_due(tx: Tx, site_id: int) -> int | None:
    return tx.scalar(_NEXT_DUE, {"site_id": site_id})


def claim(tx: Tx, site_id: int, now: int) -> Job | None:
    """Take the earliest due job (deleting it) in this transaction, or None."""
    row = tx.one(_CLAIM, {"site_id": site_id, "now": now})
    if row is None:
        return None
    if tx.rowcount(_DELETE, {"pk": row[0]}) != 1:  # taken by a concurrent worker
        return None
    return _job(row)


def record_failure(tx: Tx, site_id: int, job: Job, error: str, retry_at: int) -> None:
    """Put a failed job back (its claiming transaction rolled back, so it may still exist)."""
    values = dict(due_at=retry_at, attempts=job.attempts + 1, last_error=error[:2000])
    n = tx.rowcount(update(J).where(and_(J.c.site_id == site_id, J.c.key == job.key)).values(**values))
    if n == 0:
        tx.execute(insert(J).values(site_id=site_id, key=job.key, kind=job.kind, ref_id=job.ref_id,
                                    payload=dumps(job.payload) if job.payload is not None else None,
                                    created_at=retry_at, **values))
