"""Orders (v1 legacy order management): /api/v1/orders/... and /invoices/{id}/orders.

An order belongs to one closed invoice (``invoice_id`` required): paid, payment_due or not_paid —
not pending (no number yet) nor voided *(choice)*. The invoice's ``linked_orders`` mirror its
orders (id, status, reference_id, fulfillment_status, batch_id, created_at), updated in the same
transaction as the order. v1 has no order events, so none are recorded.

Status moves forward only (``TRANSITIONS``): new -> processing -> complete, and any open order
(new, processing) can be cancelled or voided; complete, cancelled and voided are final. Setting
the current status again is allowed and changes nothing. ``status_update_at`` is set when an
update changes the status. Other fields (tracking_id, note, ...) can change in any status.
"""

from __future__ import annotations

from billhive.errors import DuplicateEntry, InvalidState, ParamError, not_found
from billhive.store.lists import ListRequest, fetch_page
from billhive.store.resources import INVOICES, ORDERS
from billhive.util.ids import random_id
from billhive.work.context import Ctx, Work

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"processing", "complete", "cancelled", "voided"}),
    "processing": frozenset({"complete", "cancelled", "voided"}),
    "complete": frozenset(),
    "cancelled": frozenset(),
    "voided": frozenset(),
}
ORDERABLE = ("paid", "payment_due", "not_paid")
EDITABLE = ("reference_id", "fulfillment_status", "note", "tracking_id", "batch_id")
LINKED = ("id", "status", "reference_id", "fulfillment_status", "batch_id", "created_at")
_ID_FORBIDDEN = set("/\\%?#&")


def _link(order: dict) -> dict:
    return {k: order[k] for k in LINKED if k in order}


def _sync_invoice(w: Work, order: dict) -> None:
    """Write the order's entry into its invoice's linked_orders."""
    inv = INVOICES.get(w.tx, w.site_id, order["invoice_id"], for_update=True)
    if inv is None:  # the invoice was deleted since: the order stands on its own
        return
    links = [lo for lo in inv.get("linked_orders", ()) if lo["id"] != order["id"]]
    links.append(_link(order))
    links.sort(key=lambda lo: (lo["created_at"], lo["id"]))
    inv["linked_orders"] = links
    INVOICES.save(w.tx, w.site_id, inv, w.now)


async def create(ctx: Ctx, params: dict) -> dict:
    def run(w: Work) -> dict:
        order_id = params.get("id") or random_id("ord_", 16)
        if any(c in _ID_FORBIDDEN or c.isspace() or not c.isprintable() for c in order_id):
            raise ParamError("id : may contain letters, digits and punctuation other than / \\ % ? # &, and no "
                             "spaces", param="id")
        inv = INVOICES.get(w.tx, w.site_id, params["invoice_id"], for_update=True)
        if inv is None:
            raise not_found("invoice", params["invoice_id"], param="invoice_id")
        if inv["status"] not in ORDERABLE:
            raise InvalidState(f"Invoice {inv['id']} is {inv['status']}; orders can be created only for closed, "
                               "unvoided invoices", param="invoice_id")
        if ORDERS.exists(w.tx, w.site_id, order_id):
            raise DuplicateEntry(f"id : The order {order_id} already exists", param="id")
        order = {"id": order_id, "object": "order", "invoice_id": inv["id"], "status": params.get("status", "new")}
        order.update({k: params[k] for k in EDITABLE if params.get(k)})
        if w.origin.user:
            order["created_by"] = w.origin.user[:50]
        order["created_at"] = w.now
        order["currency_code"] = inv["currency_code"]
        ORDERS.insert(w.tx, w.site_id, order, w.now)
        inv.setdefault("linked_orders", []).append(_link(order))
        INVOICES.save(w.tx, w.site_id, inv, w.now)
        return {"order": order}
    return await ctx.write(run)


async def update(ctx: Ctx, order_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        order = ORDERS.get(w.tx, w.site_id, order_id, for_update=True)
        if order is None:
            raise not_found("order", order_id)
        status = params.get("status")
        if status is not None and status != order["status"]:
            if status not in TRANSITIONS[order["status"]]:
                raise InvalidState(f"Order {order_id} is {order['status']}; it cannot become {status}", param="status")
            order["status"] = status
            order["status_update_at"] = w.now
        for k in EDITABLE:
            if params.get(k):
                order[k] = params[k]
        ORDERS.save(w.tx, w.site_id, order, w.now)
        _sync_invoice(w, order)
        return {"order": order}
    return await ctx.write(run)


async def retrieve(ctx: Ctx, order_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        order = ORDERS.get(w.tx, w.site_id, order_id)
        if order is None:
            raise not_found("order", order_id)
        return {"order": order}
    return await ctx.read(run)


async def list_orders(ctx: Ctx, params: dict) -> dict:
    req: ListRequest = params["_list"]
    return await ctx.read(lambda w: fetch_page(w.tx, ORDERS, w.site_id, req).response("order"))


async def list_for_invoice(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    req: ListRequest = params["_list"]

    def run(w: Work) -> dict:
        return fetch_page(w.tx, ORDERS, w.site_id, req, where=(ORDERS.t.c.invoice_id == invoice_id,),
                          parent=(INVOICES, invoice_id)).response("order")
    return await ctx.read(run)
