"""Webhook delivery: body, signature, auth, retries on the site clock, filters, resend."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time

from billhive.delivery import webhooks
from tests.support import documents
from tests.support.delivery import (
    GENESIS,
    add_endpoint,
    emit,
    event,
    run_delivery_pass,
    set_endpoint,
    travel,
    wait_until,
    webhook_attempts,
    webhook_deliveries,
)


def verify_signature(secret: str, header: str, body: bytes, now: float, tolerance: int = 300) -> bool:
    """The README's check, written independently of billhive: header "t=<unix>,v1=<hex>",
    v1 = HMAC-SHA256(secret, "<t>.<raw body>"), t within a tolerance of now."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = fields["t"]
    expected = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(now - int(timestamp)) <= tolerance


def delivered(site, event_id: str, status: str = "succeeded"):
    def check():
        rows = webhook_deliveries(site, event_id)
        return rows if rows and all(r["status"] == status for r in rows) else None
    return wait_until(check, what=f"{event_id} {status}")


def test_event_posted_as_the_api_returns_it_signed(tm_site, receiver):
    ep = add_endpoint(tm_site, receiver.url, secret="whsec_unit_test_secret")
    (ev,) = emit(tm_site, "customer_created")
    assert ev["webhook_status"] == "scheduled"
    assert ev["webhooks"] == [{"id": ep.id, "webhook_status": "scheduled"}]
    delivered(tm_site, ev["id"])
    (got,) = receiver.for_event(ev["id"])
    assert got.headers["content-type"] == "application/json"
    assert verify_signature("whsec_unit_test_secret", got.headers["x-billhive-signature"], got.body, time.time())
    assert not verify_signature("whsec_other", got.headers["x-billhive-signature"], got.body, time.time())
    assert not verify_signature("whsec_unit_test_secret", got.headers["x-billhive-signature"],
                                got.body.replace(b"cust_1", b"cust_2"), time.time())
    assert "authorization" not in got.headers
    # the body is the stored event: what GET /events/{id} returned when it was sent
    sent = got.json
    assert sent == {**ev, "webhooks": [{"id": ep.id, "webhook_status": "scheduled"}]}
    now = tm_site.api.get(f"/events/{ev['id']}")["event"]
    assert {k: v for k, v in sent.items() if k not in ("webhook_status", "webhooks")} == \
        {k: v for k, v in now.items() if k not in ("webhook_status", "webhooks")}
    assert now["webhook_status"] == "succeeded"
    assert now["webhooks"] == [{"id": ep.id, "webhook_status": "succeeded"}]
    (d,) = webhook_deliveries(tm_site, ev["id"])
    (a,) = webhook_attempts(tm_site, d["pk"])
    assert (a["attempt"], a["attempted_at"], a["status_code"], a["error"]) == (1, GENESIS, 200, None)
    assert d["attempts"] == 1 and d["claimed_until"] is None and d["next_attempt_at"] is None
    listed = tm_site.api.get("/events", {"webhook_status": "succeeded"})["list"]
    assert [e["event"]["id"] for e in listed] == [ev["id"]]


