"""Faults on purpose (issue 14, part 5): a webhook endpoint's delivery modes, set over the admin
API and observed by a real local HTTP receiver - duplicate, out_of_order, delay_seconds,
fail_first_n (on Chargebee's retry schedule, moved by the time machine). Chargebee warns that
webhooks may arrive twice and out of order (docs/CHOICES.md); these let receivers test for it."""

from __future__ import annotations

import time

import pytest

from tests.support.admin import Admin
from tests.support.delivery import (
    GENESIS,
    WebhookReceiver,
    add_endpoint,
    emit,
    travel,
    wait_until,
    webhook_attempts,
    webhook_deliveries,
)

TOKEN = "admin-token-for-webhook-fault-tests"


@pytest.fixture
def admin(server, monkeypatch) -> Admin:
    monkeypatch.setattr(server.app.config, "admin_token", TOKEN)
    return Admin(server.base_url, TOKEN)


def _set(admin: Admin, site, endpoint_id: str, **modes) -> dict:
    return admin.post(f"/sites/{site.name}/webhook_endpoints/{endpoint_id}/fault", modes)["webhook_endpoint_fault"]


def _done(site, event_id: str, status: str = "succeeded") -> list[dict]:
    def check():
        rows = webhook_deliveries(site, event_id)
        return rows if rows and all(r["status"] == status and r["claimed_until"] is None for r in rows) else None
    return wait_until(check, what=f"{event_id} {status}")


def test_duplicate_sends_every_delivery_twice(admin, tm_site, receiver):
    ep = add_endpoint(tm_site, receiver.url)
    shown = _set(admin, tm_site, ep.id, duplicate=True)
    assert shown["fault"]["duplicate"] is True and shown["endpoint_id"] == ep.id
    (ev,) = emit(tm_site)
    (d,) = _done(tm_site, ev["id"])
    wait_until(lambda: len(receiver.for_event(ev["id"])) == 2, what="the duplicate")
    a, b = receiver.for_event(ev["id"])
    assert a.body == b.body  # the same event id and body: a receiver must dedupe on the id
    assert len(webhook_attempts(tm_site, d["pk"])) == 1  # one attempt, sent twice
    # cleared: delivered once again
    admin.delete(f"/sites/{tm_site.name}/webhook_endpoints/{ep.id}/fault")
    (ev2,) = emit(tm_site)
    _done(tm_site, ev2["id"])
    time.sleep(0.3)
    assert len(receiver.for_event(ev2["id"])) == 1


def test_out_of_order_sends_a_window_newest_first(admin, tm_site, receiver):
    ep = add_endpoint(tm_site, receiver.url)
    _set(admin, tm_site, ep.id, out_of_order=True, window_seconds=1)
    first = emit(tm_site)  # claimed at once, then held for the window
    time.sleep(0.3)
    rest = emit(tm_site, n=3)  # become due inside the window
    ids = [e["id"] for e in first + rest]
    for i in ids:
        _done(tm_site, i)
    got = [r for r in receiver.events() if r in ids]
    assert got == list(reversed(ids))


def test_delay_holds_each_delivery(admin, tm_site, receiver):
    ep = add_endpoint(tm_site, receiver.url)
    _set(admin, tm_site, ep.id, delay_seconds=1)
    started = time.monotonic()
    (ev,) = emit(tm_site)
    time.sleep(0.6)
    assert receiver.for_event(ev["id"]) == []  # not yet
    wait_until(lambda: receiver.for_event(ev["id"]), what="the delayed delivery")
    assert time.monotonic() - started >= 1.0
    _done(tm_site, ev["id"])


