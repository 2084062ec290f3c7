"""Live sites have no payment gateway until a real one is configured for them: every path that
stores a card or charges one is refused with 400 configuration_incompatible and leaves nothing
behind - no row, no event, no invoice number, nothing at the test gateway. Test sites are
unchanged (the rest of the suite runs on them).

Cards and pages that a live site got before this refusal existed are made by lifting the site's
``is_test`` flag for a moment (``before_the_refusal``): the rows are those the old code wrote."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select, update

from billhive import gateway as gateways
from billhive import sites
from billhive.services import cards, invoicing, payments
from billhive.services import jobs as runner
from billhive.store import schema as S
from billhive.store.resources import CUSTOMERS, INVOICES
from tests.support import server
from tests.support.customers import VISA, card, create_customer

GOOD = {"number": "4111 1111 1111 1111", "expiry_month": "12", "expiry_year": "2040", "cvv": "123"}
_COUNTED = (S.customers, S.cards, S.subscriptions, S.invoices, S.transactions, S.events, S.payment_intents,
            S.hosted_pages, S.jobs, S.credit_ledger)


@pytest.fixture
def live(live_site) -> server.TestSite:
    live_site.api.post("/plans", {"id": "basic", "name": "Basic", "price": 1000})
    return live_site


@contextlib.contextmanager
def before_the_refusal(site: server.TestSite) -> Iterator[None]:
    """The site's is_test flag, lifted: what follows is stored as live sites stored it before."""
    def flag(value: int) -> None:
        site.app.db.write_sync(lambda tx: tx.execute(update(S.sites).where(S.sites.c.pk == site.pk)
                                                     .values(is_test=value)))
    flag(1)
    try:
        yield
    finally:
        flag(0)


def books(site: server.TestSite):
    """The test gateway's books."""
    return site.app.gateways[gateways.TEST_GATEWAY]


def state(site: server.TestSite) -> dict:
    """Everything a refused request must leave as it was."""
    def run(tx) -> dict:  # type: ignore[no-untyped-def]
        out = {t.name: tx.scalar(select(func.count()).select_from(t).where(t.c.site_id == site.pk)) for t in _COUNTED}
        out["invoice_next_number"] = sites.load(tx, site.pk).invoice_next_number
        out["customer_docs"] = sorted(tx.all(select(S.customers.c.data).where(S.customers.c.site_id == site.pk)))
        return out
    out = site.app.db.read_sync(run)
    out["gateway_cards"] = books(site).card_count(site.pk)
    out["gateway_charges"] = books(site).charge_count(site.pk)
    return out


def refused(site: server.TestSite, path: str, data: dict) -> dict:
    """POST that the live site must refuse; checks the error and that nothing changed."""
    before = state(site)
    body = site.api.post(path, data, expect=400).body
    assert body["api_error_code"] == "configuration_incompatible" and body["type"] == "invalid_request", body
    assert site.name in body["message"] and "gateway" in body["message"]
    assert state(site) == before
    return body


def legacy_customer_with_card(site: server.TestSite, customer_id: str = "ada", **params) -> dict:
    with before_the_refusal(site):
        return create_customer(site.api, id=customer_id, **card(VISA), **params)


# ---- storing cards ---------------------------------------------------------------------------------

def test_card_add_refused(live):
    create_customer(live.api, id="ada")
    refused(live, "/customers/ada/credit_card", card(VISA, prefix=""))
    assert "card" not in live.api.get("/customers/ada").body


def test_customer_create_with_card_refused(live):
    refused(live, "/customers", {"id": "ada", "email": "ada@example.com", **card(VISA)})
    live.api.get("/customers/ada", expect=404)
    create_customer(live.api, id="ada")  # without a card: as before


def test_subscription_create_with_card_refused(live):
    refused(live, "/subscriptions", {"plan_id": "basic", "customer[email]": "ada@example.com", **card(VISA)})


def test_payment_intents_refused(live):
    refused(live, "/payment_intents", {"amount": 1000, "currency_code": "USD"})
    with before_the_refusal(live):
        intent = live.api.post("/payment_intents", {"amount": 1000, "currency_code": "USD"})["payment_intent"]
    refused(live, f"/payment_intents/{intent['id']}/authorize", card(VISA, prefix=""))
    assert live.api.get(f"/payment_intents/{intent['id']}")["payment_intent"]["status"] == "inited"


def test_authorized_intent_from_before_cannot_attach_its_card(live):
    with before_the_refusal(live):
        intent = live.api.post("/payment_intents", {"amount": 1000, "currency_code": "USD"})["payment_intent"]
        live.api.post(f"/payment_intents/{intent['id']}/authorize", card(VISA, prefix=""))
    create_customer(live.api, id="ada")
    refused(live, "/customers/ada/credit_card_using_payment_intent", {"payment_intent_id": intent["id"]})
    refused(live, "/customers", {"id": "bob", "payment_intent[id]": intent["id"]})


