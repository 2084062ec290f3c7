"""The time machine of test sites (Chargebee API v2's shape, offered on v1 URLs).

- start_afresh: wipes the site's data (customers, subscriptions, invoices, events...; keeps
  settings, keys and webhook endpoints) and freezes the site clock at genesis_time.
- travel_forward: moves the clock to destination_time, running everything that falls due
  in between in time order (renewals, dunning, reminders...), each at its own due time.
- Until first used the clock follows real time and the machine reports ``not_enabled``;
  once used the clock stays where the machine put it *(choice: frozen, so tests are
  deterministic)*.

Asynchronous, as Chargebee v2's: ``travel_forward`` works for at most ``INLINE_BUDGET`` seconds
inside its request; a travel that is not over by then is answered ``in_progress`` and goes on in
the background (the ``time travel`` loop of billhive/worker.py calls ``resume_all``), and
``GET /time_machines/delorean`` shows how far it got (``current_time``, ``jobs_done``,
``jobs_due``) and, when it failed, ``failure_code``, ``failure_reason`` and ``error_json`` (what
the official v2 SDKs' ``wait_for_time_travel_completion`` reads). Every step is its own
transaction (a job, or moving the clock to the next due time), so a travel interrupted by a
crash resumes where it stopped, never in the middle of a renewal: whoever advances a travel
holds its lease (``time_travels.lease_until``, wall clock, renewed after every batch of jobs),
and a travel whose lease ran out is taken over. While a site travels its API writes are
refused (billhive/work/context.py, ``TRAVELLING``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid

from sqlalchemy import delete, func, insert, select, update

from billhive import sites
from billhive.errors import (
    BillhiveError,
    InvalidRequest,
    InvalidState,
    ParamError,
    StoreError,
    not_found,
)
from billhive.runtime import App
from billhive.services import jobs as scheduled
from billhive.store import schema as S
from billhive.store.db import Tx
from billhive.util import failpoints
from billhive.work import jobs
from billhive.work.context import Ctx, Work

log = logging.getLogger("billhive.time_machine")
NAME = "delorean"
INLINE_BUDGET = 2.0  # seconds travel_forward advances a travel before answering (then: in_progress)
RESUME_BUDGET = 5.0  # seconds one background pass advances one travel before turning to the next
BATCH = 50  # jobs run between two lease renewals and budget checks, in one transaction (a savepoint each)
TT = S.time_travels


async def retrieve(ctx: Ctx, name: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        _check(w, name)
        return {"time_machine": _view(w.tx, w.site, w.now)}
    return await ctx.read(run)


async def start_afresh(ctx: Ctx, name: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        _check(w, name)
        if w.site.tm_status == "in_progress":
            raise InvalidState("A time travel is in progress on this site")
        genesis = params.get("genesis_time", int(w.app.wall()))
        sites.wipe_data(w.tx, w.site_id)
        w.tx.execute(update(S.sites).where(S.sites.c.pk == w.site_id).values(
            tm_now=genesis, tm_genesis_time=genesis, tm_destination_time=genesis, tm_status="succeeded"))
        return {"time_machine": _view(w.tx, sites.load(w.tx, w.site_id), genesis)}
    return await _own(ctx).write(run)


async def travel_forward(ctx: Ctx, name: str, params: dict) -> dict:
    destination = params["destination_time"]

    def begin(w: Work) -> None:
        _check(w, name)
        if w.site.tm_status == "in_progress":
            raise InvalidState("A time travel is already in progress on this site")
        if w.site.tm_status == "failed":
            # Chargebee: "The time machine needs to be reset by starting afresh again" (the v2
            # API reference of time_travel_status, quoted in the chargebee-typescript 2.x types)
            raise InvalidState("The last time travel failed: start afresh before travelling again")
        if destination <= w.now:
            raise ParamError("destination_time : must be later than the time machine's current time "
                             f"({w.now})", param="destination_time")
        genesis = w.site.tm_genesis_time if w.site.tm_status else w.now
        w.tx.execute(update(S.sites).where(S.sites.c.pk == w.site_id).values(
            tm_now=w.now, tm_genesis_time=genesis, tm_destination_time=destination, tm_status="in_progress"))
        wall = w.app.wall()
        w.tx.execute(delete(TT).where(TT.c.site_id == w.site_id))
        w.tx.execute(insert(TT).values(site_id=w.site_id, origin_time=w.now, started_at=int(wall), jobs_done=0,
                                       updated_at=wall))

    await _own(ctx).write(begin)
    await advance(ctx.app, ctx.site_id, budget=INLINE_BUDGET)
    return await retrieve(ctx, name, params)


async def resume_all(app: App) -> int:
    """The background pass: advance every travel no one else advances (its lease has run out),
    each for at most RESUME_BUDGET seconds. Returns how many travels it advanced."""
    def travelling(tx: Tx) -> list[int]:
        rows = tx.all(select(TT.c.site_id).select_from(TT.join(S.sites, S.sites.c.pk == TT.c.site_id)).where(
            S.sites.c.tm_status == "in_progress",
            (TT.c.lease_until.is_(None)) | (TT.c.lease_until < app.wall())).order_by(TT.c.updated_at))
        return [r[0] for r in rows]
    advanced = 0
    for site_pk in await app.db.read(travelling):
        advanced += 1
        await advance(app, site_pk, budget=RESUME_BUDGET)
    return advanced


async def advance(app: App, site_pk: int, *, budget: float) -> bool:
    """Advance the site's travel for about ``budget`` seconds, if no one else holds it.
    True when the travel is over (succeeded or failed)."""
    owner = uuid.uuid4().hex
    if not await app.db.write(lambda tx: _take_lease(tx, app, site_pk, owner)):
        return False
    deadline = time.monotonic() + budget
    try:
        while True:
            step = await app.db.write(lambda tx: _next_step(tx, app, site_pk, owner))
            if step is None:  # arrived (or the travel is no longer ours)
                return True
            done = await scheduled.run_due(app, site_pk, at=step, limit=BATCH, batch=BATCH)
            failpoints.hit("time_travel.batch")
            await app.db.write(lambda tx, done=done: _progress(tx, app, site_pk, owner, done))
            if time.monotonic() > deadline:
                await app.db.write(lambda tx: _release(tx, site_pk, owner))
                return False
    except StoreError as exc:  # the store's condition: the travel is resumed once the lease runs out
        log.warning("time travel on site %s paused: %s", site_pk, exc.message)
        return False
    except Exception as exc:
        log.exception("time travel on site %s failed", site_pk)
        await app.db.write(lambda tx, error=exc: _fail(tx, site_pk, error))
        return True


def _check(w: Work, name: str) -> None:
    if not w.site.is_test:
        raise InvalidRequest("The time machine is available only on test sites")
    if name != NAME:
        raise not_found("time_machine", name)


def _own(ctx: Ctx) -> Ctx:
    """The request's handle, allowed to write while the site travels (the time machine's own
    operations check the travel's state themselves)."""
    return dataclasses.replace(ctx, while_travelling=True)


