"""Runs due jobs with the handlers it is given (billhive/services/jobs.py): continuously
(``billhive serve`` / ``billhive worker``) and in time order while the time machine travels."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
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


def _run_batch_unit(app: App, site_pk: int, handlers: jobs.Handlers, at: int | None, size: int,
                    groups: Mapping[str, jobs.GroupHandler] | None = None,
                    preloads: Mapping[str, jobs.GroupHandler] | None = None):
    """One transaction running up to ``size`` due jobs, earliest first, each in its own savepoint
    (a failing job's changes are rolled back and it is put back for a retry; the others commit).
    The site is loaded once per batch. Exactly-once: a job is claimed (deleted) in the transaction
    that runs it, so a crash before the commit loses the whole batch and runs it again.

    The batch's jobs are read in one statement (``jobs.candidates``) and each is taken just before
    it runs (``jobs.take``: only if still due). That is the order claiming one job at a time gives:
    an earlier job of the batch can only cancel a candidate or move it to later (it is then not
    taken), unless it schedules a job due already - a new one or a moved candidate
    (``jobs.DUE_NOW``) - and then the candidates are read again, so that job runs in its turn.

    ``groups``: kinds whose consecutive candidates (distinct ref_ids) run together - taken in one
    statement and handled by one call in one savepoint, in their order (such a handler neither
    schedules nor cancels jobs, so one job of the group cannot change another's turn). If the call
    fails, its jobs run one at a time, each in its savepoint as above.

    ``preloads``: kinds whose candidates (of a batch of more than one) have what they read loaded
    first, by one call for all of them (``_preload``); each job still runs alone as above."""
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
                    if preloads and size > 1:
                        _preload(tx, app, site, preloads, queue, now)
                job = queue.pop()
                group_handle = groups.get(job.kind) if groups else None
                if group_handle is not None:
                    group, refs = [job], {job.ref_id}
                    while (queue and queue[-1].kind == job.kind and queue[-1].ref_id not in refs
                           and len(ran) + len(group) < size):
                        refs.add(queue[-1].ref_id)
                        group.append(queue.pop())
                    outcomes = _run_group(tx, app, site, handlers, group_handle,
                                          jobs.take_many(tx, site_pk, group, now), now)
                else:
                    outcomes = [_run_job(tx, app, site, handlers, job, now)] if jobs.take(tx, site_pk, job, now) \
                        else []
                for done, due_now in outcomes:
                    ran.append(done)
                    if due_now:
                        queue = []  # read again: a job due already was scheduled
        return ran
    return unit


async def run_due(app: App, site_pk: int, handlers: jobs.Handlers, at: int | None = None,
                  limit: int | None = None, batch: int = 1,
                  groups: Mapping[str, jobs.GroupHandler] | None = None,
                  preloads: Mapping[str, jobs.GroupHandler] | None = None) -> int:
    """Run the site's jobs due at ``at`` (default: the site clock), earliest first, each in its
    savepoint, up to ``batch`` jobs to a transaction (group-committed), each batch followed by its
    jobs' after-commit work in order (e.g. a dunning retry's charge).

    ``batch`` > 1 only for a runner that is the site's only one (a time travel, under its lease):
    concurrent runners keep one job to a transaction, since on PostgreSQL a batch holds the site's
    number sequence across its jobs and would deadlock against another runner's batch."""
    done = 0
    while limit is None or done < limit:
        size = batch if limit is None else min(batch, limit - done)
        ran = await app.db.write(_run_batch_unit(app, site_pk, handlers, at, size, groups, preloads))
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
    """One pass of the continuous scheduler over the sites with a job due on their clock, but
    those whose time machine travels (the travel runs their jobs in time order:
    billhive/services/time_machines.py). Which sites have one is one read (each site's earliest
    job, an indexed probe, all in one statement): a write transaction only for a site with work, so a pass over a
    thousand idle sites costs a thousand probes, not a thousand commits."""
    site_pks = await app.db.read(lambda tx: _due_sites(tx, app))
    total = 0
    for pk in site_pks:
        total += await run_due(app, pk, handlers, limit=1000)
    return total


def _due_sites(tx: Tx, app: App) -> list[int]:
    due = []
    for site, at in jobs.sites_next_due(tx):
        if site.tm_status == "in_progress":
            continue
        if at is not None and at <= site.now(app.wall):
            due.append(site.pk)
    return due


def next_due(app: App, site_pk: int) -> int | None:
    return app.db.read_sync(lambda tx: jobs.next_due(tx, site_pk))


def _preload(tx: Tx, app: App, site: sites.Site, preloads: Mapping[str, jobs.GroupHandler],
             queue: list[jobs.Job], now: int) -> None:
    """Each preloading kind's candidates handed to its preload (loads only: what the jobs will
    read, for all of them, e.g. ``subscriptions.preload_term_ends``), in a savepoint: if it fails,
    the jobs read for themselves."""
    for kind, preload in preloads.items():
        due = [job for job in queue if job.kind == kind]
        if len(due) < 2:
            continue
        try:
            with tx.savepoint():
                preload(Work(tx, app, site, SCHEDULER, now), due)
        except Exception as exc:
            log.warning("preloading %s %s jobs failed on site %s (%s): each reads for itself",
                        len(due), kind, site.name, exc)


def _run_group(tx: Tx, app: App, site: sites.Site, handlers: jobs.Handlers, handle: jobs.GroupHandler,
               group: list[jobs.Job], now: int) -> list[tuple[tuple[jobs.Job, list], bool]]:
    """Run claimed jobs of one kind together in one savepoint (``_run_batch_unit``'s groups); if
    that fails, each alone (``_run_job``: its own savepoint, a failure recorded for a retry)."""
    if len(group) <= 1:
        return [_run_job(tx, app, site, handlers, job, now) for job in group]
    w = Work(tx, app, site, SCHEDULER, now)
    mark = outbox.mark(tx)
    try:
        with tx.savepoint():
            handle(w, group)
    except Exception as exc:
        outbox.rollback_to(tx, mark)
        log.warning("a group of %s %s jobs failed on site %s (%s): running them one at a time",
                    len(group), group[0].kind, site.name, exc)
        return [_run_job(tx, app, site, handlers, job, now) for job in group]
    for job in group:
        log.info("job %s (%s) ran on site %s", job.key, job.kind, site.name,
                 extra={"site": site.name, "job_id": job.key, "job_kind": job.kind, "due_at": job.due_at,
                        "group": len(group)})
    log.info("%s %s jobs ran together on site %s", len(group), group[0].kind, site.name,
             extra={"site": site.name, "job_kind": group[0].kind,
                    "event_ids": ",".join(e["id"] for e in w.emitted) or None})
    due_now = bool(w.cached(jobs.DUE_NOW, list[str]))
    return [((job, w.after if i == 0 else []), due_now and i == len(group) - 1) for i, job in enumerate(group)]


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
