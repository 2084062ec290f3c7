"""The skip headers on a real collect: chargebee-event-actions / -webhook / -email: all-disabled
on POST /invoices/{id}/collect -> its events (invoice_generated, transaction_created,
payment_succeeded) are recorded, but no webhook and/or no email goes out for them."""

from __future__ import annotations

import pytest

from tests.support import factories as F
from tests.support.delivery import add_endpoint, no_deliveries, wait_until


@pytest.fixture
def busy_site(tm_site, receiver, smtp):
    """Every event fires a webhook; invoice_generated and payment_succeeded send an email."""
    add_endpoint(tm_site, receiver.url)
    tm_site.setting(**smtp.settings())
    return tm_site


def collect(site, headers: dict[str, str]) -> dict:
    cust = F.customer(site, email="payer@example.com")
    draft = F.pending_invoice(site, cust["id"])
    return site.api.post(f"/invoices/{draft['id']}/collect", headers=headers)["invoice"]


def test_without_headers_webhooks_and_emails_go_out(busy_site, receiver, smtp):
    inv = collect(busy_site, {})
    assert inv["status"] == "paid"
    events = F.events_of(busy_site)
    paid = next(e for e in events if e["event_type"] == "payment_succeeded")
    assert paid["webhook_status"] == "scheduled"
    wait_until(lambda: receiver.for_event(paid["id"]) and smtp.for_event(paid["id"]), what="webhook and email")


@pytest.mark.parametrize("header,webhook,email", [
    ("chargebee-event-actions", True, True),
    ("chargebee-event-webhook", True, False),
    ("chargebee-event-email", False, True),
])
def test_skip_header_on_collect(busy_site, receiver, smtp, header, webhook, email):
    with no_deliveries(busy_site, webhook=webhook, email=email, receiver=receiver, smtp=smtp) as events:
        inv = collect(busy_site, {header: "all-disabled"})
    assert inv["status"] == "paid"
    kinds = {e["event_type"] for e in events}
    assert {"invoice_generated", "transaction_created", "payment_succeeded"} <= kinds
    if not webhook:  # the other channel still works
        paid = next(e for e in events if e["event_type"] == "payment_succeeded")
        assert paid["webhook_status"] != "skipped"
        wait_until(lambda: receiver.for_event(paid["id"]), what="webhook")
    if not email:
        paid = next(e for e in events if e["event_type"] == "payment_succeeded")
        wait_until(lambda: smtp.for_event(paid["id"]), what="email")