def test_basic_auth_is_sent(tm_site, receiver):
    add_endpoint(tm_site, receiver.url, username="hook-user", password="s3cret:pass")
    (ev,) = emit(tm_site)
    delivered(tm_site, ev["id"])
    (got,) = receiver.for_event(ev["id"])
    scheme, _, token = got.headers["authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(token).decode() == "hook-user:s3cret:pass"


def test_retry_schedule_on_the_site_clock_then_failed(tm_site, receiver):
    receiver.status = 500
    add_endpoint(tm_site, receiver.url)
    (ev,) = emit(tm_site)
    (d,) = webhook_deliveries(tm_site, ev["id"])
    at = GENESIS
    expected_times = [at]
    for delay in (120, 360, 1800, 3600, 18000, 86400, 172800):
        n = len(expected_times)
        wait_until(lambda n=n: len([a for a in webhook_attempts(tm_site, d["pk"]) if a["error"] != "in progress"]) == n
                   and webhook_deliveries(tm_site, ev["id"])[0]["claimed_until"] is None, what=f"attempt {n}")
        row = webhook_deliveries(tm_site, ev["id"])[0]
        assert row["status"] == "re_scheduled" and row["next_attempt_at"] == at + delay
        assert event(tm_site, ev["id"])["webhook_status"] == "re_scheduled"
        travel(tm_site, at + delay - 1)  # one second early: nothing happens
        run_delivery_pass(tm_site.app)
        assert len(webhook_attempts(tm_site, d["pk"])) == n
        at += delay
        travel(tm_site, at)
        expected_times.append(at)
    delivered(tm_site, ev["id"], "failed")
    attempts = webhook_attempts(tm_site, d["pk"])
    assert [a["attempt"] for a in attempts] == list(range(1, 9))
    assert [a["attempted_at"] for a in attempts] == expected_times
    assert expected_times[-1] - GENESIS == 2 * 60 + 6 * 60 + 30 * 60 + 3600 + 5 * 3600 + 86400 + 2 * 86400
    assert all(a["status_code"] == 500 and a["error"].startswith("HTTP 500") for a in attempts)
    assert len(receiver.for_event(ev["id"])) == 8
    got = tm_site.api.get(f"/events/{ev['id']}")["event"]
    assert got["webhook_status"] == "failed" and got["webhooks"][0]["webhook_status"] == "failed"
    travel(tm_site, at + 10 * 86400)  # nothing more, ever
    run_delivery_pass(tm_site.app)
    assert len(webhook_attempts(tm_site, d["pk"])) == 8


def test_failure_then_success_on_retry(tm_site, receiver):
    receiver.stop()  # connection refused
    add_endpoint(tm_site, receiver.url)
    (ev,) = emit(tm_site)
    (d,) = delivered(tm_site, ev["id"], "re_scheduled")
    (a,) = webhook_attempts(tm_site, d["pk"])
    assert a["status_code"] is None and "Connect" in a["error"]
    assert d["last_error"] == a["error"]
    receiver.start()
    travel(tm_site, GENESIS + 120)
    delivered(tm_site, ev["id"])
    assert [x["status_code"] for x in webhook_attempts(tm_site, d["pk"])] == [None, 200]
    assert event(tm_site, ev["id"])["webhook_status"] == "succeeded"


def test_non_2xx_and_redirects_are_failures(tm_site, receiver):
    add_endpoint(tm_site, receiver.url)
    for status in (302, 404, 503):
        receiver.status = status
        (ev,) = emit(tm_site)
        (d,) = delivered(tm_site, ev["id"], "re_scheduled")
        assert d["last_status_code"] == status
    receiver.status = 204
    (ev,) = emit(tm_site)
    delivered(tm_site, ev["id"])


def test_timeout_counts_as_a_failed_attempt(tm_site, receiver):
    tm_site.setting(webhook_timeout=1)
    receiver.delay = 1.6
    add_endpoint(tm_site, receiver.url)
    (ev,) = emit(tm_site)
    (d,) = delivered(tm_site, ev["id"], "re_scheduled")
    (a,) = webhook_attempts(tm_site, d["pk"])
    assert a["error"] == "timed out after 1s" and a["status_code"] is None and 900 <= a["duration_ms"] < 5000


def test_event_type_filter_per_endpoint(tm_site, receiver):
    only = add_endpoint(tm_site, receiver.url + "/invoices", event_types=["invoice_generated"])
    every = add_endpoint(tm_site, receiver.url + "/all")
    (created,) = emit(tm_site, "customer_created")
    (generated,) = emit(tm_site, "invoice_generated", {"invoice": documents.INVOICE})
    assert created["webhooks"] == [{"id": every.id, "webhook_status": "scheduled"}]
    assert [w["id"] for w in generated["webhooks"]] == [only.id, every.id]
    delivered(tm_site, created["id"])
    delivered(tm_site, generated["id"])
    assert [r.path for r in receiver.for_event(created["id"])] == ["/hook/all"]
    assert sorted(r.path for r in receiver.for_event(generated["id"])) == ["/hook/all", "/hook/invoices"]
    assert tm_site.api.get(f"/events/{generated['id']}")["event"]["webhooks"] == [
        {"id": only.id, "webhook_status": "succeeded"}, {"id": every.id, "webhook_status": "succeeded"}]


def test_one_endpoint_failing_keeps_the_event_re_scheduled_then_failed(tm_site, receiver):
    receiver.respond = lambda got: 500 if got.path == "/hook/bad" else 200
    good = add_endpoint(tm_site, receiver.url + "/good")
    bad = add_endpoint(tm_site, receiver.url + "/bad")
    (ev,) = emit(tm_site)
    wait_until(lambda: {r["endpoint_id"]: r["status"] for r in webhook_deliveries(tm_site, ev["id"])}
               == {good.id: "succeeded", bad.id: "re_scheduled"})
    got = tm_site.api.get(f"/events/{ev['id']}")["event"]
    assert got["webhook_status"] == "re_scheduled"
    assert got["webhooks"] == [{"id": good.id, "webhook_status": "succeeded"},
                               {"id": bad.id, "webhook_status": "re_scheduled"}]
    assert webhooks.aggregate(["succeeded", "failed"]) == "failed"
    assert webhooks.aggregate(["scheduled", "succeeded"]) == "scheduled"
    assert webhooks.aggregate(["scheduled", "failed"]) == "re_scheduled"
    assert webhooks.aggregate(["disabled", "succeeded"]) == "succeeded"
    assert webhooks.aggregate(["disabled"]) == "disabled"


def test_disabled_endpoint_gets_nothing(tm_site, receiver):
    ep = add_endpoint(tm_site, receiver.url, enabled=False)
    (ev,) = emit(tm_site)
    assert ev["webhook_status"] == "not_configured" and ev["webhooks"] == []
    assert webhook_deliveries(tm_site, ev["id"]) == []
    # disabled after the event was scheduled: the delivery is dropped as "disabled", nothing sent
    receiver.stop()
    set_endpoint(tm_site, ep.id, enabled=True)
    (ev2,) = emit(tm_site)
    delivered(tm_site, ev2["id"], "re_scheduled")
    set_endpoint(tm_site, ep.id, enabled=False)
    receiver.start()
    travel(tm_site, GENESIS + 120)
    (d,) = delivered(tm_site, ev2["id"], "disabled")
    assert d["last_error"] == "endpoint disabled" and d["attempts"] == 1
    assert receiver.received == []
    got = tm_site.api.get(f"/events/{ev2['id']}")["event"]
    assert got["webhooks"] == [{"id": ep.id, "webhook_status": "disabled"}]


def test_resend_delivers_again(tm_site, receiver):
    ep = add_endpoint(tm_site, receiver.url)
    (ev,) = emit(tm_site)
    delivered(tm_site, ev["id"])
    body = tm_site.api.post(f"/events/{ev['id']}/resend").body
    assert set(body) == {"event"} and body["event"]["id"] == ev["id"]
    assert body["event"]["webhook_status"] == "scheduled"
    assert body["event"]["webhooks"] == [{"id": ep.id, "webhook_status": "scheduled"}]
    wait_until(lambda: len(receiver.for_event(ev["id"])) == 2)
    (d,) = delivered(tm_site, ev["id"])
    assert (d["attempts"], d["round_start"]) == (2, 1)
    assert [a["status_code"] for a in webhook_attempts(tm_site, d["pk"])] == [200, 200]
    # a failed-for-good delivery starts a fresh retry schedule
    receiver.status = 500
    tm_site.api.post(f"/events/{ev['id']}/resend")
    (d,) = delivered(tm_site, ev["id"], "re_scheduled")
    assert d["next_attempt_at"] == GENESIS + 120
    assert tm_site.api.post("/events/ev_nope/resend", expect=404)["api_error_code"] == "resource_not_found"


def test_resend_of_a_skipped_event_and_without_endpoints(tm_site, receiver):
    from billhive.work.context import Origin

    (ev,) = emit(tm_site, origin=Origin(user="t", skip_webhooks=True))
    r = tm_site.api.post(f"/events/{ev['id']}/resend", expect=400)
    assert r["api_error_code"] == "invalid_request"
    add_endpoint(tm_site, receiver.url)
    got = tm_site.api.post(f"/events/{ev['id']}/resend")["event"]
    assert got["webhook_status"] == "scheduled"
    delivered(tm_site, ev["id"])
    assert len(receiver.for_event(ev["id"])) == 1


def test_resend_needs_a_full_access_key(tm_site):
    (ev,) = emit(tm_site)
    r = tm_site.api.with_key(tm_site.read_only_key).post(f"/events/{ev['id']}/resend", expect=403)
    assert r["api_error_code"] == "api_authorization_failed"


def test_concurrent_workers_never_deliver_one_attempt_twice(tm_site, receiver):
    """Four extra workers (own threads and event loops) race the server's own loop."""
    receiver.delay = 0.01
    add_endpoint(tm_site, receiver.url)
    events = emit(tm_site, n=200)
    stop = threading.Event()

    def extra_worker() -> None:
        while not stop.is_set():
            run_delivery_pass(tm_site.app)

    threads = [threading.Thread(target=extra_worker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(r["status"] == "succeeded" for r in webhook_deliveries(tm_site)), timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join()
    got = receiver.events()
    assert sorted(got) == sorted(e["id"] for e in events)  # each exactly once
    assert len(webhook_attempts(tm_site)) == 200


def test_crash_between_post_and_record_redelivers(tm_site, receiver, short_lease, monkeypatch):
    """The answer is lost (the worker dies before recording it): the lease runs out and the
    event is delivered again - a duplicate, never a loss."""
    tm_site.setting(webhook_timeout=1)
    add_endpoint(tm_site, receiver.url)
    real = webhooks._record
    crashed: list[str] = []

    def crash_once(batch, results):
        if not crashed:
            crashed.extend(c.event_id for c in batch.claims)
            raise RuntimeError("injected crash after the POST")
        return real(batch, results)

    monkeypatch.setattr(webhooks, "_record", crash_once)
    events = emit(tm_site, n=5)
    wait_until(lambda: all(r["status"] == "succeeded" for r in webhook_deliveries(tm_site)), timeout=20)
    ids = [e["id"] for e in events]
    got = receiver.events()
    assert set(got) == set(ids)
    duplicates = {i for i in got if got.count(i) > 1}
    assert duplicates == set(crashed) and all(got.count(i) == 2 for i in duplicates)
    for eid in crashed:
        (d,) = webhook_deliveries(tm_site, eid)
        attempts = webhook_attempts(tm_site, d["pk"])
        assert attempts[0]["error"].startswith("no result recorded") and attempts[1]["status_code"] == 200
