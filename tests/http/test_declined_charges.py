"""Issue 12 item 1: an operation that charges at once creates nothing when the charge is declined
(Chargebee: 400 payment_processing_failed, type payment; "created only if the payment was
successful" - docs/PARITY.md row 1, docs/CHOICES.md "A declined charge creates nothing").

Each test checks that nothing is left behind - no subscription, customer, invoice, event - and
that the next invoice takes the next number (the site's sequence does not skip)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import pytest

from billhive.services import charge_first, credits, payments
from billhive.services.invoicing import ChargePlan
from billhive.store.resources import CUSTOMERS
from billhive.util.ids import txn_id
from billhive.work import jobs
from billhive.work.context import Ctx
from tests.support import factories as F
from tests.support.customers import card
from tests.support.subs import DAY, GENESIS, addon, plan, start, subscribe, travel, types


@pytest.fixture
def tsite(site):
    start(site)
    plan(site)
    plan(site, "pro", 3000)
    return site


def counts(site) -> dict:
    def n(path: str) -> int:
        return len(site.api.get(path, {"limit": 100}).body["list"])
    return {"subscriptions": n("/subscriptions"), "invoices": n("/invoices"), "customers": n("/customers"),
            "events": n("/events"), "transactions": n("/transactions")}


def declined(r: dict) -> None:
    assert r["api_error_code"] == "payment_processing_failed" and r["type"] == "payment"
    assert r["http_status_code"] == 400 and "Insufficient funds" in r["message"]


def next_number_is(site, number: str) -> None:
    """The next invoice (a paid one-off charge) takes ``number``: the declined call took none."""
    good = F.customer(site)
    inv = site.api.post("/invoices/charge", {"customer_id": good["id"], "amount": 100, "description": "n"})["invoice"]
    assert inv["id"] == number and inv["status"] == "paid"


def no_attempts(site) -> None:
    """No charge attempt is left over (charge_first's job rows)."""
    def unit(w):
        return [j for j in jobs.pending(w.tx, w.site_id) if j.kind == charge_first.JOB]
    assert site.ctx().read_sync(unit) == []


def test_create_with_a_declined_card_creates_nothing(tsite):
    before = counts(tsite)
    r = tsite.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": "ada", "customer[email]": "a@x.org",
                                          **card(F.DECLINE_CARD)}, expect=400).body
    declined(r)
    assert counts(tsite) == before
    tsite.api.get("/customers/ada", expect=404)
    no_attempts(tsite)
    next_number_is(tsite, "1")
    # the same signup with a good card goes through as before, and takes the next number
    body = tsite.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": "ada", "customer[email]": "a@x.org",
                                             **card(F.SUCCESS_CARD)}).body
    assert body["subscription"]["status"] == "active" and body["invoice"]["status"] == "paid"
    assert body["invoice"]["id"] == "2" and body["subscription"]["due_invoices_count"] == 0
    held = [e for e in F.events_of(tsite) if e["event_type"] == "subscription_created"]
    assert [e["content"]["invoice"]["status"] for e in held] == ["paid"]


def test_create_for_customer_with_a_declined_card_creates_nothing(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    before = counts(tsite)
    declined(tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic"}, expect=400).body)
    assert counts(tsite) == before
    assert tsite.api.get(f"/customers/{cust['id']}")["customer"]["id"] == cust["id"]  # the customer stays
    no_attempts(tsite)
    next_number_is(tsite, "1")


def test_a_trial_signup_charges_nothing_and_is_created(tsite):
    plan(tsite, "trial", 1000, trial_period=14, trial_period_unit="day")
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    body = subscribe(tsite, cust["id"], "trial")
    assert body["subscription"]["status"] == "in_trial" and "invoice" not in body


def test_an_immediate_upgrade_declined_changes_nothing(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"])["subscription"]
    tsite.api.post(f"/customers/{cust['id']}/credit_card", card(F.DECLINE_CARD, prefix=""))
    travel(tsite, GENESIS + 15 * DAY)
    before = counts(tsite)
    declined(tsite.api.post(f"/subscriptions/{sub['id']}", {"plan_id": "pro"}, expect=400).body)
    assert counts(tsite) == before
    assert tsite.api.get(f"/subscriptions/{sub['id']}")["subscription"]["plan_id"] == "basic"
    no_attempts(tsite)
    next_number_is(tsite, "2")


def test_a_reactivation_declined_leaves_the_subscription_cancelled(tsite):
    cust = F.customer(tsite)
    sub = subscribe(tsite, cust["id"])["subscription"]
    tsite.api.post(f"/subscriptions/{sub['id']}/cancel")
    tsite.api.post(f"/customers/{cust['id']}/credit_card", card(F.DECLINE_CARD, prefix=""))
    before = counts(tsite)
    declined(tsite.api.post(f"/subscriptions/{sub['id']}/reactivate", expect=400).body)
    assert counts(tsite) == before
    assert tsite.api.get(f"/subscriptions/{sub['id']}")["subscription"]["status"] == "cancelled"
    next_number_is(tsite, "2")


@pytest.mark.parametrize("path, params", [
    ("/invoices/charge", {"amount": 1000, "description": "Widget"}),
    ("/invoices/charge_addon", {"addon_id": "setup"}),
    ("/invoices", {"charges[amount][0]": 1000, "charges[description][0]": "Widget"}),
])
def test_a_declined_one_off_invoice_is_not_created(tsite, path, params):
    addon(tsite, "setup", 900, charge_type="non_recurring")
    cust = F.customer(tsite, card=F.DECLINE_CARD, promotional=100, refundable=200)
    before = counts(tsite)
    declined(tsite.api.post(path, {"customer_id": cust["id"], **params}, expect=400).body)
    assert counts(tsite) == before  # no voided invoice, no failed transaction, no payment_failed event
    doc = tsite.api.get(f"/customers/{cust['id']}")["customer"]
    assert (doc["account_credits"], doc["refundable_credits"]) == (100, 200)  # not taken
    no_attempts(tsite)
    next_number_is(tsite, "1")


def test_one_off_charge_failure_dunning_keeps_the_invoice(tsite):
    tsite.setting(one_off_charge_failure="dunning")
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    inv = tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 1000,
                                              "description": "Widget"})["invoice"]
    assert inv["id"] == "1" and inv["status"] == "payment_due" and inv["dunning_status"] == "in_progress"
    assert types(tsite) == ["invoice_generated", "transaction_created", "payment_failed"]


def test_a_gateway_timeout_creates_with_the_payment_in_progress(tsite):
    cust = F.customer(tsite, card=F.TIMEOUT_CARD)
    body = subscribe(tsite, cust["id"])
    assert body["subscription"]["status"] == "active" and body["invoice"]["status"] == "payment_due"
    asyncio.run(payments.recover_site(tsite.app, tsite.pk))
    assert tsite.api.get(f"/invoices/{body['invoice']['id']}")["invoice"]["status"] == "paid"
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 1


def test_a_declined_signup_under_an_idempotency_key_is_replayed_not_charged_again(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    headers = {"chargebee-idempotency-key": "signup-1"}
    first = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic"}, headers=headers,
                           expect=400)
    again = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic"}, headers=headers,
                           expect=400)
    assert again.body == first.body and again.headers.get("chargebee-idempotency-replayed") == "true"
    assert counts(tsite)["invoices"] == 0


