"""Runs due jobs with the handlers it is given (billhive/services/jobs.py): continuously
(``billhive serve`` / ``billhive worker``) and in time order while the time machine travels."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from billhive import sites
from billhive.errors import StoreError
from billhive.runtime import App
from billhive.store.db import Tx
from billhive.work import jobs, outbox
from billhive.work.context import SCHEDULER, Grouped, Work

log = logging.getLogger("billhive.scheduler")


def _retry_delay(attempts: int) -> int:
    return min(60 * 2 ** attempts, 86400)


def _run_batch_unit(app: App, site_pk: int, handlers: jobs.Handlers, at: int | None, size: int):
    """One transaction running up to ``size`` due jobs, earliest first, each in its own savepoint
    (a failing job's changes are rolled back and it is put back for a retry; the others commit).
    The site is loaded once per batch. Exactly-once: a job is claimed (deleted) in the transaction
    that runs it, so a crash before the commit loses the whole batch and runs it again.

    The batch's jobs are read in one statement (``jobs.candidates``) and each is taken just before
    it runs (``jobs.take``: only if still due). That is the order claiming one job at a time gives:
    an earlier job of the batch can only cancel a candidate or move it to later (it is then not
    taken), unless it schedules a job due already - a new one or a moved candidate
    (``jobs.DUE_NOW``) - and then the candidates are read again, so that job runs in its turn."""
    def unit(tx: Tx) -> list[tuple[jobs.Job, list]]:
        site = sites.load(tx, site_pk)
        now = at if at is not None else site.now(app.wall)
        ran: list[tuple[jobs.Job, list]] = []
        queue: list[jobs.Job] = []
        with outbox.buffered(tx):  # the batch's events written together (a failed job's dropped)
            while len(ran) < size:
                if not queue:
                    queue = jobs.candidates(tx, site_pk, now, size - len(ran))
                    if not queue:
                        break
                    queue.reverse()  # popped from the end: earliest first
                job = queue.pop()
                if not jobs.take(tx, site_pk, job, now):
                    continue
                done, due_now = _run_job(tx, app, site, handlers, job, now)
                ran.append(done)
                if due_now:
                    queue = []  # read again: a job due already was scheduled
        return ran
    return unit


async def run_due(app: App, site_pk: int, handlers: jobs.Handlers, at: int | None = None,
                  limit: int | None = None, batch: int = 1) -> int:
    """Run the site's jobs due at ``at`` (default: the site clock), earliest first, each in its
    savepoint, up to ``batch`` jobs to a transaction (group-committed), each batch followed by its
    jobs' after-commit work in order (e.g. a dunning retry's charge).

    ``batch`` > 1 only for a runner that is the site's only one (a time travel, under its lease):
    concurrent runners keep one job to a transaction, since on PostgreSQL a batch holds the site's
    number sequence across its jobs and would deadlock against another runner's batch."""
    done = 0
    while limit is None or done < limit:
        size = batch if limit is None else min(batch, limit - done)
        ran = await app.db.write(_run_batch_unit(app, site_pk, handlers, at, size))
        if not ran:
            break
        for hook in _grouped([hook for _, after in ran for hook in after]):
            try:
                await hook()
            except StoreError as exc:  # e.g. a charge's settlement: payment recovery finishes it later
                log.warning("after-commit work of a job failed on site %s: %s", site_pk, exc.message)
            except Exception:
                log.exception("after-commit work of a job failed on site %s", site_pk)
        done += len(ran)
        if len(ran) < size:
            break
    return done


def _grouped(hooks: list[Callable[[], Awaitable[Any]]]) -> list[Callable[[], Awaitable[Any]]]:
    """The batch's after-commit work in order, consecutive ``Grouped`` hooks of one runner and key
    joined into one call with all their items."""
    out: list[Callable[[], Awaitable[Any]]] = []
    items: list = []
    for i, hook in enumerate(hooks):
        if not isinstance(hook, Grouped):
            out.append(hook)
            continue
        items.append(hook.item)
        following = hooks[i + 1] if i + 1 < len(hooks) else None
        if not (isinstance(following, Grouped) and (following.runner, following.key) == (hook.runner, hook.key)):
            out.append(functools.partial(hook.runner, items))
            items = []
    return out


async def run_all_sites(app: App, handlers: jobs.Handlers) -> int:
    """One pass of the continuous scheduler over every site but those whose time machine travels
    (the travel runs their jobs in time order: billhive/services/time_machines.py)."""
    site_pks = await app.db.read(lambda tx: [s.pk for s in sites.all_sites(tx) if s.tm_status != "in_progress"])
    total = 0
    for pk in site_pks:
        total += await run_due(app, pk, handlers, limit=1000)
    return total


def next_due(app: App, site_pk: int) -> int | None:
    return app.db.read_sync(lambda tx: jobs.next_due(tx, site_pk))


def _run_job(tx: Tx, app: App, site: sites.Site, handlers: jobs.Handlers, job: jobs.Job,
             now: int) -> tuple[tuple[jobs.Job, list], bool]:
    """Run one claimed job in its savepoint: ((job, its after-commit work), whether it scheduled a
    job due already)."""
    w = Work(tx, app, site, SCHEDULER, now)
    handle = handlers.get(job.kind)
    mark = outbox.mark(tx)
    try:
        with tx.savepoint():
            if handle is None:
                raise RuntimeError(f"no handler for job kind {job.kind!r}")
            handle(w, job)
    except Exception as exc:  # the job's own changes are rolled back; keep it for a retry
        outbox.rollback_to(tx, mark)  # and the events it recorded
        log.error("job %s (%s) failed on site %s: %s", job.key, job.kind, site.name, exc,
                  extra={"site": site.name, "job_id": job.key, "job_kind": job.kind, "attempt": job.attempts})
        log.debug("%s", traceback.format_exc())
        jobs.record_failure(tx, site.pk, job, f"{type(exc).__name__}: {exc}", now + _retry_delay(job.attempts))
        return (job, []), False
    log.info("job %s (%s) ran on site %s", job.key, job.kind, site.name,
             extra={"site": site.name, "job_id": job.key, "job_kind": job.kind, "due_at": job.due_at,
                    "event_ids": ",".join(e["id"] for e in w.emitted) or None})
    return (job, w.after), bool(w.cached(jobs.DUE_NOW, list[str]))
