"""Orders: create, update, retrieve, list, list for an invoice; the invoice's linked_orders."""

from __future__ import annotations

import pytest

from tests.support import factories as F
from tests.support import timemachine

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def tsite(site):
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


def closed_invoice(site, amount: int = 1000, **customer) -> dict:
    cust = F.customer(site, **customer)
    return site.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": amount,
                                              "description": "Goods"})["invoice"]


def test_create_order_links_it_to_the_invoice(tsite):
    inv = closed_invoice(tsite)
    order = tsite.api.post("/orders", {"invoice_id": inv["id"], "id": "ord-1", "reference_id": "SHOP-9",
                                       "fulfillment_status": "Awaiting Shipment", "note": "Gift wrap",
                                       "batch_id": "b1"})["order"]
    assert order == {"id": "ord-1", "object": "order", "invoice_id": inv["id"], "status": "new",
                     "reference_id": "SHOP-9", "fulfillment_status": "Awaiting Shipment", "note": "Gift wrap",
                     "batch_id": "b1", "created_by": order["created_by"], "created_at": GENESIS,
                     "currency_code": "USD"}
    assert "status_update_at" not in order
    assert tsite.api.get("/orders/ord-1")["order"] == order
    linked = tsite.api.get(f"/invoices/{inv['id']}")["invoice"]["linked_orders"]
    assert linked == [{"id": "ord-1", "status": "new", "reference_id": "SHOP-9",
                       "fulfillment_status": "Awaiting Shipment", "batch_id": "b1", "created_at": GENESIS}]
    generated = tsite.api.post("/orders", {"invoice_id": inv["id"]})["order"]
    assert generated["id"].startswith("ord_") and generated["status"] == "new"
    assert [lo["id"] for lo in tsite.api.get(f"/invoices/{inv['id']}")["invoice"]["linked_orders"]] == \
        ["ord-1", generated["id"]]


def test_update_moves_status_forward_and_keeps_the_invoice_in_sync(tsite):
    inv = closed_invoice(tsite)
    tsite.api.post("/orders", {"invoice_id": inv["id"], "id": "o1"})
    timemachine.travel(tsite.api, GENESIS + 60)
    o = tsite.api.post("/orders/o1", {"status": "processing", "tracking_id": "TRK1"})["order"]
    assert o["status"] == "processing" and o["status_update_at"] == GENESIS + 60 and o["tracking_id"] == "TRK1"
    timemachine.travel(tsite.api, GENESIS + 120)
    o = tsite.api.post("/orders/o1", {"status": "processing", "note": "packed"})["order"]
    assert o["status_update_at"] == GENESIS + 60 and o["note"] == "packed"  # same status: no status change
    o = tsite.api.post("/orders/o1", {"status": "complete", "fulfillment_status": "Shipped"})["order"]
    assert o["status"] == "complete" and o["status_update_at"] == GENESIS + 120
    o = tsite.api.post("/orders/o1", {"tracking_id": "TRK2"})["order"]  # other fields stay editable
    assert o["tracking_id"] == "TRK2" and o["status"] == "complete"
    (lo,) = tsite.api.get(f"/invoices/{inv['id']}")["invoice"]["linked_orders"]
    assert (lo["status"], lo["fulfillment_status"]) == ("complete", "Shipped")
    for back in ("new", "processing", "cancelled", "voided"):
        r = tsite.api.post("/orders/o1", {"status": back}, expect=409)
        assert r["api_error_code"] == "invalid_state_for_request"
    assert tsite.api.get("/orders/o1")["order"] == o


@pytest.mark.parametrize("final", ["cancelled", "voided"])
def test_cancelled_and_voided_are_final(tsite, final):
    inv = closed_invoice(tsite)
    tsite.api.post("/orders", {"invoice_id": inv["id"], "id": "o1", "status": "processing"})
    tsite.api.post("/orders/o1", {"status": final})
    for other in ("new", "processing", "complete"):
        tsite.api.post("/orders/o1", {"status": other}, expect=409)
    assert tsite.api.get(f"/invoices/{inv['id']}")["invoice"]["linked_orders"][0]["status"] == final


def test_orders_need_a_closed_unvoided_invoice(tsite):
    cust = F.customer(tsite, auto_collection="off")
    draft = F.pending_invoice(tsite, cust["id"])
    r = tsite.api.post("/orders", {"invoice_id": draft["id"]}, expect=409)
    assert (r["api_error_code"], r["param"]) == ("invalid_state_for_request", "invoice_id")
    due = tsite.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    assert due["status"] == "payment_due"
    tsite.api.post("/orders", {"invoice_id": due["id"], "id": "due-order"})
    tsite.api.post(f"/invoices/{due['id']}/void")
    tsite.api.post("/orders", {"invoice_id": due["id"]}, expect=409)


