"""POST /invoices/{id}/pdf and the download it points to: a signed, expiring link served by billhive
that returns a real PDF document of the invoice."""

from __future__ import annotations

import asyncio
import io
from urllib.parse import urlparse

import httpx
import pypdf
import pytest

from billhive.services import pdf
from billhive.store.resources import CUSTOMERS
from billhive.util import signing
from tests.support import factories as F
from tests.support import invoice_factories as IF
from tests.support import timemachine

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def tsite(site):
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


def download(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)


def text_of(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def name_customer(site, customer_id: str, **fields) -> None:
    def unit(w):
        doc = CUSTOMERS.require(w.tx, w.site_id, customer_id)
        doc.update(fields)
        CUSTOMERS.save(w.tx, w.site_id, doc, w.now)
    site.ctx().write_sync(unit)


def test_pdf_link_serves_the_invoice_as_a_pdf(tsite, server):
    cust = F.customer(tsite, email="ada@example.com")
    name_customer(tsite, cust["id"], first_name="Ada", last_name="Lovelace", company="Analytical Engines")
    gb = IF.addon(tsite, price=300, type="quantity", name="Storage GB")
    coupon = IF.coupon(tsite, percentage=10.0)
    inv = tsite.api.post("/invoices", {"customer_id": cust["id"], "coupon": coupon["id"], "po_number": "PO-42",
                                       "addons[id][0]": gb["id"], "addons[quantity][0]": 5,
                                       "charges[amount][0]": 2500, "charges[description][0]": "Onboarding"})["invoice"]
    got = tsite.api.post(f"/invoices/{inv['id']}/pdf")["download"]
    assert got["valid_till"] == GENESIS + 3600
    url = urlparse(got["download_url"])
    assert f"{url.scheme}://{url.netloc}" == server.app.config.base_url
    assert url.path.startswith("/downloads/invoices/") and url.path.endswith(".pdf")
    r = download(got["download_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert 'filename="invoice-1.pdf"' in r.headers["content-disposition"]
    assert r.content.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(r.content))
    assert reader.metadata.title == "Invoice 1"
    text = text_of(r.content)
    for expected in ("INVOICE", "Invoice number: 1", "Invoice date: Jan 01, 2026", "Status: Paid",
                     "Paid on: Jan 01, 2026", "PO number: PO-42", "Ada Lovelace", "Analytical Engines",
                     "ada@example.com", f"Customer id: {cust['id']}", "Storage GB", "Onboarding",
                     "USD 3.00", "USD 15.00", "USD 25.00", "Sub total USD 40.00", coupon["name"], "-USD 4.00",
                     "Total USD 36.00", "Amount paid -USD 36.00", "Amount due USD 0.00", "Payments", tsite.name):
        assert expected in text, (expected, text)


def test_pdf_of_a_pending_invoice_follows_it_when_closed(tsite):
    cust = F.customer(tsite, card=None, auto_collection="off")
    draft = F.pending_invoice(tsite, cust["id"], ((1234, "Metered usage"),))
    link = tsite.api.post(f"/invoices/{draft['id']}/pdf")["download"]["download_url"]
    text = text_of(download(link).content)
    assert f"Draft {draft['id']}" in text and "Pending (draft)" in text and "Amount due USD 12.34" in text
    tsite.api.post(f"/invoices/{draft['id']}/collect")
    text = text_of(download(link).content)
    assert "Invoice number: 1" in text and "Status: Payment due" in text


def test_voided_and_dunning_invoices_show_their_state(tsite):
    cust = F.customer(tsite, card=F.DECLINE_CARD)
    tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 500, "description": "Declined"},
                   expect=400)
    link = tsite.api.post("/invoices/1/pdf")["download"]["download_url"]
    assert "Status: Voided" in text_of(download(link).content)
    tsite.setting(one_off_charge_failure="dunning")
    tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 500, "description": "Declined"})
    link = tsite.api.post("/invoices/2/pdf")["download"]["download_url"]
    assert "Next payment attempt: Jan 02, 2026" in text_of(download(link).content)


