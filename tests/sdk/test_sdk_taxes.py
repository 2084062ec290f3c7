"""The unmodified chargebee 1.6.6 SDK: a taxed subscription's story. Its renewal, run by the time
machine (not in the 1.6.6 SDK, so through the API), is collected from the card; the renewal
invoice, its PDF and the payment_succeeded event all carry the same tax. The CSV tax rule is
created through the API too (no CsvTaxRule in the 1.6.6 SDK)."""

from __future__ import annotations

import io

import chargebee
import httpx
import pypdf
import pytest

from tests.support import sdk
from tests.support.subs import DAY, start, travel, ts

FEB_1 = ts(2026, 2, 1)


@pytest.fixture
def cb(server, site):
    start(site)
    sdk.configure(server, site)
    chargebee.Plan.create({"id": "basic", "name": "Basic", "price": 2000, "period": 1, "period_unit": "month"})
    # New York City's combined sales tax (support.chargebee.com article 223398: up to four taxes
    # per CSV row): 4% state + 4.5% city + 0.375% MCTD on 20.00 = 0.80 + 0.90 + 0.075 -> 0.08
    site.api.post("/csv_tax_rules", {"country": "US", "state": "NY", "tax1_name": "NY State", "tax1_rate": "4",
                                     "tax2_name": "NYC", "tax2_rate": "4.5", "tax3_name": "MCTD",
                                     "tax3_rate": "0.375"})
    return site


def test_taxed_subscription_renewed_and_collected(cb):
    result = chargebee.Subscription.create({
        "plan_id": "basic", "customer": {"email": "tax@example.com", "first_name": "Tess"},
        "card": {"number": "4111111111111111", "expiry_month": 12, "expiry_year": 2030, "cvv": "100",
                 "billing_city": "New York", "billing_state_code": "NY", "billing_zip": "10001",
                 "billing_country": "US"},
        "billing_address": {"city": "New York", "state_code": "NY", "zip": "10001", "country": "US"}})
    sub, first = result.subscription, result.invoice
    assert first.tax == 178 and first.amount == 2178 and first.status == "paid"

    estimate = chargebee.Estimate.renewal_estimate(sub.id).estimate
    assert [(t.description, t.amount) for t in estimate.taxes] == [
        ("NY State @ 4%", 80), ("NYC @ 4.5%", 90), ("MCTD @ 0.375%", 8)]
    assert estimate.amount == 2178

    travel(cb, FEB_1 + DAY)
    invoices = chargebee.Invoice.invoices_for_subscription(sub.id, {"limit": 5})
    renewal = next(e.invoice for e in invoices if e.invoice.start_date == FEB_1)
    assert renewal.status == "paid" and renewal.amount_paid == 2178
    assert (renewal.sub_total, renewal.tax, renewal.amount) == (2000, 178, 2178)
    assert [(t.description, t.amount) for t in renewal.taxes] == [(t.description, t.amount) for t in estimate.taxes]
    (line,) = renewal.line_items
    assert line.is_taxed is True and line.tax == 178 and line.tax_rate == 8.875

    succeeded = [e for e in chargebee.Event.list({"limit": 50}) if e.event.event_type == "payment_succeeded"]
    paid = [e.event.content.invoice for e in succeeded if e.event.content.invoice.id == renewal.id]
    assert len(paid) == 1 and paid[0].tax == 178 and paid[0].amount == 2178
    assert paid[0].taxes[0].amount == 80 and e_amount(succeeded, renewal.id) == 2178

    download = chargebee.Invoice.pdf(renewal.id).download
    text = pypdf.PdfReader(io.BytesIO(httpx.get(download.download_url, timeout=30).content)).pages[0].extract_text()
    for expected in ("Sub total USD 20.00", "NY State @ 4% USD 0.80", "NYC @ 4.5% USD 0.90",
                     "MCTD @ 0.375% USD 0.08", "Total USD 21.78", "Amount due USD 0.00"):
        assert expected in text, (expected, text)


def e_amount(events, invoice_id: str) -> int:
    """The payment_succeeded transaction's amount for the invoice."""
    (txn,) = [e.event.content.transaction for e in events if e.event.content.invoice.id == invoice_id]
    return txn.amount