def _view(tx: Tx, site: sites.Site, now: int) -> dict:
    if site.tm_status is None:
        return {"name": NAME, "time_travel_status": "not_enabled", "genesis_time": site.created_at,
                "destination_time": now}
    out = {"name": NAME, "time_travel_status": site.tm_status, "genesis_time": site.tm_genesis_time,
           "destination_time": site.tm_destination_time}
    row = tx.one(select(TT.c.jobs_done, TT.c.failure_code, TT.c.failure_reason, TT.c.error_json)
                 .where(TT.c.site_id == site.pk))
    if row is not None:  # the last travel since start_afresh (billhive's extension fields)
        out["current_time"] = site.tm_now
        out["jobs_done"] = row[0]
        if site.tm_status == "in_progress":
            out["jobs_due"] = tx.scalar(select(func.count()).select_from(S.jobs).where(
                S.jobs.c.site_id == site.pk, S.jobs.c.due_at <= site.tm_destination_time,
                S.jobs.c.attempts < jobs.MAX_ATTEMPTS)) or 0
        if site.tm_status == "failed":
            out.update(failure_code=row[1], failure_reason=row[2], error_json=row[3])
    return out


def _take_lease(tx: Tx, app: App, site_pk: int, owner: str) -> bool:
    wall = app.wall()
    return tx.rowcount(update(TT).where(
        TT.c.site_id == site_pk, (TT.c.lease_until.is_(None)) | (TT.c.lease_until < wall),
        TT.c.site_id.in_(select(S.sites.c.pk).where(S.sites.c.tm_status == "in_progress")),
    ).values(lease_owner=owner, lease_until=wall + app.config.time_travel_lease, updated_at=wall)) == 1


