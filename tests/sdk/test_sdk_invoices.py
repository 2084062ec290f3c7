"""The unmodified chargebee 1.6.6 SDK against billhive: invoice creation, PDFs, orders, collect."""

from __future__ import annotations

import io

import chargebee
import httpx
import pypdf
import pytest

from tests.support import factories as F
from tests.support import invoice_factories as IF
from tests.support import sdk


@pytest.fixture
def cb(server, site):
    sdk.configure(server, site)
    return site


def test_invoice_charge_and_charge_addon(cb):
    cust = F.customer(cb)
    inv = chargebee.Invoice.charge({"customer_id": cust["id"], "amount": 1500, "description": "Setup fee"}).invoice
    assert inv.status == "paid" and inv.amount_paid == 1500 and inv.recurring is False
    assert inv.line_items[0].entity_type == "adhoc" and inv.line_items[0].description == "Setup fee"
    assert inv.linked_transactions[0].txn_status == "success"
    addon = IF.addon(cb, price=200, type="quantity", name="Extra seats")
    inv = chargebee.Invoice.charge_addon({"customer_id": cust["id"], "addon_id": addon.get("id"),
                                          "addon_quantity": 3}).invoice
    assert inv.amount == 600 and inv.line_items[0].entity_id == addon["id"] and inv.line_items[0].quantity == 3


def test_invoice_create_with_addons_charges_and_coupon(cb):
    cust = F.customer(cb, auto_collection="off")
    addon = IF.addon(cb, price=1000)
    coupon = IF.coupon(cb, discount_type="fixed_amount", percentage=None, amount=250)
    inv = chargebee.Invoice.create({
        "customer_id": cust["id"], "coupon": coupon["id"],
        "addons": [{"id": addon["id"]}],
        "charges": [{"amount": 500, "description": "Installation"}, {"amount": 100, "description": "Shipping"}],
        "shipping_address": {"first_name": "Grace", "city": "Arlington"},
    }).invoice
    assert [li.amount for li in inv.line_items] == [1000, 500, 100]
    assert inv.discounts[0].type == "coupon" and inv.discounts[0].amount == 250
    assert inv.amount == 1350 and inv.status == "payment_due"
    assert inv.shipping_address.first_name == "Grace"


def test_declined_charge_raises_payment_error(cb):
    cust = F.customer(cb, card=F.DECLINE_CARD)
    with pytest.raises(chargebee.PaymentError) as exc:
        chargebee.Invoice.charge({"customer_id": cust["id"], "amount": 900, "description": "Declined"})
    assert exc.value.api_error_code == "payment_processing_failed" and exc.value.http_status_code == 400
    with pytest.raises(chargebee.InvalidRequestError) as exc:  # no invoice was generated (issue 12 item 1)
        chargebee.Invoice.retrieve("1")
    assert exc.value.http_status_code == 404 and list(chargebee.Invoice.list({"limit": 5})) == []
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Invoice.charge({"customer_id": "nobody", "amount": 900, "description": "x"})
    assert exc.value.http_status_code == 404 and exc.value.param == "customer_id"


def test_add_addon_charge_then_collect_a_pending_invoice(cb):
    cust = F.customer(cb)
    draft = F.pending_invoice(cb, cust["id"], ((800, "API calls"),))
    addon = IF.addon(cb, price=50, type="quantity")
    inv = chargebee.Invoice.add_addon_charge(draft["id"], {"addon_id": addon["id"], "addon_quantity": 4}).invoice
    assert inv.status == "pending" and inv.sub_total == 1000
    closed = chargebee.Invoice.collect(draft["id"]).invoice
    assert closed.id == "1" and closed.status == "paid" and closed.amount_paid == 1000
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Invoice.collect(draft["id"])
    assert exc.value.http_status_code == 409 and exc.value.api_error_code == "invalid_state_for_request"


def test_invoice_pdf_download(cb):
    cust = F.customer(cb)
    chargebee.Invoice.charge({"customer_id": cust["id"], "amount": 4200, "description": "Annual support"})
    download = chargebee.Invoice.pdf("1").download
    assert download.valid_till > 0 and download.download_url.endswith(".pdf")
    r = httpx.get(download.download_url, timeout=30)
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    text = pypdf.PdfReader(io.BytesIO(r.content)).pages[0].extract_text()
    assert "Annual support" in text and "USD 42.00" in text and "Status: Paid" in text


def test_orders(cb):
    cust = F.customer(cb)
    chargebee.Invoice.charge({"customer_id": cust["id"], "amount": 3000, "description": "Goods"})
    order = chargebee.Order.create({"invoice_id": "1", "reference_id": "WEB-1"}).order
    assert order.invoice_id == "1" and order.status == "new" and order.reference_id == "WEB-1"
    updated = chargebee.Order.update(order.id, {"status": "complete", "tracking_id": "1Z999"}).order
    assert updated.status == "complete" and updated.status_update_at and updated.tracking_id == "1Z999"
    assert chargebee.Order.retrieve(order.id).order.tracking_id == "1Z999"
    assert [e.order.id for e in chargebee.Order.list({"limit": 5})] == [order.id]
    assert [e.order.id for e in chargebee.Order.orders_for_invoice("1")] == [order.id]
    assert chargebee.Invoice.retrieve("1").invoice.linked_orders[0].status == "complete"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Order.update(order.id, {"status": "new"})
    assert exc.value.http_status_code == 409