def test_fail_first_n_runs_the_retry_schedule(admin, tm_site, receiver):
    ep = add_endpoint(tm_site, receiver.url)
    _set(admin, tm_site, ep.id, fail_first_n=2)
    (ev,) = emit(tm_site)

    def attempted(n: int) -> dict:
        def check():
            (row,) = webhook_deliveries(tm_site, ev["id"])
            done = [a for a in webhook_attempts(tm_site, row["pk"]) if a["error"] != "in progress"]
            return row if len(done) == n and row["claimed_until"] is None else None
        return wait_until(check, what=f"attempt {n}")
    d = attempted(1)
    assert d["status"] == "re_scheduled"
    assert d["next_attempt_at"] == GENESIS + 120  # Chargebee's first retry: +2 min, on the site clock
    travel(tm_site, GENESIS + 120)
    d = attempted(2)
    assert d["status"] == "re_scheduled" and d["next_attempt_at"] == GENESIS + 120 + 360
    travel(tm_site, GENESIS + 120 + 360)
    (d,) = _done(tm_site, ev["id"])
    attempts = webhook_attempts(tm_site, d["pk"])
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["attempted_at"] for a in attempts] == [GENESIS, GENESIS + 120, GENESIS + 480]
    assert all("fail_first_n" in a["error"] and a["status_code"] == 200 for a in attempts[:2])
    assert attempts[2]["error"] is None
    assert len(receiver.for_event(ev["id"])) == 3  # each attempt was sent: the receiver saw the retries
    assert tm_site.api.get(f"/events/{ev['id']}")["event"]["webhook_status"] == "succeeded"


def test_modes_never_reach_another_site_or_endpoint(admin, tm_site, make_site, receiver):
    other_receiver = WebhookReceiver()
    try:
        other = make_site()
        other.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
        faulty = add_endpoint(tm_site, receiver.url)
        plain = add_endpoint(tm_site, other_receiver.url)
        theirs = add_endpoint(other, other_receiver.url)
        _set(admin, tm_site, faulty.id, duplicate=True, fail_first_n=1)
        (ev,) = emit(tm_site)
        (ev_other,) = emit(other)
        _done(other, ev_other["id"])
        wait_until(lambda: len(other_receiver.for_event(ev["id"])) == 1, what="the plain endpoint")
        time.sleep(0.3)
        assert len(other_receiver.for_event(ev_other["id"])) == 1
        assert len(other_receiver.for_event(ev["id"])) == 1
        rows = {r["endpoint_id"]: r for r in webhook_deliveries(tm_site, ev["id"])}
        wait_until(lambda: {r["endpoint_id"]: r["status"] for r in webhook_deliveries(tm_site, ev["id"])}
                   == {faulty.id: "re_scheduled", plain.id: "succeeded"}, what="statuses")
        assert set(rows) == {faulty.id, plain.id}
        assert admin.get(f"/sites/{other.name}/faults")["webhook_endpoints"] == []
        listed = admin.get(f"/sites/{tm_site.name}/faults")["webhook_endpoints"]
        assert [e["endpoint_id"] for e in listed] == [faulty.id]
        assert theirs.id not in {e["endpoint_id"] for e in listed}
    finally:
        other_receiver.stop()


@pytest.mark.parametrize("body, param", [
    ({}, "duplicate"),
    ({"duplicate": "yes"}, "duplicate"),
    ({"delay_seconds": 61}, "delay_seconds"),
    ({"window_seconds": 3}, "window_seconds"),
    ({"fail_first_n": 9}, "fail_first_n"),
    ({"shuffle": True}, "shuffle"),
])
def test_bad_modes_name_the_field(admin, site, body, param):
    ep = add_endpoint(site, "http://127.0.0.1:9/hook")
    assert admin.post(f"/sites/{site.name}/webhook_endpoints/{ep.id}/fault", body, expect=400)["param"] == param
    assert "fault" not in admin.get(f"/sites/{site.name}/webhook_endpoints/{ep.id}/fault")["webhook_endpoint_fault"]
    admin.post(f"/sites/{site.name}/webhook_endpoints/wh_nope/fault", {"duplicate": True}, expect=404)


def test_clearing_all_faults_clears_the_modes(admin, site):
    ep = add_endpoint(site, "http://127.0.0.1:9/hook")
    _set(admin, site, ep.id, delay_seconds=5)
    admin.post(f"/sites/{site.name}/faults", {"operation": "list_customers", "status": 503})
    cleared = admin.delete(f"/sites/{site.name}/faults")["faults"]
    assert cleared == {"fault_rules_deleted": 1, "webhook_endpoints_cleared": [ep.id], "object": "faults_cleared"}
    assert admin.get(f"/sites/{site.name}/faults").body == {"list": [], "webhook_endpoints": []}
    site.api.get("/customers")
