"""Transaction operations: /api/v1/transactions/..., and the transaction lists of customers,
subscriptions and invoices. Transactions are written by payments, refunds and records."""

from __future__ import annotations

from sqlalchemy import select

from billhive.errors import not_found
from billhive.store import schema as S
from billhive.store.lists import ListRequest, fetch_page
from billhive.store.resources import CUSTOMERS, INVOICES, SUBSCRIPTIONS, TRANSACTIONS
from billhive.work.context import Ctx, Work

_SORT = ("date", True)


def announce_deleted(w: Work, *where) -> None:
    """transaction_deleted for each transaction about to be deleted with its customer or
    subscription (the caller deletes the rows)."""
    for txn in TRANSACTIONS.find(w.tx, w.site_id, *where):
        w.emit("transaction_deleted", {"transaction": txn})


async def retrieve(ctx: Ctx, transaction_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        txn = TRANSACTIONS.get(w.tx, w.site_id, transaction_id)
        if txn is None:
            raise not_found("transaction", transaction_id)
        return {"transaction": txn}
    return await ctx.read(run)


def _list(ctx: Ctx, req: ListRequest, *where, parent=None):
    def run(w: Work) -> dict:
        return fetch_page(w.tx, TRANSACTIONS, w.site_id, req, where=where, default_sort=_SORT, raw=True,
                          parent=parent).response("transaction")
    return ctx.read(run)


async def list_transactions(ctx: Ctx, params: dict) -> dict:
    return await _list(ctx, params["_list"])


async def list_for_customer(ctx: Ctx, customer_id: str, params: dict) -> dict:
    return await _list(ctx, params["_list"], TRANSACTIONS.t.c.customer_id == customer_id,
                       parent=(CUSTOMERS, customer_id))


async def list_for_subscription(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    return await _list(ctx, params["_list"], TRANSACTIONS.t.c.subscription_id == subscription_id,
                       parent=(SUBSCRIPTIONS, subscription_id))


async def list_for_invoice(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """Every transaction that touched the invoice: payments (also failed attempts) and refunds."""
    link = S.invoice_transactions
    ids = select(link.c.txn_id).where(link.c.site_id == ctx.site_id, link.c.invoice_id == invoice_id)
    return await _list(ctx, params["_list"], TRANSACTIONS.t.c.id.in_(ids), parent=(INVOICES, invoice_id))