def _holds(tx: Tx, site_pk: int, owner: str) -> bool:
    return tx.scalar(select(TT.c.lease_owner).where(TT.c.site_id == site_pk)) == owner


def _next_step(tx: Tx, app: App, site_pk: int, owner: str) -> int | None:
    """Move the clock to the next due time (at most the destination) and return it; or finish
    the travel and return None. None too when the travel is no longer this owner's."""
    site = sites.load(tx, site_pk)
    if site.tm_status != "in_progress" or not _holds(tx, site_pk, owner):
        return None
    destination = site.tm_destination_time or 0
    due = jobs.next_due(tx, site_pk)
    if due is None or due > destination:
        tx.execute(update(S.sites).where(S.sites.c.pk == site_pk).values(tm_now=destination, tm_status="succeeded"))
        tx.execute(update(TT).where(TT.c.site_id == site_pk).values(lease_owner=None, lease_until=None,
                                                                    updated_at=app.wall()))
        return None
    at = max(due, site.tm_now or 0)
    if at != site.tm_now:
        tx.execute(update(S.sites).where(S.sites.c.pk == site_pk).values(tm_now=at))
    return at


def _progress(tx: Tx, app: App, site_pk: int, owner: str, done: int) -> None:
    wall = app.wall()
    tx.execute(update(TT).where(TT.c.site_id == site_pk, TT.c.lease_owner == owner).values(
        jobs_done=TT.c.jobs_done + done, lease_until=wall + app.config.time_travel_lease, updated_at=wall))


def _release(tx: Tx, site_pk: int, owner: str) -> None:
    tx.execute(update(TT).where(TT.c.site_id == site_pk, TT.c.lease_owner == owner).values(
        lease_owner=None, lease_until=None))


def _fail(tx: Tx, site_pk: int, exc: Exception) -> None:
    """The travel stops where it is, failed, with the error as Chargebee's v2 time machine
    reports one: error_json is the error body plus ``http_code``, every value a string (the
    official SDKs' wait_for_time_travel_completion reads ``http_code`` from it: chargebee-python
    3.x ``json.loads(error_json)["http_code"]``, chargebee-dotnet deserializes it as a
    Dictionary<string, string>)."""
    if isinstance(exc, BillhiveError):
        body, status = exc.to_json(), exc.http_status
    else:
        body, status = {"message": "Sorry, something went wrong when processing the time travel.",
                        "type": "internal_error", "api_error_code": "internal_error"}, 500
    error = {k: str(v) for k, v in body.items() if k in ("message", "type", "api_error_code", "param")}
    error["http_code"] = str(status)
    tx.execute(update(S.sites).where(S.sites.c.pk == site_pk).values(tm_status="failed"))
    tx.execute(update(TT).where(TT.c.site_id == site_pk).values(
        failure_code=error["api_error_code"], failure_reason=f"{type(exc).__name__}: {exc}"[:1000],
        error_json=json.dumps(error), lease_owner=None, lease_until=None))
