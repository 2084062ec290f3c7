"""POST /invoices/{id}/collect — closing pending invoices: numbering, credits, charging, events."""

from __future__ import annotations

import concurrent.futures

import pytest
from sqlalchemy import update

from billhive.services import credits
from billhive.store import schema as SCH
from billhive.store.resources import CUSTOMERS
from tests.support import factories as F

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def tsite(site):
    """A test site whose clock is frozen at GENESIS (the time machine)."""
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


def types(site) -> list[str]:
    return [e["event_type"] for e in F.events_of(site)]


def test_collect_charges_card_and_pays(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"], ((1500, "API calls"), (500, "Storage")))
    assert draft["id"].startswith("draft_inv_") and draft["status"] == "pending"
    inv = tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    assert inv["id"] == "1" and inv["status"] == "paid"
    assert inv["end_date"] == GENESIS and inv["paid_on"] == GENESIS
    assert inv["sub_total"] == 2000 and inv["amount"] == 2000 and inv["amount_paid"] == 2000
    assert inv["amount_due"] == 0
    (lt,) = inv["linked_transactions"]
    assert lt["applied_amount"] == 2000 and lt["txn_type"] == "payment" and lt["txn_status"] == "success"
    txn = tsite.api.get(f"/transactions/{lt['txn_id']}")["transaction"]
    assert txn["status"] == "success" and txn["amount"] == 2000 and txn["id_at_gateway"].startswith("cb_")
    assert types(tsite) == ["invoice_generated", "transaction_created", "payment_succeeded"]
    assert tsite.api.get(f"/invoices/{inv['id']}")["invoice"] == inv
    tsite.api.get(f"/invoices/{draft['id']}", expect=404)


def test_numbers_follow_prefix_and_sequence(tsite):
    tsite.setting(invoice_prefix="INV-", invoice_next_number=1000)
    cust = F.customer(tsite)
    ids = [tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]["id"]
           for _ in range(3)]
    assert ids == ["INV-1000", "INV-1001", "INV-1002"]


def test_credits_apply_in_order_promotional_refundable_excess(tsite):
    cust = F.customer(tsite, promotional=300, refundable=400, excess=500)
    draft = F.pending_invoice(tsite, cust["id"], ((1000, "Usage"),))
    inv = tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    assert inv["discounts"] == [{"amount": 300, "description": "Promotional Credits", "type": "account_credits",
                                 "object": "discount"}]
    assert inv["amount"] == 700
    assert inv["credits_applied"] == 400
    assert inv["amount_paid"] == 300  # excess payment covers the rest; no card charge
    assert inv["status"] == "paid" and inv["amount_due"] == 0
    (lt,) = inv["linked_transactions"]
    assert lt["applied_amount"] == 300
    customer = tsite.app.db.read_sync(lambda tx: CUSTOMERS.get(tx, tsite.pk, cust["id"]))
    assert (customer["account_credits"], customer["refundable_credits"], customer["excess_payments"]) == (0, 0, 200)
    for kind in credits.KINDS:
        assert tsite.app.db.read_sync(lambda tx, kind=kind: credits.ledger_sum(tx, tsite.pk, cust["id"], kind)) == \
            credits.balance(customer, kind)
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 0
    ev = types(tsite)
    assert ev[0] == "transaction_updated" and "customer_changed" in ev and ev[-1] == "invoice_generated"


def test_credits_partly_cover_then_card_pays_rest(tsite):
    cust = F.customer(tsite, refundable=250)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    assert inv["credits_applied"] == 250 and inv["amount_paid"] == 750 and inv["status"] == "paid"


def test_zero_amount_due_is_paid_without_a_charge(tsite):
    cust = F.customer(tsite, card=None, promotional=5000)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    assert inv["status"] == "paid" and inv["amount"] == 0 and inv["linked_transactions"] == []
    assert "payment_succeeded" not in types(tsite)


