"""Due work on the site clock: renewals, trial ends, scheduled changes, reminders, dunning
retries, card expiry...

A job is a row (site, key, kind, ref_id, due_at). Each kind has one handler, a function of
``(w: Work, job: Job)`` listed in the table billhive/services/jobs.py; services schedule work
from inside their own transactions:

    jobs.schedule(w, "renewal", sub_id, due_at=sub["current_term_end"])

Each job runs in the transaction that claims it (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite:
the single writer) and deletes it, then calls the handler: the job runs exactly once, even with
several workers. A batch of jobs (billhive/work/scheduler.py) reads its candidates in one
statement and takes each one (``take``) just before it runs. A handler may schedule the same key again
(the next renewal). A failing handler rolls back; the failure is recorded and the job is
retried later with back-off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, insert, select, text, update

from billhive import sites
from billhive.store import schema as S
from billhive.store.db import Q, Tx
from billhive.store.inlist import InList
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
# what runs several due jobs of one kind together (consecutive in time order, distinct ref_ids), in
# one savepoint; it neither schedules nor cancels jobs (billhive/work/scheduler.py)
GroupHandler = Callable[[Work, list[Job]], None]
MAX_ATTEMPTS = 8


_COLS = (J.c.pk, J.c.key, J.c.kind, J.c.ref_id, J.c.due_at, J.c.payload, J.c.attempts)
_NEXT_DUE = Q(select(J.c.due_at).where(J.c.site_id == bindparam("site_id"), J.c.attempts < MAX_ATTEMPTS)
              .order_by(J.c.due_at, J.c.pk).limit(1))
# every site with its next_due (one read for all sites: the scheduler's pass)
sites_next_due = sites.all_sites_and(
    select(J.c.due_at).where(J.c.site_id == S.sites.c.pk, J.c.attempts < MAX_ATTEMPTS)
    .order_by(J.c.due_at, J.c.pk).limit(1).scalar_subquery())
_DUE = (select(*_COLS).where(J.c.site_id == bindparam("site_id"), J.c.due_at <= bindparam("now"),
                             J.c.attempts < MAX_ATTEMPTS)
        .order_by(J.c.due_at, J.c.pk))
_CANDIDATES = Q(_DUE.limit(bindparam("limit")).with_for_update(skip_locked=True))
# a candidate is taken only while still due: not cancelled or moved to later since it was read
_TAKE = Q(delete(J).where(J.c.pk == bindparam("pk"), J.c.site_id == bindparam("site_id"),
                          J.c.due_at <= bindparam("now"), J.c.attempts < MAX_ATTEMPTS))
# create or move the job with this key in one statement (the (site_id, key) unique constraint); a moved
# job keeps its pk and created_at, as an UPDATE would
_UPSERT = Q(text(
    'INSERT INTO jobs (site_id, "key", kind, ref_id, due_at, payload, attempts, created_at) '
    "VALUES (:site_id, :key, :kind, :ref_id, :due_at, :payload, 0, :created_at) "
    'ON CONFLICT (site_id, "key") DO UPDATE SET kind = excluded.kind, ref_id = excluded.ref_id, '
    "due_at = excluded.due_at, payload = excluded.payload, attempts = 0, last_error = NULL"))
_CANCEL = Q(delete(J).where(J.c.site_id == bindparam("site_id"), J.c.key == bindparam("key")))
_CANCEL_MANY = InList(lambda keys: delete(J).where(J.c.site_id == bindparam("site_id"), J.c.key.in_(keys)), "key",
                      forgets_rows=False)


def _no_rows(q: Q) -> Q:
    """A jobs statement: jobs are no DocTable's rows, so ``Tx.rows`` has nothing of them to forget
    (else each statement would scan every row the batch knows)."""
    q.writes = None
    return q


for _q in (_TAKE, _CANCEL):
    _no_rows(_q)
# the keys of the jobs a Work scheduled already due (``schedule``): the batch runner takes them in order
DUE_NOW = "jobs.due_now"


def _job(row: tuple) -> Job:
    return Job(row[0], row[1], row[2], row[3], row[4], loads(row[5]) if row[5] else None, row[6])


def schedule(w: Work, kind: str, ref_id: str, due_at: int, *, key: str | None = None,
             payload: dict | None = None) -> None:
    """Create or move the job with this key (default ``kind:ref_id``) to due_at."""
    key = key or f"{kind}:{ref_id}"
    data = dumps(payload) if payload is not None else None
    w.tx.execute(_UPSERT, dict(site_id=w.site_id, key=key, kind=kind, ref_id=ref_id, due_at=due_at, payload=data,
                               created_at=w.now))
    if due_at <= w.now:  # due already: a batch running jobs must take it in its time order (scheduler.py)
        w.cached(DUE_NOW, list[str]).append(key)


_UPSERT_MANY: dict[int, Q] = {}  # by the number of rows


def _upsert_many(n: int) -> Q:
    """``_UPSERT`` of n rows in one statement (their parameters suffixed _0, _1...)."""
    q = _UPSERT_MANY.get(n)
    if q is None:
        rows = ", ".join(f"(:site_id_{i}, :key_{i}, :kind_{i}, :ref_id_{i}, :due_at_{i}, :payload_{i}, 0, "
                         f":created_at_{i})" for i in range(n))
        q = _UPSERT_MANY[n] = Q(text(
            'INSERT INTO jobs (site_id, "key", kind, ref_id, due_at, payload, attempts, created_at) '
            f"VALUES {rows} " + _UPSERT.stmt.text.split(" VALUES ", 1)[1].split(") ", 1)[1]))
    return q


def schedule_many(w: Work, wanted: list[tuple[str, str, int, str | None, dict | None]]) -> None:
    """``schedule`` of several jobs - (kind, ref_id, due_at, key, payload) each, distinct keys - in
    one statement when their due times differ (a job's turn among jobs due at the same time is
    its pk, and the rows of one statement take theirs in no given order), else one at a time."""
    if len(wanted) < 2 or len({due for _, _, due, _, _ in wanted}) < len(wanted):
        for kind, ref_id, due_at, key, payload in wanted:
            schedule(w, kind, ref_id, due_at, key=key, payload=payload)
        return
    params: dict = {}
    for i, (kind, ref_id, due_at, key, payload) in enumerate(wanted):
        key = key or f"{kind}:{ref_id}"
        params.update({f"site_id_{i}": w.site_id, f"key_{i}": key, f"kind_{i}": kind, f"ref_id_{i}": ref_id,
                       f"due_at_{i}": due_at, f"payload_{i}": dumps(payload) if payload is not None else None,
                       f"created_at_{i}": w.now})
        if due_at <= w.now:
            w.cached(DUE_NOW, list[str]).append(key)
    w.tx.execute(_upsert_many(len(wanted)), params)


_GET = Q(select(*_COLS).where(J.c.site_id == bindparam("site_id"), J.c.key == bindparam("key")).with_for_update())


def get(w: Work, key: str) -> Job | None:
    """The job with this key, locked until the transaction ends (or None)."""
    row = w.tx.one(_GET, {"site_id": w.site_id, "key": key})
    return _job(row) if row is not None else None


def cancel(w: Work, key: str) -> None:
    w.tx.execute(_CANCEL, {"site_id": w.site_id, "key": key})


def cancel_many(w: Work, keys: list[str]) -> None:
    """Cancel the jobs with these keys (one statement)."""
    if keys:
        w.tx.execute(*_CANCEL_MANY(keys, {"site_id": w.site_id}))


def pending(tx: Tx, site_id: int) -> list[Job]:
    return [_job(r) for r in tx.all(select(*_COLS).where(J.c.site_id == site_id).order_by(J.c.due_at, J.c.pk))]


def next_due(tx: Tx, site_id: int) -> int | None:
    return tx.scalar(_NEXT_DUE, {"site_id": site_id})


def candidates(tx: Tx, site_id: int, now: int, limit: int) -> list[Job]:
    """The earliest ``limit`` due jobs, in time order (PostgreSQL: locked, skipping those another
    runner holds), read but not taken: ``take`` each one just before it runs."""
    return [_job(r) for r in tx.all(_CANDIDATES, {"site_id": site_id, "now": now, "limit": limit})]


def take(tx: Tx, site_id: int, job: Job, now: int) -> bool:
    """Claim (delete) a candidate of ``candidates`` in this transaction if it is still due: False
    when an earlier job of the transaction cancelled it or moved it to later (the one-at-a-time
    claim would not have run it either). A job that one of them scheduled due already - a new one,
    or a candidate moved while still due - is in ``w.cached(DUE_NOW)`` of that job's Work: the
    caller must read the candidates again before taking another one (then an unchanged candidate
    is the only kind still due)."""
    return tx.rowcount(_TAKE, {"pk": job.pk, "site_id": site_id, "now": now}) == 1


def take_many(tx: Tx, site_id: int, group: list[Job], now: int) -> list[Job]:
    """``take`` of several candidates in one statement: those still due, in the order given."""
    if len(group) == 1:
        return group if take(tx, site_id, group[0], now) else []
    taken = {r[0] for r in tx.all(*_TAKE_MANY([job.pk for job in group], {"site_id": site_id, "now": now}))}
    return [job for job in group if job.pk in taken]


_TAKE_MANY = InList(lambda pks: delete(J).where(
    J.c.site_id == bindparam("site_id"), J.c.pk.in_(pks), J.c.due_at <= bindparam("now"),
    J.c.attempts < MAX_ATTEMPTS).returning(J.c.pk), "pk", forgets_rows=False)


def record_failure(tx: Tx, site_id: int, job: Job, error: str, retry_at: int) -> None:
    """Put a failed job back (its claiming transaction rolled back, so it may still exist)."""
    values = dict(due_at=retry_at, attempts=job.attempts + 1, last_error=error[:2000])
    n = tx.rowcount(update(J).where(and_(J.c.site_id == site_id, J.c.key == job.key)).values(**values))
    if n == 0:
        tx.execute(insert(J).values(site_id=site_id, key=job.key, kind=job.kind, ref_id=job.ref_id,
                                    payload=dumps(job.payload) if job.payload is not None else None,
                                    created_at=retry_at, **values))