def test_a_successful_signup_under_an_idempotency_key_charges_once(tsite):
    cust = F.customer(tsite)
    headers = {"chargebee-idempotency-key": "signup-2"}
    first = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic"}, headers=headers).body
    again = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic"}, headers=headers).body
    assert again["subscription"]["id"] == first["subscription"]["id"] and first["invoice"]["status"] == "paid"
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 1 and counts(tsite)["subscriptions"] == 1


# ---- an interrupted attempt (the request died between recording it and creating) ------------------

def _attempt(site, customer_id: str, amount: int) -> ChargePlan:
    """Record an attempt the way charge_first.run does, and return its plan."""
    def token(w):
        return CUSTOMERS.get(w.tx, w.site_id, customer_id)["payment_method"]["reference_id"]
    tok = site.ctx().read_sync(token)
    plan_ = ChargePlan(txn_id(), "", "chargebee", tok, amount, "USD", "close")
    site.ctx().write_sync(lambda w: jobs.schedule(
        w, charge_first.JOB, plan_.txn_id, due_at=w.now + charge_first.GRACE, key=f"{charge_first.JOB}:{plan_.txn_id}",
        payload=asdict(plan_)))
    return plan_


def test_recovery_refunds_a_charge_whose_operation_was_never_created(tsite):
    cust = F.customer(tsite)
    plan_ = _attempt(tsite, cust["id"], 1000)
    gw = tsite.app.gateways["chargebee"]
    assert asyncio.run(payments.call_gateway(tsite.app, tsite.pk, plan_)).ok  # charged, then the process died
    travel(tsite, GENESIS + charge_first.GRACE + 60)  # the attempt's job falls due: it asks the gateway
    no_attempts(tsite)
    assert gw.charge_count(tsite.pk) == 1 and counts(tsite)["invoices"] == 0
    assert asyncio.run(gw.lookup(tsite.pk, f"{plan_.txn_id}_undo")).ok  # refunded, with its own key


def test_recovery_forgets_an_attempt_the_gateway_never_saw(tsite):
    cust = F.customer(tsite)
    plan_ = _attempt(tsite, cust["id"], 1000)
    assert asyncio.run(charge_first.resolve(tsite.app, tsite.pk, plan_)) == "nothing"
    no_attempts(tsite)
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 0


def test_an_operation_that_changed_while_it_was_charged_is_refunded_and_not_created(tsite, monkeypatch):
    """Between the charge and the creation the customer got promotional credits: the signup,
    composed again, would charge less than was taken - so the charge is refunded, nothing created."""
    cust = F.customer(tsite)
    real = payments.call_gateway
    made: list[ChargePlan] = []

    def give_credits(w):
        doc = CUSTOMERS.require(w.tx, w.site_id, cust["id"], for_update=True)
        credits.move(w, doc, "promotional", 300, "add", description="meanwhile")
        CUSTOMERS.save(w.tx, w.site_id, doc, w.now)

    async def racing(app, site_pk, plan_):
        result = await real(app, site_pk, plan_)
        made.append(plan_)
        await Ctx(app, site_pk).write(give_credits)
        return result
    monkeypatch.setattr(payments, "call_gateway", racing)
    before = counts(tsite)
    r = tsite.api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic"}, expect=400).body
    assert r["api_error_code"] == "payment_processing_failed" and "refunded" in r["message"]
    assert counts(tsite) == before
    (charged,) = made
    gw = tsite.app.gateways["chargebee"]
    assert asyncio.run(gw.lookup(tsite.pk, charged.txn_id)).ok  # it was charged ...
    assert asyncio.run(gw.lookup(tsite.pk, f"{charged.txn_id}_undo")).ok  # ... and refunded
    no_attempts(tsite)
