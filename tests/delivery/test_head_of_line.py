"""A hanging destination slows only itself: while one site's webhook endpoint (or SMTP server)
hangs on a backlog of deliveries, another site's webhooks (emails) still go out at once, and the
hanging destination never has more than its bound in flight."""

from __future__ import annotations

import time

from billhive import sites
from tests.support.delivery import add_endpoint, emit, wait_until, webhook_deliveries

BACKLOG = 100


def test_hanging_endpoint_does_not_delay_another_sites_webhooks(make_site, receiver, silent):
    a, b = make_site(), make_site()
    add_endpoint(a, silent.url)  # never answers: each attempt waits out the site's webhook_timeout
    add_endpoint(b, receiver.url)
    emit(a, n=BACKLOG)
    wait_until(lambda: silent.accepted, timeout=10, what="site A's endpoint being called")

    started = time.monotonic()
    (ev,) = emit(b)
    wait_until(lambda: receiver.for_event(ev["id"]), timeout=2, interval=0.01, what="site B's webhook")
    assert time.monotonic() - started < 2
    time.sleep(0.2)  # the hanging endpoint's lane has had every chance to start more
    assert silent.accepted == a.app.config.webhook_concurrency_per_endpoint  # its bound, no more


def test_hanging_endpoint_does_not_delay_the_same_sites_other_endpoint(make_site, receiver, silent):
    a = make_site()
    hanging = add_endpoint(a, silent.url)
    add_endpoint(a, receiver.url)
    emit(a, n=BACKLOG)  # every event goes to both endpoints
    # all of them reach the healthy endpoint before the hanging endpoint's first attempts could time
    # out (the site's webhook_timeout, 10 s): none of those attempts has ended when the last arrives
    timeout = sites.SETTINGS["webhook_timeout"].default
    wait_until(lambda: len(receiver.received) == BACKLOG, timeout=timeout - 1, interval=0.01,
               what="the healthy endpoint's deliveries")
    ended = [d for d in webhook_deliveries(a) if d["endpoint_id"] == hanging.id and d["last_error"]]
    assert ended == []
    assert silent.accepted == a.app.config.webhook_concurrency_per_endpoint


def test_hanging_smtp_server_does_not_delay_another_sites_emails(make_site, smtp, silent):
    a, b = make_site(), make_site()
    a.setting(email_enabled="true", smtp_host="127.0.0.1", smtp_port=silent.port)  # never greets
    b.setting(**smtp.settings())
    emit(a, "payment_succeeded", n=BACKLOG)
    wait_until(lambda: silent.accepted, timeout=10, what="site A's SMTP server being called")

    started = time.monotonic()
    (ev,) = emit(b, "payment_succeeded")
    wait_until(lambda: smtp.for_event(ev["id"]), timeout=2, interval=0.01, what="site B's email")
    assert time.monotonic() - started < 2
    time.sleep(0.2)
    assert silent.accepted == a.app.config.email_concurrency_per_site
