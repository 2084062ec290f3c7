"""The benchmark's reference routes: the full HTTP stack (dispatcher, auth, origin headers,
parameter decoding, JSON encoding) answering constant documents without touching the
database. ``python -m bench.ceiling serve ...`` is ``billhive serve`` with them mounted (the
benchmark's server, bench/server.py); billhive itself never serves them.

- ``POST /_bench/ceiling/{invoice-id}``: an invoice, for collect (POST /invoices/{id}/collect);
- ``GET /_bench/ceiling/{invoice-id}``: an invoice, for retrieve (GET /invoices/{id});
- ``GET /_bench/ceiling``: a page of 100 invoices, for list (GET /invoices?limit=100&...): it
  decodes the same query parameters as list_invoices (limit, offset, v2-style filters)."""

from __future__ import annotations

import dataclasses
import sys

from billhive import cli, spec
from billhive.http.routes import Route, unlisted
from billhive.store.resources import INVOICES
from billhive.work.context import Ctx

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


# what GET /invoices?limit=100 returns: 100 invoices and the offset of the next page
LIST = {"list": [{"invoice": dict(INVOICE["invoice"], id=str(1042 - i))} for i in range(100)],
        "next_offset": "WyJjcmVhdGVkX2F0IiwxLDE3Njk5MDQwMDAsOTQyXQ"}


async def ceiling(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    return INVOICE


async def ceiling_list(ctx: Ctx, params: dict) -> dict:
    return LIST


def routes() -> list[Route]:
    list_op = dataclasses.replace(spec.operations()["list_invoices"], operation_id="bench_ceiling_list",
                                  path="/_bench/ceiling")
    return [
        unlisted("bench_ceiling", "POST", "/_bench/ceiling/{invoice-id}", ceiling, response="invoice"),
        unlisted("bench_ceiling_retrieve", "GET", "/_bench/ceiling/{invoice-id}", ceiling, response="invoice"),
        Route(dataclasses.replace(list_op, extension=True), ceiling_list, INVOICES),
    ]


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], extra_routes=routes()))