def test_order_bad_input(tsite):
    inv = closed_invoice(tsite)
    tsite.api.post("/orders", {"invoice_id": inv["id"], "id": "taken"})
    cases = [
        ({}, 400, "param_wrong_value", "invoice_id"),
        ({"invoice_id": "999"}, 404, "resource_not_found", "invoice_id"),
        ({"invoice_id": inv["id"], "id": "taken"}, 400, "duplicate_entry", "id"),
        ({"invoice_id": inv["id"], "id": "has space"}, 400, "param_wrong_value", "id"),
        ({"invoice_id": inv["id"], "id": "a/b"}, 400, "param_wrong_value", "id"),
        ({"invoice_id": inv["id"], "id": "x" * 41}, 400, "param_wrong_value", "id"),
        ({"invoice_id": inv["id"], "status": "shipped"}, 400, "param_wrong_value", "status"),
        ({"invoice_id": inv["id"], "note": "n" * 601}, 400, "param_wrong_value", "note"),
    ]
    for data, status, code, param in cases:
        r = tsite.api.post("/orders", data, expect=status)
        assert (r["api_error_code"], r.body.get("param")) == (code, param), (data, r.body)
    assert tsite.api.post("/orders/nope", {"note": "x"}, expect=404)["api_error_code"] == "resource_not_found"
    assert tsite.api.get("/orders/nope", expect=404)["api_error_code"] == "resource_not_found"
    assert tsite.api.post("/orders/taken", {"status": "done"}, expect=400)["param"] == "status"
    assert tsite.api.post("/orders/taken", {"invoice_id": "1"}, expect=400)["param"] == "invoice_id"
    assert len(tsite.api.get("/orders").body["list"]) == 1
    tsite.api.with_key(tsite.read_only_key).post("/orders", {"invoice_id": inv["id"]}, expect=403)


def test_list_orders_and_orders_of_an_invoice(tsite):
    a = closed_invoice(tsite)
    b = closed_invoice(tsite)
    for i in range(3):
        tsite.api.post("/orders", {"invoice_id": a["id"], "id": f"a{i}"})
        timemachine.travel(tsite.api, GENESIS + 10 * (i + 1))
    tsite.api.post("/orders", {"invoice_id": b["id"], "id": "b0", "status": "processing"})
    every = tsite.api.get("/orders", {"limit": 3}).body
    assert [o["order"]["id"] for o in every["list"]] == ["b0", "a2", "a1"]
    rest = tsite.api.get("/orders", {"limit": 3, "offset": every["next_offset"]}).body
    assert [o["order"]["id"] for o in rest["list"]] == ["a0"] and "next_offset" not in rest
    of_a = tsite.api.get(f"/invoices/{a['id']}/orders").body["list"]
    assert [o["order"]["id"] for o in of_a] == ["a2", "a1", "a0"]
    filtered = tsite.api.get("/orders", {"status[is]": "processing"}).body["list"]
    assert [o["order"]["id"] for o in filtered] == ["b0"]
    assert tsite.api.get("/invoices/999/orders", expect=404)["api_error_code"] == "resource_not_found"
    tsite.api.get("/orders", {"limit": 0}, expect=400)


def test_another_sites_orders_and_invoices_are_404(tsite, make_site):
    other = make_site()
    theirs = closed_invoice(other)
    other.api.post("/orders", {"invoice_id": theirs["id"], "id": "secret-order"})
    mine = closed_invoice(tsite)
    assert mine["id"] == theirs["id"] == "1"  # same number on both sites: still two invoices
    tsite.api.get("/orders/secret-order", expect=404)
    tsite.api.post("/orders/secret-order", {"status": "cancelled"}, expect=404)
    assert tsite.api.get("/orders").body["list"] == []
    assert tsite.api.get("/invoices/1/orders").body["list"] == []
    # an order with the same id on this site is a different order
    mine_order = tsite.api.post("/orders", {"invoice_id": "1", "id": "secret-order"})["order"]
    assert mine_order["invoice_id"] == "1"
    assert other.api.get("/orders/secret-order")["order"]["status"] == "new"
    assert [lo["id"] for lo in other.api.get("/invoices/1")["invoice"]["linked_orders"]] == ["secret-order"]
    tsite.api.post("/orders/secret-order", {"status": "cancelled"})
    assert other.api.get("/orders/secret-order")["order"]["status"] == "new"
    assert other.api.get("/invoices/1")["invoice"]["linked_orders"][0]["status"] == "new"
    tsite.api.get("/invoices/2/orders", expect=404)
