"""Time travel as Chargebee v2 does it: travel_forward answers at once (``in_progress`` when the
work is not done), the travel goes on in the background, GET /time_machines/delorean shows its
progress and, on failure, failure_code / failure_reason / error_json; API writes wait for it.

Sources: the v2 time machine resource (time_travel_status not_enabled | in_progress | succeeded |
failed; "failed - ... The time machine needs to be reset by starting afresh again") as the
chargebee-typescript 2.x types quote the API reference; the official SDKs' wait loops
(chargebee-python 3.x TimeMachine.wait_for_time_travel_completion, chargebee-php, chargebee-dotnet:
retrieve while in_progress, then on failed read ``http_code`` from ``json.loads(error_json)``)."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select, update

from billhive.services import jobs as jobs_table
from billhive.services import payments, subscriptions, time_machines
from billhive.store.schema import events as events_table
from billhive.store.schema import time_travels as TT
from billhive.work import outbox
from tests.support import factories as F
from tests.support import subs as S
from tests.support.timemachine import TM, TravelFailed, wait_for_travel

MONTHS = 12


def _subscribed(site, n: int) -> list[str]:
    S.start(site)
    S.plan(site, "monthly", 1000)
    return [S.subscribe(site, F.customer_with_card_id(site), "monthly")["subscription"]["id"] for _ in range(n)]


def test_a_long_travel_answers_in_progress_and_finishes_in_the_background(site, monkeypatch):
    monkeypatch.setattr(time_machines, "INLINE_BUDGET", 0.0)  # answer after the first batch of jobs
    ids = _subscribed(site, 6)
    destination = S.GENESIS + MONTHS * 31 * S.DAY
    tm = site.api.post(TM + "/travel_forward", {"destination_time": destination})["time_machine"]
    assert tm["time_travel_status"] == "in_progress"
    assert tm["destination_time"] == destination
    assert S.GENESIS <= tm["current_time"] < destination
    assert tm["jobs_due"] > 0

    tm = wait_for_travel(site.api)
    assert tm["time_travel_status"] == "succeeded"
    assert tm["current_time"] == tm["destination_time"] >= destination
    assert tm["jobs_done"] >= 6 * MONTHS and "jobs_due" not in tm
    for sub_id in ids:  # every renewal ran once, in time order
        invoices = S.invoices(site, sub_id)
        assert len(invoices) == MONTHS + 1
        dates = [i["end_date"] for i in invoices]
        assert dates == sorted(dates) and len(set(dates)) == len(dates)
    site.api.post("/customers", {"first_name": "After"})


def test_the_continuous_scheduler_leaves_a_travelling_site_alone(site, monkeypatch):
    # the travel runs the site's jobs at their own times; the scheduler would run them at the
    # clock's current time, out of order with the travel
    monkeypatch.setattr(time_machines, "INLINE_BUDGET", 0.0)
    monkeypatch.setattr(time_machines, "BATCH", 1)
    ids = _subscribed(site, 3)
    site.api.post(TM + "/travel_forward", {"destination_time": S.GENESIS + 3 * 31 * S.DAY})
    wait_for_travel(site.api)
    for sub_id in ids:
        assert len(S.invoices(site, sub_id)) == 4


def test_a_failed_travel_reports_the_error_as_the_v2_sdks_read_it(site, monkeypatch):
    _subscribed(site, 1)

    async def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(time_machines.scheduled, "run_due", broken)
    tm = site.api.post(TM + "/travel_forward", {"destination_time": S.GENESIS + 40 * S.DAY})["time_machine"]
    assert tm["time_travel_status"] == "failed"
    assert tm["failure_code"] == "internal_error"
    assert "disk on fire" in tm["failure_reason"]
    err = json.loads(tm["error_json"])
    assert err["http_code"] == "500" and err["api_error_code"] == "internal_error"
    assert all(isinstance(v, str) for v in err.values())  # chargebee-dotnet reads a Dictionary<string, string>
    with pytest.raises(TravelFailed) as failed:
        wait_for_travel(site.api, tm)
    assert failed.value.http_code == 500
    # Chargebee: a failed time machine is reset by starting afresh
    r = site.api.post(TM + "/travel_forward", {"destination_time": S.GENESIS + 50 * S.DAY}, expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"
    site.api.post("/customers", {"first_name": "Writes work"})  # failed is not travelling
    monkeypatch.undo()
    tm = site.api.post(TM + "/start_afresh", {"genesis_time": S.GENESIS})["time_machine"]
    assert tm["time_travel_status"] == "succeeded" and "failure_code" not in tm


def test_an_abandoned_travel_is_resumed_once_its_lease_runs_out(site, monkeypatch):
    # what a restart finds: a travel in_progress whose process died holding its lease (the
    # process-level version is tests/crash/test_kill_time_travel.py)
    ids = _subscribed(site, 2)

    async def dies(app, site_pk, *, budget):  # the process that began the travel dies at once
        return False
    monkeypatch.setattr(time_machines, "advance", dies)
    tm = site.api.post(TM + "/travel_forward", {"destination_time": S.GENESIS + 62 * S.DAY})["time_machine"]
    assert tm["time_travel_status"] == "in_progress" and tm["current_time"] == S.GENESIS
    assert tm["jobs_done"] == 0 and tm["jobs_due"] >= 2
    site.app.db.write_sync(lambda tx: tx.execute(update(TT).where(TT.c.site_id == site.pk).values(
        lease_owner="dead", lease_until=site.app.wall() + 1.0)))
    monkeypatch.undo()

    # while it travels: API writes get invalid_state_for_request, reads work
    r = site.api.post("/customers", {"first_name": "Late"}, expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"
    r = site.api.post(TM + "/travel_forward", {"destination_time": S.GENESIS + 90 * S.DAY}, expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"
    site.api.post(TM + "/start_afresh", {"genesis_time": S.GENESIS}, expect=409)
    site.api.get(f"/subscriptions/{ids[0]}")

    # the background loop (the test server runs it) takes the travel over once the lease ran out
    assert wait_for_travel(site.api)["time_travel_status"] == "succeeded"
    assert [len(S.invoices(site, i)) for i in ids] == [3, 3]
    site.api.post("/customers", {"first_name": "After"})


# ---- a batch's renewal charges: called after the batch commits, settled in one transaction --------

def test_a_batch_of_renewal_charges_is_settled_together_and_once(site, monkeypatch):
    ids = _subscribed(site, 4)  # four renewals due at the same time: one batch of jobs
    groups: list[int] = []
    grouped = payments.charge_and_settle_all

    async def spy(items):
        groups.append(len(items))
        await grouped(items)
    monkeypatch.setattr(payments, "charge_and_settle_all", spy)
    S.travel(site, S.GENESIS + 2 * 31 * S.DAY)
    assert max(groups) == 4  # the batch's four charges went to one settlement
    for sub_id in ids:
        invoices = S.invoices(site, sub_id)
        assert len(invoices) == 3 and all(i["status"] == "paid" for i in invoices)
    assert site.app.gateways["chargebee"].charge_count(site.pk) == 4 * 3  # each charged exactly once
    renewed = S.events(site, "subscription_renewed")  # held until its invoice settled, then shown paid
    assert len(renewed) == 8 and all(e["content"]["invoice"]["status"] == "paid" for e in renewed)
    assert all(e["webhook_status"] != "held" for e in renewed)


def test_a_batch_settlement_writes_its_events_together_and_a_failed_one_drops_its_own(site, monkeypatch):
    """A batch's settlement events are written together (multi-row INSERTs when the unit ends); a
    settlement failing after it recorded its events rolls back to its savepoint without them (its
    subscription_renewed stays held), and recovery then settles it with one set of events."""
    ids = _subscribed(site, 3)
    emit, failed, inserted = payments._emit, [], []

    def emit_then_fail(w, events, txn, inv, content_extra):
        emit(w, events, txn, inv, content_extra)
        if not failed:
            failed.append(txn["id"])
            raise RuntimeError("settlement interrupted after its events")
    insert_rows = outbox._insert_rows

    def spy(tx, table, rows):
        if table.name == "events":
            inserted.append([r["event_type"] for r in rows])
        insert_rows(tx, table, rows)
    monkeypatch.setattr(payments, "_emit", emit_then_fail)
    monkeypatch.setattr(outbox, "_insert_rows", spy)
    S.travel(site, S.GENESIS + 31 * S.DAY)
    monkeypatch.undo()
    assert any(rows.count("payment_succeeded") == 2 for rows in inserted)  # the two settled, in one INSERT

    def of_txn(event_type, txn_id):
        return [e for e in S.events(site, event_type) if e["content"].get("transaction", {}).get("id") == txn_id]
    assert site.api.get(f"/transactions/{failed[0]}")["transaction"]["status"] == "in_progress"
    assert of_txn("payment_succeeded", failed[0]) == [] and of_txn("transaction_updated", failed[0]) == []
    ev = events_table.c

    def held():
        return site.app.db.read_sync(lambda tx: tx.all(select(ev.event_type).where(
            ev.site_id == site.pk, ev.webhook_status == outbox.HELD)))
    assert [tuple(r) for r in held()] == [("subscription_renewed",)]  # until its charge settles
    assert len(S.events(site, "subscription_renewed")) == 3
    assert asyncio.run(payments.recover_site(site.app, site.pk)) == 1
    assert len(of_txn("payment_succeeded", failed[0])) == 1 and held() == []
    renewed = S.events(site, "subscription_renewed")
    assert len(renewed) == 3 and all(e["content"]["invoice"]["status"] == "paid" for e in renewed)
    assert all(S.invoices(site, sub_id)[-1]["status"] == "paid" for sub_id in ids)
    occurred = [r[0] for r in site.app.db.read_sync(lambda tx: tx.all(
        select(ev.occurred_at).where(ev.site_id == site.pk).order_by(ev.pk)))]
    assert occurred == sorted(occurred)  # events in pk order are in time order


def test_a_settlement_failing_in_a_group_is_left_to_recovery_and_the_others_commit(site, monkeypatch):
    ids = _subscribed(site, 3)
    settle, failed = payments.settle, []

    def settle_but_one(w, txn_id, result, purpose=None, **kw):
        if not failed:
            failed.append(txn_id)
            raise RuntimeError("settlement interrupted")
        return settle(w, txn_id, result, purpose, **kw)
    monkeypatch.setattr(payments, "settle", settle_but_one)
    S.travel(site, S.GENESIS + 31 * S.DAY)
    monkeypatch.setattr(payments, "settle", settle)
    assert site.api.get(f"/transactions/{failed[0]}")["transaction"]["status"] == "in_progress"
    renewals = [S.invoices(site, sub_id)[-1] for sub_id in ids]
    assert sorted(i["status"] for i in renewals) == ["paid", "paid", "payment_due"]
    assert asyncio.run(payments.recover_site(site.app, site.pk)) == 1  # settled from the gateway's books
    assert site.api.get(f"/transactions/{failed[0]}")["transaction"]["status"] == "success"
    assert all(S.invoices(site, sub_id)[-1]["status"] == "paid" for sub_id in ids)
    assert site.app.gateways["chargebee"].charge_count(site.pk) == 3 * 2  # not charged again


# ---- a batch's renewals: what they read loaded first, for all of them; each still runs alone -------

def _one_customers_two_subscriptions(site) -> tuple[str, list[str]]:
    S.start(site)
    S.plan(site, "monthly", 1000)
    cust = F.customer(site, promotional=1500)["id"]
    return cust, [S.subscribe(site, cust, "monthly")["subscription"]["id"] for _ in range(2)]


def _credits_taken(site, ids: list[str]) -> list[list[int]]:
    """Each subscription's promotional credits taken per invoice, oldest first."""
    return [[sum(d["amount"] for d in i.get("discounts", []) if d.get("type") == "account_credits")
             for i in S.invoices(site, sub_id)] for sub_id in ids]


