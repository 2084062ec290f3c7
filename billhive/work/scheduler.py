"""Runs due jobs with the handlers it is given (billhive/services/jobs.py): continuously
(``billhive serve`` / ``billhive worker``) and in time order while the time machine travels."""

from __future__ import annotations

import logging
import traceback

from billhive import sites
from billhive.errors import StoreError
from billhive.runtime import App
from billhive.store.db import Tx
from billhive.work import jobs
from billhive.work.context import SCHEDULER, Work

log = logging.getLogger("billhive.scheduler")


def _retry_delay(attempts: int) -> int:
    return min(60 * 2 ** attempts, 86400)


def _run_one_unit(app: App, site_pk: int, handlers: jobs.Handlers, at: int | None):
    def unit(tx: Tx) -> tuple[jobs.Job, list] | None:
        site = sites.load(tx, site_pk)
        now = at if at is not None else site.now(app.wall)
        job = jobs.claim(tx, site_pk, now)
        if job is None:
            return None
        w = Work(tx, app, site, SCHEDULER, now)
        handle = handlers.get(job.kind)
        try:
            with tx.savepoint():
                if handle is None:
                    raise RuntimeError(f"no handler for job kind {job.kind!r}")
                handle(w, job)
        except Exception as exc:  # the job's own changes are rolled back; keep it for a retry
            log.error("job %s (%s) failed on site %s: %s", job.key, job.kind, site.name, exc,
                      extra={"site": site.name, "job_id": job.key, "job_kind": job.kind, "attempt": job.attempts})
            log.debug("%s", traceback.format_exc())
            jobs.record_failure(tx, site_pk, job, f"{type(exc).__name__}: {exc}",
                                now + _retry_delay(job.attempts))
            return job, []
        log.info("job %s (%s) ran on site %s", job.key, job.kind, site.name,
                 extra={"site": site.name, "job_id": job.key, "job_kind": job.kind, "due_at": job.due_at,
                        "event_ids": ",".join(e["id"] for e in w.emitted) or None})
        return job, w.after
    return unit


async def run_due(app: App, site_pk: int, handlers: jobs.Handlers, at: int | None = None,
                  limit: int | None = None) -> int:
    """Run the site's jobs due at ``at`` (default: the site clock), earliest first, each in its
    own transaction followed by its after-commit work (e.g. a dunning retry's charge)."""
    done = 0
    while limit is None or done < limit:
        outcome = await app.db.write(_run_one_unit(app, site_pk, handlers, at))
        if outcome is None:
            break
        _, after = outcome
        for hook in after:
            try:
                await hook()
            except StoreError as exc:  # e.g. a charge's settlement: payment recovery finishes it later
                log.warning("after-commit work of a job failed on site %s: %s", site_pk, exc.message)
            except Exception:
                log.exception("after-commit work of a job failed on site %s", site_pk)
        done += 1
    return done


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
