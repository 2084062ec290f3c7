"""The benchmark's reference route: the full HTTP stack (dispatcher, auth, origin headers,
parameter decoding, JSON encoding) answering a constant invoice-sized document without
touching the database. Only mounted when BILLHIVE_BENCH_CEILING=1."""

from __future__ import annotations

from billhive.http.routes import Route, _extra
from billhive.services.context import Ctx

INVOICE = {
    "invoice": {
        "id": "1042", "object": "invoice", "customer_id": "cust_bench_000001", "subscription_id": "sub_bench_000001",
        "recurring": True, "status": "paid", "price_type": "tax_exclusive", "start_date": 1767225600,
        "end_date": 1769904000, "amount": 4900, "amount_paid": 4400, "amount_adjusted": 0, "credits_applied": 500,
        "amount_due": 0, "paid_on": 1769904000, "sub_total": 4900, "tax": 0, "first_invoice": False,
        "currency_code": "USD",
        "line_items": [
            {"date_from": 1767225600, "date_to": 1769904000, "unit_amount": 2900, "quantity": 1, "amount": 2900,
             "is_taxed": False, "tax": 0, "description": "Basic plan", "type": "charge", "entity_type": "plan",
             "entity_id": "basic"},
            {"date_from": 1769904000, "date_to": 1769904000, "unit_amount": 2000, "quantity": 1, "amount": 2000,
             "is_taxed": False, "tax": 0, "description": "API calls (usage)", "type": "charge",
             "entity_type": "adhoc"},
        ],
        "discounts": [], "taxes": [],
        "linked_transactions": [
            {"txn_id": "txn_AzZlG8SQjR8ce1Fhd", "applied_amount": 4400, "applied_at": 1769904000,
             "txn_type": "payment", "txn_status": "success", "txn_date": 1769904000, "txn_amount": 4400}],
        "linked_orders": [], "notes": [],
    }
}


async def ceiling(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    return INVOICE


def route() -> Route:
    return _extra("bench_ceiling", "POST", "/_bench/ceiling/{invoice-id}", ceiling, response="invoice")
