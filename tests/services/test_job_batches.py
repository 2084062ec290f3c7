"""A batch of due jobs (billhive/work/scheduler.py ``_run_batch_unit``: one transaction, a savepoint
per job, the candidates read in one statement and each taken just before it runs) runs exactly the
jobs, in exactly the order, that claiming one due job at a time would: a job an earlier job of the
batch schedules already due runs in its turn, a candidate it cancels or moves to later does not run.
The batch's events are written together at its end (billhive/work/outbox.py ``buffered``): in the
order recorded, a failed job's dropped, and visible to a later job of the same batch. Kinds with a
group handler (reminders) run their consecutive jobs together, recording what each alone would."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import pytest
from sqlalchemy import select, update

from billhive import sites
from billhive.services import subscriptions
from billhive.services.subscriptions import commit
from billhive.store import schema as S
from billhive.work import jobs, outbox, scheduler
from billhive.work.context import Work
from tests.support import factories as F
from tests.support import subs as Sub

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


def _run(app, site_pk: int, handlers, batch: int = 50, groups=None) -> int:  # type: ignore[no-untyped-def]
    return asyncio.run(scheduler.run_due(app, site_pk, handlers, at=T0 + 500, limit=batch, batch=batch,
                                         groups=groups))


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


class _Rollback(Exception):
    def __init__(self, recorded: list) -> None:
        self.recorded = recorded


def _recorded(site, run) -> list[tuple[str, dict]]:  # type: ignore[no-untyped-def]
    """What ``run(w)`` records, in a transaction rolled back afterwards."""
    def unit(tx):  # type: ignore[no-untyped-def]
        w = Work(tx, site.app, None, scheduler.SCHEDULER, T0 + 40 * 86400, site_pk=site.pk)
        run(w)
        raise _Rollback([(e["event_type"], e["content"]) for e in w.emitted])
    with pytest.raises(_Rollback) as caught:
        site.app.db.write_sync(unit)
    return caught.value.recorded


def test_reminders_run_together_record_what_each_run_alone_records(site):
    site.setting(renewal_reminder_days=5)
    Sub.start(site, T0)
    Sub.plan(site, "monthly", 1000)
    ids = [Sub.subscribe(site, F.customer_with_card_id(site), "monthly")["subscription"]["id"] for _ in range(3)]
    site.api.post(f"/subscriptions/{ids[1]}/cancel", {"end_of_term": "true"})  # non_renewing: cancelling
    pending = site.app.db.read_sync(lambda tx: jobs.pending(tx, site.pk))
    reminders = [j for j in pending if j.kind == subscriptions.JOB_REMINDER]
    assert len(reminders) == 3
    alone = _recorded(site, lambda w: [subscriptions.on_reminder(w, j) for j in reminders])
    together = _recorded(site, lambda w: subscriptions.on_reminders(w, reminders))
    assert [t for t, _ in alone] == ["subscription_renewal_reminder", "subscription_cancelling",
                                     "subscription_renewal_reminder"]
    assert together == alone


def test_a_failing_group_runs_its_jobs_one_at_a_time(app):
    site_pk = _site(app)
    _schedule(app, site_pk, ("a", 100), ("b", 100), ("c", 100), ("d", 200))
    calls: list[object] = []

    def together(w, group):  # type: ignore[no-untyped-def]
        calls.append([j.key for j in group])
        w.emit("customer_changed", {"customer": {"id": "dropped"}})
        raise RuntimeError("the group fails")

    def alone(w, job):  # type: ignore[no-untyped-def]
        calls.append(job.key)
        w.emit("customer_changed", {"customer": {"id": job.key}})
        if job.key == "b":
            raise RuntimeError("b fails alone too")
    assert _run(app, site_pk, {"t": alone}, groups={"t": together}) == 4
    assert calls == [["a", "b", "c", "d"], "a", "b", "c", "d"]
    assert [json.loads(d)["content"]["customer"]["id"] for _, d in _events(app, site_pk)] == ["a", "c", "d"]
    assert _left(app, site_pk) == {"b": (500 + scheduler._retry_delay(0), 1)}


def test_a_metered_renewal_event_shows_what_loading_it_afresh_shows(metered_site):
    site = metered_site
    Sub.start(site, T0)
    Sub.plan(site, "monthly", 1000)
    sub_id = Sub.subscribe(site, F.customer_with_card_id(site), "monthly")["subscription"]["id"]
    pending = site.app.db.read_sync(lambda tx: jobs.pending(tx, site.pk))
    (term_end,) = [j for j in pending if j.kind == subscriptions.JOB_TERM_END]

    def run(w):  # type: ignore[no-untyped-def]
        subscriptions.on_term_end(w, term_end)
        (renewed,) = [e for e in w.emitted if e["event_type"] == "subscription_renewed"]
        stored = subscriptions.state.load(w, sub_id)
        assert stored is not None and renewed["content"]["invoice"]["status"] == "pending"
        fresh = commit.content(w, stored[0], renewed["content"]["invoice"])
        assert json.dumps(renewed["content"]) == json.dumps(fresh)  # in the same field order too
    assert [t for t, _ in _recorded(site, run)] == ["invoice_created", "subscription_renewed"]


@pytest.mark.parametrize("ids", [("7", "17", "70"), ("inv_1", "invX1", "INV_1"), ("in%1", "in1", "i%1"),
                                 ('a"b', "ab", 'a\\"b'), ("x/1", "x1", "x\\/1")])
def test_held_events_are_found_by_their_invoice_alone(app, ids):
    """outbox.held_for finds exactly the held events carrying the invoice, whatever its id (the
    database's LIKE pre-filter only ever lets more rows through)."""
    site_pk = _site(app)

    def run(tx):  # type: ignore[no-untyped-def]
        w = Work(tx, app, None, scheduler.SCHEDULER, T0, site_pk=site_pk)
        made = {i: w.emit("subscription_renewed", {"invoice": {"id": i, "object": "invoice"}}, held=True)["id"]
                for i in ids}
        with outbox.buffered(tx):  # also while the events are still buffered
            again = w.emit("subscription_renewed", {"invoice": {"id": ids[0]}}, held=True)["id"]
            found = {i: sorted(e["id"] for e in outbox.held_for(tx, site_pk, i)) for i in ids}
        return made, again, found
    made, again, found = app.db.write_sync(run)
    assert found == {ids[0]: sorted([made[ids[0]], again]), ids[1]: [made[ids[1]]], ids[2]: [made[ids[2]]]}


def test_trial_ending_notices_run_together_record_what_each_run_alone_records(site):
    Sub.start(site, T0)
    Sub.plan(site, "trial", 2000, trial_period=14, trial_period_unit="day")
    for _ in range(3):
        Sub.subscribe(site, F.customer_with_card_id(site), "trial")
    pending = site.app.db.read_sync(lambda tx: jobs.pending(tx, site.pk))
    notices = [j for j in pending if j.kind == subscriptions.JOB_TRIAL_ENDING]
    assert len(notices) == 3
    alone = _recorded(site, lambda w: [subscriptions.on_trial_ending(w, j) for j in notices])
    together = _recorded(site, lambda w: subscriptions.on_trial_endings(w, notices))
    assert [t for t, _ in alone] == ["subscription_trial_ending"] * 3
    assert together == alone


def test_the_continuous_scheduler_writes_only_to_sites_with_a_job_due(app, monkeypatch):  # type: ignore[no-untyped-def]
    """A pass of ``run_all_sites`` opens a write transaction (``run_due``) for a site only when a job
    is due on that site's clock: not for a site whose jobs are all later, nor one with none, nor a
    travelling site with a job due (its travel runs it)."""
    def create(tx, tm_status: str):  # type: ignore[no-untyped-def]
        site, _ = sites.create(tx, f"jb-{uuid.uuid4().hex[:10]}-test", now=T0)
        tx.execute(update(S.sites).where(S.sites.c.pk == site.pk).values(tm_status=tm_status, tm_now=T0))
        return site.pk
    due, later, idle, travelling = (app.db.write_sync(lambda tx, st=st: create(tx, st))  # type: ignore[misc]
                                    for st in ("succeeded", "succeeded", "succeeded", "in_progress"))
    ran: list[int] = []

    here = threading.get_ident()

    async def run_due(app, site_pk, handlers, **kwargs):  # type: ignore[no-untyped-def]
        if threading.get_ident() == here:
            ran.append(site_pk)
        return 0
    # Patched before the jobs exist: the session server's own background pass (another thread) goes
    # through scheduler.run_due too, and must not run (and reschedule) job "a" before the pass below.
    monkeypatch.setattr(scheduler, "run_due", run_due)
    _schedule(app, due, ("a", -10))
    _schedule(app, later, ("b", 10))
    _schedule(app, travelling, ("c", -10))
    asyncio.run(scheduler.run_all_sites(app, {}))
    assert due in ran
    assert {later, idle, travelling}.isdisjoint(ran)


def test_schedule_many_creates_and_moves_jobs_as_schedule_does(app):
    """jobs.schedule_many (a subscription's jobs in one statement): new jobs created, an existing
    one moved keeping its pk and losing its failures, one already due noted for the batch (DUE_NOW);
    jobs due at the same time are scheduled one at a time, in order (their pks are their turn)."""
    site_pk = _site(app)
    _schedule(app, site_pk, ("b", 100))
    J = S.jobs
    app.db.write_sync(lambda tx: tx.execute(update(J).where(J.c.site_id == site_pk, J.c.key == "b")
                                            .values(attempts=3, last_error="boom")))

    def pks(tx):  # type: ignore[no-untyped-def]
        return dict(tx.all(select(J.c.key, J.c.pk).where(J.c.site_id == site_pk)))
    before = app.db.read_sync(pks)

    def run(tx):  # type: ignore[no-untyped-def]
        w = Work(tx, app, None, scheduler.SCHEDULER, T0, site_pk=site_pk)
        jobs.schedule_many(w, [("t", "a", T0 + 50, "a", {"at": 1}), ("t", "b", T0 + 300, "b", None),
                               ("t", "c", T0 - 5, "c", None)])
        jobs.schedule_many(w, [("t", "d", T0 + 70, "d", None), ("t", "e", T0 + 70, "e", None)])
        return w.cached(jobs.DUE_NOW, list[str])
    assert app.db.write_sync(run) == ["c"]
    assert _left(app, site_pk) == {"a": (50, 0), "b": (300, 0), "c": (-5, 0), "d": (70, 0), "e": (70, 0)}
    after = app.db.read_sync(pks)
    assert after["b"] == before["b"] and after["d"] < after["e"]
    payload = app.db.read_sync(lambda tx: tx.scalar(select(J.c.payload).where(J.c.site_id == site_pk,
                                                                               J.c.key == "a")))
    assert json.loads(payload) == {"at": 1}