@pytest.mark.parametrize("preload", ["as is", "failing"])
def test_renewals_preloaded_together_see_what_the_batchs_earlier_jobs_wrote(site, monkeypatch, preload):
    """Two subscriptions of one customer renew at the same time, in one batch: their subscriptions,
    the customer, card and plan are loaded once for both (services/jobs.py PRELOADS), and the second
    renewal still closes with the credits the first one left (its customer row changed: read again).
    A preload that fails leaves each renewal to read for itself: the same result."""
    cust, ids = _one_customers_two_subscriptions(site)
    assert _credits_taken(site, ids) == [[1000], [500]]  # the first invoices took the credits
    site.api.post(f"/customers/{cust}/add_account_credits", {"amount": 1500, "description": "Again"})
    preloaded: list[list[str]] = []
    real = jobs_table.PRELOADS[subscriptions.JOB_TERM_END]

    def spy(w, due):
        preloaded.append(sorted(job.ref_id for job in due))
        real(w, due)
        if preload == "failing":
            raise RuntimeError("preload fails")
    monkeypatch.setitem(jobs_table.PRELOADS, subscriptions.JOB_TERM_END, spy)
    S.travel(site, S.GENESIS + 2 * 31 * S.DAY)
    assert sorted(ids) in preloaded
    assert _credits_taken(site, ids) == [[1000, 1000, 0], [500, 500, 0]]
    assert site.api.get(f"/customers/{cust}")["customer"]["account_credits"] == 0
    for sub_id in ids:
        invoices = S.invoices(site, sub_id)
        assert all(i["status"] == "paid" for i in invoices)
        assert site.api.get(f"/subscriptions/{sub_id}")["subscription"]["current_term_end"] > S.GENESIS + 62 * S.DAY
    renewed = S.events(site, "subscription_renewed")
    assert len(renewed) == 4 and all(e["content"]["invoice"]["status"] == "paid" for e in renewed)


def test_preloaded_renewals_keep_the_subscriptions_dues_true(site):
    """A batch's renewals of subscriptions with unpaid invoices (nothing to charge: auto-collection
    off): their unpaid invoices are read once for the batch (dues.preload), and each renewal's dues -
    on the subscription and in its events - still count the invoice it just closed."""
    S.start(site)
    S.plan(site, "monthly", 1000)
    ids = [S.subscribe(site, F.customer(site, card=None, auto_collection="off")["id"], "monthly")
           ["subscription"]["id"] for _ in range(3)]
    S.travel(site, S.GENESIS + 2 * 31 * S.DAY)
    for sub_id in ids:
        sub = site.api.get(f"/subscriptions/{sub_id}")["subscription"]
        assert (sub["due_invoices_count"], sub["total_dues"], sub["due_since"]) == (3, 3000, S.GENESIS)
        renewed = [e["content"]["subscription"] for e in S.events(site, "subscription_renewed")
                   if e["content"]["subscription"]["id"] == sub_id]
        assert [(s["due_invoices_count"], s["total_dues"]) for s in renewed] == [(2, 2000), (3, 3000)]
