"""The dunning schedule (domain/dunning.py) on plain values: no database, no HTTP.

Sources: SEMANTICS.md, "Dunning" (starts when an automatic charge fails; retries at the site's
offsets from the first failure, default 1, 3, 5 days; ends as success / stopped / exhausted, then
the site's final action: not_paid or voided, optionally cancelling the subscription with
cancel_reason not_paid); the spec's Invoice.dunning_status ("in_progress", "exhausted": maximum
number of attempts made, "stopped", "success": collected during dunning) and
stop_dunning_for_invoice ("the status of the invoice will be changed to Not Paid")."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import dunning

NOW = 1_700_000_000
DAY = 86400
DEFAULT = dunning.Settings()


def due(**extra) -> dict:
    return {"id": "7", "status": "payment_due", "amount_due": 500, "subscription_id": "sub_1", **extra}


def test_a_first_failure_starts_dunning_at_the_first_offset():
    d = dunning.on_failure(due(), dunning.State(), DEFAULT, NOW, retry=False)
    assert d.invoice["dunning_status"] == "in_progress" and d.invoice["next_retry"] == NOW + DAY
    assert d.retry_at == NOW + DAY and d.state == dunning.State(0, NOW)
    assert d.columns == {"dunning_attempts": 0, "dunning_started_at": NOW}
    assert not (d.cancel_retry or d.release_credits or d.cancel_subscription)


def test_failed_retries_count_from_the_first_failure():
    inv = due(dunning_status="in_progress", next_retry=NOW + DAY)
    d = dunning.on_failure(inv, dunning.State(0, NOW), DEFAULT, NOW + DAY, retry=True)
    assert d.state == dunning.State(1, NOW) and d.retry_at == NOW + 3 * DAY
    d = dunning.on_failure(d.invoice, d.state, DEFAULT, NOW + 3 * DAY, retry=True)
    assert d.state == dunning.State(2, NOW) and d.retry_at == NOW + 5 * DAY


def test_the_last_failed_retry_exhausts_dunning_and_marks_not_paid():
    inv = due(dunning_status="in_progress", next_retry=NOW + 5 * DAY)
    d = dunning.on_failure(inv, dunning.State(2, NOW), DEFAULT, NOW + 5 * DAY, retry=True)
    assert d.invoice["dunning_status"] == "exhausted" and "next_retry" not in d.invoice
    assert d.invoice["status"] == "not_paid" and d.retry_at is None and d.cancel_subscription is None


def test_final_actions():
    inv = due(dunning_status="in_progress")
    state = dunning.State(0, NOW)
    voided = dunning.on_failure(inv, state, dunning.Settings((1,), "voided"), NOW + DAY, retry=True)
    assert voided.invoice["status"] == "voided" and voided.invoice["voided_at"] == NOW + DAY
    assert voided.release_credits
    left = dunning.on_failure(inv, state, dunning.Settings((1,), "payment_due"), NOW + DAY, retry=True)
    assert left.invoice["status"] == "payment_due" and left.invoice["dunning_status"] == "exhausted"
    assert not left.release_credits
    cancel = dunning.on_failure(inv, state, dunning.Settings((1,), "not_paid", True), NOW + DAY, retry=True)
    assert cancel.cancel_subscription == "sub_1" and cancel.invoice["status"] == "not_paid"
    no_sub = dunning.on_failure({**inv, "subscription_id": None}, state, dunning.Settings((1,), "not_paid", True),
                                NOW + DAY, retry=True)
    assert no_sub.cancel_subscription is None


def test_no_offsets_exhaust_at_the_first_failure():
    d = dunning.on_failure(due(), dunning.State(), dunning.Settings(()), NOW, retry=False)
    assert d.invoice["dunning_status"] == "exhausted" and d.invoice["status"] == "not_paid"
    assert d.state == dunning.State(0, NOW)


def test_a_failure_outside_dunning_starts_it_again():
    # a retry job whose invoice is no longer in dunning (stopped, then failed again) starts over
    d = dunning.on_failure(due(dunning_status="stopped"), dunning.State(2, NOW - DAY), DEFAULT, NOW, retry=True)
    assert d.state == dunning.State(0, NOW) and d.retry_at == NOW + DAY


def test_paid_ends_dunning():
    inv = due(dunning_status="in_progress", next_retry=NOW + DAY)
    by_retry = dunning.on_paid(inv, by_retry=True)
    assert by_retry.invoice["dunning_status"] == "success" and "next_retry" not in by_retry.invoice
    assert by_retry.cancel_retry
    assert dunning.on_paid(inv, by_retry=False).invoice["dunning_status"] == "stopped"
    untouched = dunning.on_paid(due(), by_retry=False)  # never in dunning: nothing to end
    assert "dunning_status" not in untouched.invoice and not untouched.cancel_retry


def test_stop_and_leave():
    inv = due(dunning_status="in_progress", next_retry=NOW + DAY)
    stopped = dunning.stop(inv)
    assert stopped.invoice["status"] == "not_paid" and stopped.invoice["dunning_status"] == "stopped"
    assert stopped.cancel_retry and "next_retry" not in stopped.invoice
    left = dunning.leave(inv)
    assert left.invoice["status"] == "payment_due" and left.invoice["dunning_status"] == "stopped"
    assert left.cancel_retry
    exhausted = dunning.leave(due(dunning_status="exhausted", status="not_paid"))
    assert exhausted.invoice["dunning_status"] == "exhausted"


def test_a_due_retry_needs_an_unpaid_invoice_in_dunning():
    assert dunning.retry_due(due(dunning_status="in_progress"))
    assert not dunning.retry_due(None)
    assert not dunning.retry_due(due(dunning_status="stopped"))
    assert not dunning.retry_due(due(dunning_status="in_progress", status="paid"))
    assert not dunning.retry_due(due(dunning_status="in_progress", amount_due=0))


def test_decisions_do_not_change_their_input():
    inv = due(dunning_status="in_progress", next_retry=NOW + DAY)
    before = repr(inv)
    dunning.on_failure(inv, dunning.State(5, NOW), dunning.Settings((1,), "voided", True), NOW, retry=True)
    dunning.on_paid(inv, by_retry=True)
    dunning.stop(inv)
    dunning.leave(inv)
    assert repr(inv) == before


@given(st.lists(st.integers(0, 60), max_size=6), st.integers(0, 10**6))
def test_the_schedule_retries_once_per_offset_then_exhausts(offsets, start):
    settings = dunning.Settings(tuple(offsets))
    d = dunning.on_failure(due(), dunning.State(), settings, start, retry=False)
    retries = []
    while d.retry_at is not None:
        retries.append(d.retry_at)
        d = dunning.on_failure(d.invoice, d.state, settings, d.retry_at, retry=True)
    assert retries == [start + o * DAY for o in offsets]
    assert d.invoice["dunning_status"] == "exhausted" and d.invoice["status"] == "not_paid"
