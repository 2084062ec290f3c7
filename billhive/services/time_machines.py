"""The time machine of test sites (Chargebee API v2's shape, offered on v1 URLs).

- start_afresh: wipes the site's data (customers, subscriptions, invoices, events...; keeps
  settings, keys and webhook endpoints) and freezes the site clock at genesis_time.
- travel_forward: moves the clock to destination_time, running everything that falls due
  in between in time order (renewals, dunning, reminders...), each at its own due time.
- Until first used the clock follows real time and the machine reports ``not_enabled``;
  once used the clock stays where the machine put it *(choice: frozen, so tests are
  deterministic)*.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import update

from billhive import sites
from billhive.errors import InvalidRequest, InvalidState, ParamError, not_found
from billhive.services import jobs as scheduled
from billhive.store import schema as S
from billhive.work import jobs
from billhive.work.context import Ctx, Work

log = logging.getLogger("billhive.time_machine")
NAME = "delorean"


def _view(site: sites.Site, now: int) -> dict:
    if site.tm_status is None:
        return {"name": NAME, "time_travel_status": "not_enabled", "genesis_time": site.created_at,
                "destination_time": now}
    return {"name": NAME, "time_travel_status": site.tm_status, "genesis_time": site.tm_genesis_time,
            "destination_time": site.tm_destination_time}


def _check(w: Work, name: str) -> None:
    if not w.site.is_test:
        raise InvalidRequest("The time machine is available only on test sites")
    if name != NAME:
        raise not_found("time_machine", name)


async def retrieve(ctx: Ctx, name: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        _check(w, name)
        return {"time_machine": _view(w.site, w.now)}
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
        return {"time_machine": _view(sites.load(w.tx, w.site_id), genesis)}
    return await ctx.write(run)


async def travel_forward(ctx: Ctx, name: str, params: dict) -> dict:
    destination = params["destination_time"]

    def begin(w: Work) -> int:
        _check(w, name)
        if w.site.tm_status == "in_progress":
            raise InvalidState("A time travel is already in progress on this site")
        if destination <= w.now:
            raise ParamError("destination_time : must be later than the time machine's current time "
                             f"({w.now})", param="destination_time")
        genesis = w.site.tm_genesis_time if w.site.tm_status else w.now
        w.tx.execute(update(S.sites).where(S.sites.c.pk == w.site_id).values(
            tm_now=w.now, tm_genesis_time=genesis, tm_destination_time=destination, tm_status="in_progress"))
        return w.now

    start = await ctx.write(begin)
    app = ctx.app
    site_pk = ctx.site_id
    ran = 0
    started = time.monotonic()
    last_log = started
    try:
        while True:
            due = await app.db.read(lambda tx: jobs.next_due(tx, site_pk))
            if due is None or due > destination:
                break
            at = max(due, start)

            def move(w: Work, at: int = at) -> None:
                if at > (w.site.tm_now or 0):
                    w.tx.execute(update(S.sites).where(S.sites.c.pk == w.site_id).values(tm_now=at))
            await ctx.write(move)
            ran += await scheduled.run_due(app, site_pk, at=at)
            if time.monotonic() - last_log > 2:
                last_log = time.monotonic()
                log.info("time travel on site %s: at %s of %s (%.0f%%), %d jobs run", site_pk, at, destination,
                         100.0 * (at - start) / max(1, destination - start), ran)
    except Exception:
        def fail(w: Work) -> None:
            w.tx.execute(update(S.sites).where(S.sites.c.pk == w.site_id).values(tm_status="failed"))
        await ctx.write(fail)
        raise

    def finish(w: Work) -> dict:
        w.tx.execute(update(S.sites).where(S.sites.c.pk == w.site_id).values(
            tm_now=destination, tm_status="succeeded"))
        return {"time_machine": _view(sites.load(w.tx, w.site_id), destination)}

    result = await ctx.write(finish)
    if ran:
        log.info("time travel on site %s finished: %d jobs in %.1fs", site_pk, ran, time.monotonic() - started)
    return result
