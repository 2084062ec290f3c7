"""Subscriptions over time (the site clock and the time machine): trials, future starts, renewals,
billing cycles, cancellations, reactivation, reminders, dunning."""

from __future__ import annotations

import pytest

from tests.support import factories as F
from tests.support import timemachine
from tests.support.subs import (
    DAY,
    GENESIS,
    events,
    invoices,
    plan,
    start,
    subscribe,
    travel,
    ts,
    types,
)

FEB_1, MAR_1, APR_1 = ts(2026, 2, 1), ts(2026, 3, 1), ts(2026, 4, 1)


@pytest.fixture
def tsite(site):
    start(site)
    plan(site)
    return site


def sub_of(site, sub_id: str) -> dict:
    return site.api.get(f"/subscriptions/{sub_id}")["subscription"]


def test_renewal_without_metered_billing_closes_and_charges_at_once(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"])["subscription"]
    travel(tsite, FEB_1 + 60)
    renewed = sub_of(tsite, sub["id"])
    assert (renewed["current_term_start"], renewed["current_term_end"]) == (FEB_1, MAR_1)
    first, second = invoices(tsite, sub["id"])
    assert second["id"] == "2" and second["status"] == "paid" and second["first_invoice"] is False
    assert second["start_date"] == FEB_1 and second["line_items"][0]["date_to"] == MAR_1
    (ev,) = events(tsite, "subscription_renewed")
    assert ev["content"]["invoice"]["id"] == "2" and ev["source"] == "scheduled_job"
    assert types(tsite).count("payment_succeeded") == 2
    assert "invoice_created" not in types(tsite)
    travel(tsite, APR_1 + 60)  # each due renewal runs once, in order
    assert [i["start_date"] for i in invoices(tsite, sub["id"])] == [GENESIS, FEB_1, MAR_1, APR_1]


def test_month_end_anchor_is_kept(tsite):
    start_at = ts(2026, 1, 31, 9)
    timemachine.travel(tsite.api, start_at)
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    assert sub["current_term_end"] == ts(2026, 2, 28, 9)
    travel(tsite, ts(2026, 4, 1))
    assert [i["line_items"][0]["date_to"] for i in invoices(tsite, sub["id"])] == [
        ts(2026, 2, 28, 9), ts(2026, 3, 31, 9), ts(2026, 4, 30, 9)]


def test_renewal_with_declined_card_starts_dunning_and_stays_active(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    sub = subscribe(tsite, cust["id"])["subscription"]
    tsite.setting(dunning_retry_days="40")  # no retry of the first invoice before the renewal
    travel(tsite, FEB_1 + 60)
    renewal = invoices(tsite, sub["id"])[-1]
    assert renewal["start_date"] == FEB_1
    assert renewal["status"] == "payment_due" and renewal["dunning_status"] == "in_progress"
    assert sub_of(tsite, sub["id"])["status"] == "active"


def test_plan_trial_then_activation_with_first_invoice(tsite):
    plan(tsite, "trial", 2000, trial_period=14, trial_period_unit="day", setup_cost=300)
    cust = F.customer(tsite)
    body = subscribe(tsite, cust["id"], "trial")
    sub = body["subscription"]
    trial_end = GENESIS + 14 * DAY
    assert sub["status"] == "in_trial" and "invoice" not in body
    assert (sub["trial_start"], sub["trial_end"], sub["current_term_end"]) == (GENESIS, trial_end, trial_end)
    travel(tsite, trial_end - 2 * DAY)
    (ending,) = events(tsite, "subscription_trial_ending")
    assert ending["occurred_at"] == trial_end - 3 * DAY
    travel(tsite, trial_end + 60)
    sub = sub_of(tsite, sub["id"])
    assert sub["status"] == "active" and sub["activated_at"] == trial_end
    assert sub["current_term_end"] == ts(2026, 2, 15)
    (inv,) = invoices(tsite, sub["id"])
    assert inv["first_invoice"] is True and inv["status"] == "paid" and inv["sub_total"] == 2300
    (activated,) = events(tsite, "subscription_activated")
    assert activated["content"]["invoice"]["id"] == inv["id"]


def test_first_invoice_after_trial_is_never_pending(metered_site):
    start(metered_site)
    plan(metered_site, "trial", 2000, trial_period=1, trial_period_unit="month")
    sub = subscribe(metered_site, F.customer(metered_site)["id"], "trial")["subscription"]
    travel(metered_site, FEB_1 + 60)
    (inv,) = invoices(metered_site, sub["id"])
    assert inv["status"] == "paid" and "invoice_created" not in types(metered_site)
    travel(metered_site, MAR_1 + 60)
    assert invoices(metered_site, sub["id"])[-1]["status"] == "pending"


def test_trial_end_param_and_zero(tsite):
    plan(tsite, "trial", 2000, trial_period=14, trial_period_unit="day")
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"], "trial", trial_end=0)["subscription"]
    assert sub["status"] == "active"
    sub = subscribe(tsite, cust["id"], "basic", trial_end=GENESIS + 3 * DAY)["subscription"]
    assert sub["status"] == "in_trial" and sub["trial_end"] == GENESIS + 3 * DAY


def test_trial_ending_without_a_card_cancels(tsite):
    plan(tsite, "trial", 2000, trial_period=7, trial_period_unit="day")
    cust = F.customer(tsite, card=None)
    sub = subscribe(tsite, cust["id"], "trial")["subscription"]
    travel(tsite, GENESIS + 8 * DAY)
    sub = sub_of(tsite, sub["id"])
    assert sub["status"] == "cancelled" and sub["cancel_reason"] == "no_card"
    assert sub["cancelled_at"] == GENESIS + 7 * DAY and invoices(tsite, sub["id"]) == []
    tsite.setting(trial_end_without_card="activate")
    sub = subscribe(tsite, cust["id"], "trial")["subscription"]
    travel(tsite, GENESIS + 16 * DAY)
    assert sub_of(tsite, sub["id"])["status"] == "active"
    assert invoices(tsite, sub["id"])[0]["status"] == "payment_due"


def test_future_subscription_starts_on_its_date(tsite):
    cust = F.customer(tsite)
    body = subscribe(tsite, cust["id"], start_date=GENESIS + 10 * DAY)
    sub = body["subscription"]
    assert sub["status"] == "future" and sub["start_date"] == GENESIS + 10 * DAY and "invoice" not in body
    assert "current_term_end" not in sub
    travel(tsite, GENESIS + 11 * DAY)
    sub = sub_of(tsite, sub["id"])
    assert sub["status"] == "active" and sub["started_at"] == sub["start_date"] == GENESIS + 10 * DAY
    (started,) = events(tsite, "subscription_started")
    assert started["content"]["invoice"]["first_invoice"] is True
    # a future subscription with a trial starts in trial
    sub = subscribe(tsite, cust["id"], start_date=GENESIS + 12 * DAY, trial_end=GENESIS + 20 * DAY)["subscription"]
    travel(tsite, GENESIS + 13 * DAY)
    assert sub_of(tsite, sub["id"])["status"] == "in_trial"


def test_backdated_start(tsite):
    travel(tsite, GENESIS + 10 * DAY)
    sub = subscribe(tsite, F.customer(tsite)["id"], start_date=GENESIS)["subscription"]
    assert sub["current_term_start"] == GENESIS and sub["current_term_end"] == FEB_1
    assert sub["start_date"] == sub["started_at"] == GENESIS and sub["status"] == "active"
    assert invoices(tsite, sub["id"])[0]["line_items"][0]["date_from"] == GENESIS


def test_billing_cycles_end_in_cancellation(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"], billing_cycles=2)["subscription"]
    assert sub["remaining_billing_cycles"] == 1 and sub["status"] == "active"
    travel(tsite, FEB_1 + 60)
    sub = sub_of(tsite, sub["id"])
    assert sub["remaining_billing_cycles"] == 0 and sub["status"] == "non_renewing"
    travel(tsite, MAR_1 + 60)
    sub = sub_of(tsite, sub["id"])
    assert sub["status"] == "cancelled" and sub["cancelled_at"] == MAR_1
    assert len(invoices(tsite, sub["id"])) == 2
    assert "subscription_cancelling" in types(tsite)


def test_plan_billing_cycles_are_the_default(tsite):
    plan(tsite, "once", 1000, billing_cycles=1)
    sub = subscribe(tsite, F.customer(tsite)["id"], "once")["subscription"]
    assert sub["status"] == "non_renewing" and sub["remaining_billing_cycles"] == 0


def test_cancel_now(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"])["subscription"]
    body = tsite.api.post(f"/subscriptions/{sub['id']}/cancel").body
    assert body["subscription"]["status"] == "cancelled" and body["subscription"]["cancelled_at"] == GENESIS
    assert "cancel_reason" not in body["subscription"]
    (ev,) = events(tsite, "subscription_cancelled")
    assert ev["content"]["subscription"]["status"] == "cancelled"
    r = tsite.api.post(f"/subscriptions/{sub['id']}/cancel", expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"
    travel(tsite, MAR_1)
    assert len(invoices(tsite, sub["id"])) == 1


def test_cancel_at_end_of_term(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"])["subscription"]
    body = tsite.api.post(f"/subscriptions/{sub['id']}/cancel", {"end_of_term": "true"}).body
    assert body["subscription"]["status"] == "non_renewing"
    assert types(tsite)[-1] == "subscription_cancellation_scheduled"
    change = tsite.api.get(f"/subscriptions/{sub['id']}/scheduled_changes")["subscription_scheduled_change"]
    assert change["action_type"] == "cancel"
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel", {"end_of_term": "true"}, expect=409)
    travel(tsite, FEB_1 - 2 * DAY)
    (cancelling,) = events(tsite, "subscription_cancelling")
    assert cancelling["occurred_at"] == FEB_1 - 3 * DAY
    assert events(tsite, "subscription_renewal_reminder") == []
    travel(tsite, FEB_1 + 60)
    sub = sub_of(tsite, sub["id"])
    assert sub["status"] == "cancelled" and sub["cancelled_at"] == FEB_1
    assert len(invoices(tsite, sub["id"])) == 1


def test_cancel_during_trial_at_end_of_term_cancels_at_trial_end(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"], trial_end=GENESIS + 5 * DAY)["subscription"]
    body = tsite.api.post(f"/subscriptions/{sub['id']}/cancel", {"end_of_term": "true"}).body
    assert body["subscription"]["status"] == "in_trial"
    travel(tsite, GENESIS + 6 * DAY)
    sub = sub_of(tsite, sub["id"])
    assert sub["status"] == "cancelled" and sub["cancelled_at"] == GENESIS + 5 * DAY
    assert invoices(tsite, sub["id"]) == []


def test_remove_scheduled_cancellation(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    tsite.api.post(f"/subscriptions/{sub['id']}/remove_scheduled_cancellation", expect=409)
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel", {"end_of_term": "true"})
    body = tsite.api.post(f"/subscriptions/{sub['id']}/remove_scheduled_cancellation", {"billing_cycles": 3}).body
    assert body["subscription"]["status"] == "active" and body["subscription"]["remaining_billing_cycles"] == 3
    assert types(tsite)[-1] == "subscription_scheduled_cancellation_removed"
    tsite.api.get(f"/subscriptions/{sub['id']}/scheduled_changes", expect=404)
    travel(tsite, FEB_1 + 60)
    assert sub_of(tsite, sub["id"])["status"] == "active" and len(invoices(tsite, sub["id"])) == 2


def test_update_scheduled_changes_cancel_and_reactivate(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    change = tsite.api.post(f"/subscriptions/{sub['id']}/update_scheduled_changes",
                            {"action_type": "cancel"})["subscription_scheduled_change"]
    assert change["action_type"] == "cancel" and sub_of(tsite, sub["id"])["status"] == "non_renewing"
    tsite.api.post(f"/subscriptions/{sub['id']}/update_scheduled_changes", {"action_type": "reactivate"})
    assert sub_of(tsite, sub["id"])["status"] == "active"
    r = tsite.api.post(f"/subscriptions/{sub['id']}/update_scheduled_changes", {"action_type": "pause"}, expect=400)
    assert r["param"] == "action_type"


def test_reactivate_a_cancelled_subscription(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"])["subscription"]
    tsite.api.post(f"/subscriptions/{sub['id']}/reactivate", expect=409)
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel")
    travel(tsite, GENESIS + 10 * DAY)
    body = tsite.api.post(f"/subscriptions/{sub['id']}/reactivate").body
    now = GENESIS + 10 * DAY
    s = body["subscription"]
    assert s["status"] == "active" and "cancelled_at" not in s
    assert (s["current_term_start"], s["current_term_end"]) == (now, ts(2026, 2, 11))
    assert body["invoice"]["status"] == "paid" and body["invoice"]["line_items"][0]["date_from"] == now
    assert types(tsite)[-4:] == ["subscription_reactivated", "invoice_generated", "transaction_created",
                                 "payment_succeeded"]
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel")
    s = tsite.api.post(f"/subscriptions/{sub['id']}/reactivate", {"trial_end": now + 5 * DAY}).body["subscription"]
    assert s["status"] == "in_trial" and s["trial_end"] == now + 5 * DAY
    r = tsite.api.post(f"/subscriptions/{sub['id']}/reactivate", expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel")
    r = tsite.api.post(f"/subscriptions/{sub['id']}/reactivate", {"trial_end": now - 1}, expect=400)
    assert r["param"] == "trial_end"


def test_reactivate_without_a_card_is_refused(tsite):
    cust = F.customer(tsite, card=None)
    sub = subscribe(tsite, cust["id"], trial_end=GENESIS + DAY)["subscription"]
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel")
    r = tsite.api.post(f"/subscriptions/{sub['id']}/reactivate", expect=400)
    assert r["api_error_code"] == "payment_method_not_present"
    assert sub_of(tsite, sub["id"])["status"] == "cancelled"
    assert invoices(tsite, sub["id"]) == []


def test_change_term_end(tsite):
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    new_end = GENESIS + 10 * DAY
    s = tsite.api.post(f"/subscriptions/{sub['id']}/change_term_end", {"term_ends_at": new_end})["subscription"]
    assert s["current_term_end"] == new_end
    r = tsite.api.post(f"/subscriptions/{sub['id']}/change_term_end", {"term_ends_at": GENESIS - 1}, expect=400)
    assert r["param"] == "term_ends_at"
    travel(tsite, new_end + 60)
    s = sub_of(tsite, sub["id"])
    assert (s["current_term_start"], s["current_term_end"]) == (new_end, ts(2026, 2, 11))
    assert invoices(tsite, sub["id"])[-1]["start_date"] == new_end
    trial = subscribe(tsite, F.customer(tsite)["id"], trial_end=new_end + 5 * DAY)["subscription"]
    s = tsite.api.post(f"/subscriptions/{trial['id']}/change_term_end",
                       {"term_ends_at": new_end + 9 * DAY})["subscription"]
    assert s["trial_end"] == new_end + 9 * DAY and types(tsite)[-1] == "subscription_trial_extended"


def test_renewal_reminder(tsite):
    tsite.setting(renewal_reminder_days=5)
    sub = subscribe(tsite, F.customer(tsite)["id"])["subscription"]
    travel(tsite, FEB_1 - DAY)
    (ev,) = events(tsite, "subscription_renewal_reminder")
    assert ev["occurred_at"] == FEB_1 - 5 * DAY and ev["content"]["subscription"]["id"] == sub["id"]
    assert ev["content"]["customer"] and ev["content"]["card"]
    travel(tsite, MAR_1 - DAY)
    assert len(events(tsite, "subscription_renewal_reminder")) == 2


def test_dunning_exhausted_cancels_the_subscription(tsite):
    tsite.setting(dunning_cancel_subscription="true")
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    sub = subscribe(tsite, cust["id"])["subscription"]
    travel(tsite, GENESIS + 6 * DAY)
    s = sub_of(tsite, sub["id"])
    assert s["status"] == "cancelled" and s["cancel_reason"] == "not_paid"
    assert s["cancelled_at"] == GENESIS + 5 * DAY
    (inv,) = invoices(tsite, sub["id"])
    assert inv["status"] == "not_paid" and inv["dunning_status"] == "exhausted"
    travel(tsite, MAR_1)
    assert len(invoices(tsite, sub["id"])) == 1


def test_dunning_exhausted_leaves_the_subscription_by_default(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    sub = subscribe(tsite, cust["id"])["subscription"]
    travel(tsite, GENESIS + 6 * DAY)
    assert sub_of(tsite, sub["id"])["status"] == "active"


def test_a_due_renewal_runs_once_with_several_workers(tsite):
    import asyncio
    import concurrent.futures

    from billhive.services import jobs as runner

    subs = [subscribe(tsite, F.customer(tsite)["id"])["subscription"] for _ in range(3)]

    def work(_):
        return asyncio.run(runner.run_due(tsite.app, tsite.pk, at=FEB_1))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ran = list(pool.map(work, range(4)))
    assert sum(ran) == 6  # three reminders and three renewals, each run by exactly one worker
    for s in subs:
        assert [i["start_date"] for i in invoices(tsite, s["id"])] == [GENESIS, FEB_1]
        assert sub_of(tsite, s["id"])["current_term_end"] == MAR_1
    assert len(events(tsite, "subscription_renewed")) == 3


def test_a_failing_job_in_a_batch_loses_and_duplicates_none_of_the_others(tsite, monkeypatch):
    """The time travel runs due jobs many to a transaction, each in its own savepoint: one job's
    failure rolls back only its own changes (it is put back for a retry); the others commit once."""
    import asyncio

    from sqlalchemy import select

    from billhive.services import jobs as runner
    from billhive.services import subscriptions
    from billhive.store import schema as S

    subs = [subscribe(tsite, F.customer(tsite)["id"])["subscription"] for _ in range(4)]
    bad = subs[1]["id"]
    real = runner.HANDLERS[subscriptions.JOB_TERM_END]

    def failing(w, job):
        real(w, job)  # its writes happen, then it fails: the savepoint must take them back
        if job.ref_id == bad:
            raise RuntimeError("boom")
    monkeypatch.setitem(runner.HANDLERS, subscriptions.JOB_TERM_END, failing)
    ran = asyncio.run(runner.run_due(tsite.app, tsite.pk, at=FEB_1, batch=50))
    assert ran == 8  # four reminders and four renewals, in one batch
    for s in subs:
        starts = [i["start_date"] for i in invoices(tsite, s["id"])]
        assert starts == ([GENESIS] if s["id"] == bad else [GENESIS, FEB_1])
        assert sub_of(tsite, s["id"])["current_term_end"] == (FEB_1 if s["id"] == bad else MAR_1)
    assert len(events(tsite, "subscription_renewed")) == 3
    assert asyncio.run(runner.run_due(tsite.app, tsite.pk, at=FEB_1, batch=50)) == 0  # nothing runs twice
    back = tsite.app.db.read_sync(lambda tx: tx.all(
        select(S.jobs.c.ref_id, S.jobs.c.attempts, S.jobs.c.due_at).where(
            S.jobs.c.site_id == tsite.pk, S.jobs.c.kind == subscriptions.JOB_TERM_END, S.jobs.c.attempts > 0)))
    assert [(r[0], r[1]) for r in back] == [(bad, 1)] and back[0][2] > FEB_1  # put back for a retry, later