def test_hosted_checkout_refused(live):
    refused(live, "/hosted_pages/checkout_new", {"subscription[plan_id]": "basic"})
    with before_the_refusal(live):
        page = live.api.post("/hosted_pages/checkout_new", {"subscription[plan_id]": "basic",
                                                            "customer[email]": "ada@example.com"})["hosted_page"]
    with httpx.Client(timeout=30) as browser:
        opened = browser.get(page["url"])  # no card form, the reason instead
        assert opened.status_code == 200 and "No payment gateway" in opened.text and 'name="number"' not in opened.text
        before = state(live)
        posted = browser.post(page["url"], data=GOOD)  # posted all the same
    assert posted.status_code == 400 and "No payment gateway" in posted.text
    after = state(live)
    assert after == before and live.api.get(f"/hosted_pages/{page['id']}")["hosted_page"]["state"] == "requested"


# ---- charging cards stored before --------------------------------------------------------------------

def test_invoice_charge_with_auto_collection_refused(live):
    legacy_customer_with_card(live)
    refused(live, "/invoices/charge", {"customer_id": "ada", "amount": 1000, "description": "Setup"})
    refused(live, "/customers/ada/subscriptions", {"plan_id": "basic"})


def test_collect_payment_refused(live):
    legacy_customer_with_card(live, auto_collection="off")
    inv = live.api.post("/invoices/charge", {"customer_id": "ada", "amount": 1000, "description": "Setup"})["invoice"]
    assert inv["status"] == "payment_due"
    refused(live, f"/invoices/{inv['id']}/collect_payment", {})
    assert live.api.get(f"/invoices/{inv['id']}")["invoice"]["status"] == "payment_due"


def test_refund_through_the_gateway_refused(live):
    legacy_customer_with_card(live)
    with before_the_refusal(live):
        inv = live.api.post("/invoices/charge", {"customer_id": "ada", "amount": 1000, "description": "Setup"})[
            "invoice"]
    assert inv["status"] == "paid" and books(live).charge_count(live.pk) == 1
    refused(live, f"/invoices/{inv['id']}/refund", {})


def test_renewal_goes_on_without_charging(live):
    """Scheduled work cannot answer with an error: the renewal happens, the invoice stays due."""
    legacy_customer_with_card(live, auto_collection="off")
    sub = live.api.post("/customers/ada/subscriptions", {"plan_id": "basic"})["subscription"]
    live.api.post("/customers/ada", {"auto_collection": "on"})
    asyncio.run(runner.run_due(live.app, live.pk, at=sub["current_term_end"]))
    renewed = live.api.get(f"/subscriptions/{sub['id']}")["subscription"]
    assert renewed["current_term_start"] == sub["current_term_end"]
    invoices = live.api.get("/invoices", {"limit": 10}).body["list"]
    assert [i["invoice"]["status"] for i in invoices] == ["payment_due", "payment_due"]
    assert books(live).charge_count(live.pk) == 0
    assert live.api.get("/transactions", {"limit": 10}).body["list"] == []


def test_recovery_does_not_charge_an_interrupted_payment(live):
    """A charge recorded before the refusal that the gateway never saw: failed, not made now."""
    legacy_customer_with_card(live, auto_collection="off")
    inv = live.api.post("/invoices/charge", {"customer_id": "ada", "amount": 1000, "description": "Setup"})["invoice"]

    def start(w):  # type: ignore[no-untyped-def]
        doc = INVOICES.require(w.tx, w.site_id, inv["id"], for_update=True)
        customer = CUSTOMERS.require(w.tx, w.site_id, "ada")
        return invoicing.start_charge(w, doc, customer, cards.get_card(w, "ada"), "collect_payment").txn_id
    with before_the_refusal(live):
        txn_id = live.ctx().write_sync(start)  # recorded in_progress; the process died before the gateway call
    assert asyncio.run(payments.recover_site(live.app, live.pk)) == 1
    txn = live.api.get(f"/transactions/{txn_id}")["transaction"]
    assert txn["status"] == "failure" and txn["error_code"] == "gateway_not_configured"
    assert books(live).charge_count(live.pk) == 0


# ---- the seam: a live site with a gateway configured ----------------------------------------------

def test_a_live_site_with_a_gateway_stores_cards_but_never_takes_raw_numbers(live, monkeypatch):
    """What a real gateway (a later per-site setting) plugs into: ``gateway_name`` naming one.
    The test gateway stands in for it here."""
    monkeypatch.setattr(gateways, "gateway_name", lambda site: gateways.TEST_GATEWAY)
    created = create_customer(live.api, id="ada", **card(VISA))
    assert created["card"]["last4"] == "1111"
    intent = live.api.post("/payment_intents", {"amount": 1000, "currency_code": "USD"})["payment_intent"]
    before = state(live)
    body = live.api.post(f"/payment_intents/{intent['id']}/authorize", card(VISA, prefix=""), expect=400).body
    assert body["api_error_code"] == "configuration_incompatible" and "test sites only" in body["message"]
    assert state(live) == before
