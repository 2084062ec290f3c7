"""A batch of due jobs (billhive/work/scheduler.py ``_run_batch_unit``: one transaction, a savepoint
per job, the candidates read in one statement and each taken just before it runs) runs exactly the
jobs, in exactly the order, that claiming one due job at a time would: a job an earlier job of the
batch schedules already due runs in its turn, a candidate it cancels or moves to later does not run.
The batch's events are written together at its end (billhive/work/outbox.py ``buffered``): in the
order recorded, a failed job's dropped, and visible to a later job of the same batch."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import select, update

from billhive import sites
from billhive.store import schema as S
from billhive.work import jobs, outbox, scheduler
from billhive.work.context import Work

T0 = 1_735_689_600


def _site(app) -> int:  # type: ignore[no-untyped-def]
    """A fresh site the continuous scheduler leaves alone (marked travelling): only the test runs its jobs."""
    def create(tx):  # type: ignore[no-untyped-def]
        site, _ = sites.create(tx, f"jb-{uuid.uuid4().hex[:10]}-test", now=T0)
        tx.execute(update(S.sites).where(S.sites.c.pk == site.pk).values(tm_status="in_progress", tm_now=T0))
        return site.pk
    return app.db.write_sync(create)


def _schedule(app, site_pk: int, *specs: tuple[str, int]) -> None:  # type: ignore[no-untyped-def]
    """Jobs of kind "t" keyed by name, due at T0 + offset, created in the order given."""
    def run(tx):  # type: ignore[no-untyped-def]
        w = Work(tx, app, None, scheduler.SCHEDULER, T0 - 1000, site_pk=site_pk)
        for key, offset in specs:
            jobs.schedule(w, "t", key, due_at=T0 + offset, key=key)
    app.db.write_sync(run)


def _run(app, site_pk: int, handlers, batch: int = 50) -> int:  # type: ignore[no-untyped-def]
    return asyncio.run(scheduler.run_due(app, site_pk, handlers, at=T0 + 500, limit=batch, batch=batch))


def _left(app, site_pk: int) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    J = S.jobs
    rows = app.db.read_sync(lambda tx: tx.all(select(J.c.key, J.c.due_at, J.c.attempts).where(J.c.site_id == site_pk)))
    return {k: (due - T0, attempts) for k, due, attempts in rows}


def _events(app, site_pk: int) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    E = S.events
    return [(r[0], r[1]) for r in app.db.read_sync(lambda tx: tx.all(
        select(E.c.event_type, E.c.data).where(E.c.site_id == site_pk).order_by(E.c.pk)))]


@pytest.mark.parametrize("offset", [50, 100, 150, 500])
def test_a_job_scheduled_due_inside_a_batch_runs_in_its_turn(app, offset):
    site_pk = _site(app)
    _schedule(app, site_pk, ("a", 100), ("b", 100), ("c", 200))
    order: list[str] = []

    def handle(w, job):  # type: ignore[no-untyped-def]
        order.append(job.key)
        if job.key == "a":
            jobs.schedule(w, "t", "d", due_at=T0 + offset, key="d")  # due already (now is T0 + 500)
    assert _run(app, site_pk, {"t": handle}) == 4
    # one at a time: after a, the earliest due of b (100), c (200) and d (offset), ties by creation
    expected = {50: ["a", "d", "b", "c"], 100: ["a", "b", "d", "c"], 150: ["a", "b", "d", "c"],
                500: ["a", "b", "c", "d"]}[offset]
    assert order == expected
    assert _left(app, site_pk) == {}


def test_a_candidate_cancelled_or_moved_to_later_by_an_earlier_job_does_not_run(app):
    site_pk = _site(app)
    _schedule(app, site_pk, ("a", 100), ("b", 150), ("c", 200), ("e", 300))
    order: list[str] = []

    def handle(w, job):  # type: ignore[no-untyped-def]
        order.append(job.key)
        if job.key == "a":
            jobs.cancel(w, "b")
            jobs.schedule(w, "t", "c", due_at=T0 + 10_000, key="c")  # later than now: not due in this batch
    assert _run(app, site_pk, {"t": handle}) == 2
    assert order == ["a", "e"]
    assert _left(app, site_pk) == {"c": (10_000, 0)}


def test_a_candidate_moved_but_still_due_runs_once_at_its_new_time(app):
    site_pk = _site(app)
    _schedule(app, site_pk, ("a", 100), ("b", 150), ("c", 200))
    order: list[str] = []

    def handle(w, job):  # type: ignore[no-untyped-def]
        order.append(f"{job.key}@{job.due_at - T0}")
        if job.key == "a":
            jobs.schedule(w, "t", "b", due_at=T0 + 250, key="b")
    assert _run(app, site_pk, {"t": handle}) == 3
    assert order == ["a@100", "c@200", "b@250"]
    assert _left(app, site_pk) == {}


def test_a_failed_jobs_events_are_dropped_and_the_batchs_others_written_in_order(app):
    site_pk = _site(app)
    _schedule(app, site_pk, ("a", 100), ("bad", 110), ("c", 120))
    seen: dict[str, object] = {}

    def handle(w, job):  # type: ignore[no-untyped-def]
        event = w.emit("customer_changed", {"customer": {"id": job.key}})
        seen[job.key] = event["id"]
        if job.key == "bad":
            raise RuntimeError("boom")
        if job.key == "c":  # an event recorded earlier in the same batch is there to read
            seen["read"] = (outbox.lock_event(w.tx, w.site_id, seen["a"]) or {}).get("id")  # type: ignore[arg-type]
    assert _run(app, site_pk, {"t": handle}) == 3
    assert seen["read"] == seen["a"]
    events = _events(app, site_pk)
    assert [t for t, _ in events] == ["customer_changed", "customer_changed"]
    assert [seen["a"], seen["c"]] == [json.loads(d)["id"] for _, d in events]
    assert _left(app, site_pk) == {"bad": (500 + scheduler._retry_delay(0), 1)}