def test_link_expires_on_the_site_clock(tsite):
    cust = F.customer(tsite, auto_collection="off")
    tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 100, "description": "x"})
    got = tsite.api.post("/invoices/1/pdf")["download"]
    timemachine.travel(tsite.api, got["valid_till"])
    assert download(got["download_url"]).status_code == 200  # valid till, inclusive
    timemachine.travel(tsite.api, got["valid_till"] + 1)
    r = download(got["download_url"])
    assert r.status_code == 403 and "expired" in r.text
    fresh = tsite.api.post("/invoices/1/pdf")["download"]
    assert fresh["valid_till"] == got["valid_till"] + 1 + 3600
    assert download(fresh["download_url"]).status_code == 200


def test_tampered_or_foreign_links_are_404(tsite, make_site):
    cust = F.customer(tsite, auto_collection="off")
    tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 100, "description": "x"})
    url = tsite.api.post("/invoices/1/pdf")["download"]["download_url"]
    base, token = url.rsplit("/", 1)
    token = token[:-len(".pdf")]
    body, mac = token.split(".")
    assert download(f"{base}/{body}.{mac[:-2]}xx.pdf").status_code == 404
    assert download(f"{base}/garbage.pdf").status_code == 404
    assert download(f"{base}/{body}.pdf").status_code == 404
    # a link signed with this site's key cannot name another site's invoice
    other = make_site()
    F.customer(other, customer_id="oc", auto_collection="off")
    other.api.post("/invoices/charge", {"customer_id": "oc", "amount": 100, "description": "theirs"})
    mine_key = asyncio.run(pdf.signing_key(tsite.app, tsite.pk))
    _, _, valid_till = signing.peek(token)
    forged = signing.sign(mine_key, pdf.PURPOSE, [other.pk, "1", valid_till])
    assert download(f"{base}/{forged}.pdf").status_code == 404
    forged = signing.sign(mine_key, "another-purpose", [tsite.pk, "1", valid_till])
    assert download(f"{base}/{forged}.pdf").status_code == 404
    # their own link works, for their invoice only
    theirs = other.api.post("/invoices/1/pdf")["download"]["download_url"]
    assert "theirs" in text_of(download(theirs).content)


def test_pdf_errors(tsite, make_site):
    r = tsite.api.post("/invoices/nope/pdf", expect=404)
    assert r["api_error_code"] == "resource_not_found"
    other = make_site()
    F.customer(other, customer_id="oc", auto_collection="off")
    other.api.post("/invoices/charge", {"customer_id": "oc", "amount": 100, "description": "theirs"})
    tsite.api.post("/invoices/1/pdf", expect=404)
    tsite.api.post("/invoices/1/pdf", {"format": "a4"}, expect=400)


def test_deleted_invoice_link_is_404(tsite):
    cust = F.customer(tsite)
    draft = F.pending_invoice(tsite, cust["id"])
    url = tsite.api.post(f"/invoices/{draft['id']}/pdf")["download"]["download_url"]
    tsite.api.post(f"/invoices/{draft['id']}/delete")
    assert download(url).status_code == 404


def test_render_handles_unicode_and_long_invoices():
    lines = [{"description": f"Überstunden Zoë #{i}", "date_from": GENESIS, "date_to": GENESIS + 86400 * 30,
              "quantity": 1, "unit_amount": 100, "amount": 100} for i in range(80)]
    inv = {"id": "INV-9", "status": "payment_due", "customer_id": "c", "currency_code": "EUR", "start_date": GENESIS,
           "line_items": lines, "sub_total": 8000, "amount": 8000, "amount_due": 8000, "discounts": [],
           "linked_transactions": [], "notes": [{"note": "Zahlbar binnen 14 Tagen. " * 20}]}
    data = pdf.render_invoice(inv, {"id": "c", "first_name": "Łukasz", "email": "l@example.com"}, "acme", GENESIS)
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert len(reader.pages) >= 2
    text = text_of(data)
    assert "Łukasz" in text and "Überstunden Zoë #79" in text and "EUR 80.00" in text
    assert "Jan 01, 2026 - Jan 31, 2026" in text


def test_links_use_the_public_url(tsite, server):
    cust = F.customer(tsite, auto_collection="off")
    tsite.api.post("/invoices/charge", {"customer_id": cust["id"], "amount": 100, "description": "x"})
    config = server.app.config
    try:
        config.public_url = "https://billing.example.com/"
        url = tsite.api.post("/invoices/1/pdf")["download"]["download_url"]
    finally:
        config.public_url = None
    assert url.startswith("https://billing.example.com/downloads/invoices/") and url.endswith(".pdf")
    path = url[len("https://billing.example.com"):]
    assert download(config.base_url + path).status_code == 200  # the same token, served here
