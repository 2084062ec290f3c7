"""The issue's story over HTTP on a metered test site: a renewal creates a pending invoice that
waits for usage charges and is then collected."""

from __future__ import annotations

from tests.support import factories as F
from tests.support import timemachine

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z
FEB_1 = 1_769_904_000  # 2026-02-01T00:00:00Z


def test_metered_renewal_is_pending_until_collected(metered_site):
    api = metered_site.api
    api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    api.post("/plans", {"id": "basic", "name": "Basic", "price": 1000})
    cust = F.customer(metered_site)
    created = api.post(f"/customers/{cust['id']}/subscriptions", {"plan_id": "basic"}).body
    sub = created["subscription"]
    assert sub["status"] == "active" and sub["current_term_end"] == FEB_1
    first = created["invoice"]  # the first invoice is never pending: closed and paid at once
    assert first["status"] == "paid" and first["first_invoice"] is True and first["amount_paid"] == 1000

    timemachine.travel(api, FEB_1 + 3600)

    pending = api.get("/invoices", {"status[is]": "pending"}).body["list"]
    assert len(pending) == 1
    inv = pending[0]["invoice"]
    assert inv["id"].startswith("draft_inv_") and inv["subscription_id"] == sub["id"]
    (line,) = inv["line_items"]
    assert line["entity_type"] == "plan" and line["entity_id"] == "basic" and line["amount"] == 1000
    assert (line["date_from"], line["date_to"]) == (FEB_1, 1_772_323_200)  # to 2026-03-01
    events = F.events_of(metered_site)
    created_events = [e for e in events if e["event_type"] == "invoice_created"]
    assert [e["content"]["invoice"]["id"] for e in created_events] == [inv["id"]]
    renewed = [e for e in events if e["event_type"] == "subscription_renewed"]
    assert len(renewed) == 1 and renewed[0]["content"]["invoice"]["id"] == inv["id"]

    inv = api.post(f"/invoices/{inv['id']}/add_charge", {"amount": 250, "description": "API calls"})["invoice"]
    assert inv["sub_total"] == 1250
    assert [i["invoice"]["id"] for i in api.get("/invoices", {"status[is]": "pending"}).body["list"]] == [inv["id"]]

    closed = api.post(f"/invoices/{inv['id']}/collect")["invoice"]
    assert closed["status"] == "paid" and closed["amount_paid"] == 1250
    assert api.get("/invoices", {"status[is]": "pending"}).body["list"] == []
    sub = api.get(f"/subscriptions/{sub['id']}")["subscription"]
    assert sub["status"] == "active" and sub["current_term_start"] == FEB_1


def test_renewal_date_setting_keeps_the_renewal_date_on_close(metered_site):
    api = metered_site.api
    metered_site.setting(close_date="renewal_date")
    api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    api.post("/plans", {"id": "basic", "name": "Basic", "price": 1000})
    sub = api.post(f"/customers/{F.customer(metered_site)['id']}/subscriptions", {"plan_id": "basic"})["subscription"]
    timemachine.travel(api, FEB_1 + 5 * 86400)
    (pending,) = [i["invoice"] for i in api.get("/invoices", {"status[is]": "pending"}).body["list"]]
    assert pending["subscription_id"] == sub["id"]
    closed = api.post(f"/invoices/{pending['id']}/collect")["invoice"]
    assert closed["end_date"] == FEB_1 and closed["status"] == "paid"