def test_failed_charge_returns_200_payment_due_and_starts_dunning(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    assert inv["status"] == "payment_due" and inv["amount_due"] == 1000
    assert inv["dunning_status"] == "in_progress" and inv["next_retry"] == GENESIS + 86400
    txns = tsite.api.get(f"/invoices/{inv['id']}/transactions").body["list"]
    (txn,) = [t["transaction"] for t in txns]
    assert txn["status"] == "failure" and txn["error_code"] == "3001" and txn["error_text"] == "Insufficient funds"
    assert types(tsite) == ["invoice_generated", "transaction_created", "payment_failed"]


def test_auto_collection_off_or_no_card_leaves_payment_due(tsite):
    for kw in ({"auto_collection": "off"}, {"card": None}):
        cust = F.customer(tsite, **kw)
        inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
        assert inv["status"] == "payment_due" and inv["amount_due"] == 1000
        assert "dunning_status" not in inv and inv["linked_transactions"] == []
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 0


def test_unknown_invoice_is_404_and_other_sites_invoice_is_404(tsite, make_site):
    assert tsite.api.post("/invoices/draft_inv_nope/collect", expect=404)["api_error_code"] == "resource_not_found"
    other = make_site()
    theirs = F.pending_invoice(other, F.customer(other)["id"])
    tsite.api.post(f"/invoices/{theirs['id']}/collect", expect=404)
    assert other.api.get(f"/invoices/{theirs['id']}")["invoice"]["status"] == "pending"


def test_closed_invoice_is_409_and_nothing_changes(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"])
    inv = tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    for target in (inv["id"], draft["id"]):
        r = tsite.api.post(f"/invoices/{target}/collect", expect=409)
        assert r["api_error_code"] == "invalid_state_for_request"
    assert tsite.api.get(f"/invoices/{inv['id']}")["invoice"] == inv
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 1


def test_empty_pending_invoice_cannot_be_closed_but_can_be_deleted(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"], ())
    r = tsite.api.post(f"/invoices/{draft['id']}/collect", expect=409)
    assert "delete" in r["message"]
    assert tsite.api.get(f"/invoices/{draft['id']}")["invoice"]["status"] == "pending"
    deleted = tsite.api.post(f"/invoices/{draft['id']}/delete")["invoice"]
    assert deleted["id"] == draft["id"]
    tsite.api.get(f"/invoices/{draft['id']}", expect=404)
    # the sequence was not consumed
    inv = tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/collect")["invoice"]
    assert inv["id"] == "1"


def test_add_charge_only_on_pending(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"])
    inv = tsite.api.post(f"/invoices/{draft['id']}/add_charge", {"amount": 250, "description": "Overage"})["invoice"]
    assert inv["sub_total"] == 1250 and inv["line_items"][-1]["entity_type"] == "adhoc"
    assert tsite.api.post(f"/invoices/{draft['id']}/add_charge", {"amount": 0, "description": "x"},
                          expect=400)["param"] == "amount"
    assert tsite.api.post(f"/invoices/{draft['id']}/add_charge", {"amount": 5},
                          expect=400)["param"] == "description"
    closed = tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    assert closed["amount_paid"] == 1250
    r = tsite.api.post(f"/invoices/{closed['id']}/add_charge", {"amount": 100, "description": "late"}, expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"


def test_pending_invoices_listed_by_status_filter(tsite):
    cust = F.customer(tsite)
    drafts = [F.pending_invoice(tsite, cust["id"]) for _ in range(3)]
    tsite.api.post(f"/invoices/{drafts[0]['id']}/collect")
    listed = tsite.api.get("/invoices", {"status[is]": "pending"}).body["list"]
    assert sorted(i["invoice"]["id"] for i in listed) == sorted(d["id"] for d in drafts[1:])
    listed = tsite.api.get(f"/customers/{cust['id']}/invoices", {"status[is]": "paid"}).body["list"]
    assert [i["invoice"]["id"] for i in listed] == ["1"]
    paid = tsite.api.get("/invoices", {"paid_on_after": GENESIS}).body["list"]
    assert [i["invoice"]["id"] for i in paid] == ["1"]


def test_invoice_created_fires_only_with_notify_setting(tsite):
    cust = F.customer(tsite)
    F.pending_invoice(tsite, cust["id"])
    assert "invoice_created" not in types(tsite)
    tsite.setting(notify_pending_invoices="true")
    F.pending_invoice(tsite, cust["id"])
    assert types(tsite).count("invoice_created") == 1


def test_v2_close_alias(tsite):
    cust = F.customer(tsite, auto_collection="off")
    draft = F.pending_invoice(tsite, cust["id"])
    inv = tsite.api.post(f"/invoices/{draft['id']}/close", {"invoice_note": "Thanks!",
                                                            "invoice_date": GENESIS})["invoice"]
    assert inv["status"] == "payment_due" and inv["notes"] == [{"note": "Thanks!"}]
    assert tsite.api.post(f"/invoices/{F.pending_invoice(tsite, cust['id'])['id']}/close",
                          {"invoice_date": GENESIS + 10}, expect=400)["param"] == "invoice_date"


def test_50_parallel_collects_on_one_invoice(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"])
    api = tsite.api

    def call(_):
        return api.with_key(tsite.key).post(f"/invoices/{draft['id']}/collect", expect=None).status

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(call, range(50)))
    assert statuses.count(200) == 1 and statuses.count(409) == 49
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 1
    inv = api.get("/invoices/1")["invoice"]
    assert inv["status"] == "paid"
    api.get("/invoices/2", expect=404)


def test_200_invoices_closed_concurrently_get_gapless_numbers(tsite):
    customers = [F.customer(tsite, auto_collection="off") for _ in range(4)]
    drafts = [F.pending_invoice(tsite, customers[i % 4]["id"])["id"] for i in range(200)]

    def call(draft_id):
        return tsite.api.with_key(tsite.key).post(f"/invoices/{draft_id}/collect")["invoice"]["id"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        numbers = list(pool.map(call, drafts))
    assert sorted(int(n) for n in numbers) == list(range(1, 201))


def test_idempotency_key_on_collect_runs_once_under_concurrency(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"])
    headers = {"chargebee-idempotency-key": "collect-" + draft["id"]}

    def call(_):
        r = tsite.api.with_key(tsite.key).post(f"/invoices/{draft['id']}/collect", headers=headers)
        return r.body, r.headers.get("chargebee-idempotency-replayed")

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(call, range(10)))
    bodies = {str(b) for b, _ in results}
    assert len(bodies) == 1  # every caller got the one response
    assert [h for _, h in results].count(None) == 1  # one ran, nine replayed
    assert tsite.app.gateways["chargebee"].charge_count(tsite.pk) == 1
    # the same key on another request is refused
    r = tsite.api.post(f"/invoices/{draft['id']}/close", {"invoice_note": "x"}, headers=headers, expect=422)
    assert r["api_error_code"] == "unable_to_process_request"


def _travelling(site, status):
    site.app.db.write_sync(lambda tx: tx.execute(
        update(SCH.sites).where(SCH.sites.c.pk == site.pk).values(tm_status=status)))


def test_collect_is_refused_while_the_time_machine_travels(tsite):
    # collect and its settlement load the site with their rows (site_first): the write guard still
    # comes before anything is written, whether the invoice is found or not
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"], ((1000, "Usage"),))
    _travelling(tsite, "in_progress")
    try:
        for invoice_id in (draft["id"], "draft_inv_missing"):
            r = tsite.api.post(f"/invoices/{invoice_id}/collect", expect=409)
            assert r["api_error_code"] == "invalid_state_for_request" and "travelling" in r["message"]
    finally:
        _travelling(tsite, None)
    assert tsite.api.get(f"/invoices/{draft['id']}")["invoice"]["status"] == "pending"
    assert types(tsite) == []
    assert tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]["status"] == "paid"
