"""Catalog and subscription rows for the invoice-creation tests, put straight into a site's store
(plain functions, fixed valid defaults). Kept apart from factories.py; once the catalog and
subscription services are merged these may create through them instead."""

from __future__ import annotations

import uuid

from billhive.services.context import Work
from billhive.store.resources import ADDONS, COUPONS, SUBSCRIPTIONS
from tests.support.server import TestSite


def _columns(table, doc: dict) -> dict | None:  # type: ignore[no-untyped-def]
    # the catalog's tables may carry an internal in_use flag that is not a document field
    return {"in_use": 0} if "in_use" in table.t.c else None


def addon(site: TestSite, *, addon_id: str | None = None, price: int = 500, type: str = "on_off",
          charge_type: str = "non_recurring", status: str = "active", name: str | None = None,
          invoice_name: str | None = None, unit: str | None = None) -> dict:
    aid = addon_id or "addon_" + uuid.uuid4().hex[:10]
    doc = {"id": aid, "object": "addon", "name": name or f"Addon {aid}", "type": type, "charge_type": charge_type,
           "price": price, "period_unit": "not_applicable" if charge_type == "non_recurring" else "month",
           "status": status, "enabled_in_portal": True, "taxable": True}
    if charge_type == "recurring":
        doc["period"] = 1
    if invoice_name:
        doc["invoice_name"] = invoice_name
    if unit:
        doc["unit"] = unit

    def unit_(w: Work) -> dict:
        ADDONS.insert(w.tx, w.site_id, doc, w.now, columns=_columns(ADDONS, doc))
        return doc
    return site.ctx().write_sync(unit_)


def coupon(site: TestSite, *, coupon_id: str | None = None, discount_type: str = "percentage",
           percentage: float | None = 10.0, amount: int | None = None, quantity: int | None = None,
           duration_type: str = "one_time", apply_on: str = "invoice_amount", addon_ids: tuple[str, ...] = (),
           max_redemptions: int | None = None, valid_till: int | None = None, status: str = "active") -> dict:
    cid = coupon_id or "coupon_" + uuid.uuid4().hex[:10]

    def unit_(w: Work) -> dict:
        doc = {"id": cid, "object": "coupon", "name": f"Coupon {cid}", "discount_type": discount_type,
               "duration_type": duration_type, "status": status, "apply_on": apply_on, "redemptions": 0,
               "created_at": w.now}
        if discount_type == "percentage":
            doc["discount_percentage"] = percentage
        elif discount_type == "fixed_amount":
            doc["discount_amount"] = amount
        else:
            doc["discount_quantity"] = quantity
        if apply_on == "invoice_amount":
            doc["plan_constraint"] = doc["addon_constraint"] = "not_applicable"
        else:
            doc["plan_constraint"] = "none"
            doc["addon_constraint"] = "specific" if addon_ids else "all"
            if addon_ids:
                doc["addon_ids"] = list(addon_ids)
        if max_redemptions is not None:
            doc["max_redemptions"] = max_redemptions
        if valid_till is not None:
            doc["valid_till"] = valid_till
        COUPONS.insert(w.tx, w.site_id, doc, w.now)
        return doc
    return site.ctx().write_sync(unit_)


def subscription(site: TestSite, customer_id: str, *, auto_collection: str | None = None) -> dict:
    sid = "sub_" + uuid.uuid4().hex[:10]

    def unit_(w: Work) -> dict:
        doc = {"id": sid, "object": "subscription", "customer_id": customer_id, "plan_id": "basic",
               "plan_quantity": 1, "status": "active", "created_at": w.now, "started_at": w.now}
        if auto_collection:
            doc["auto_collection"] = auto_collection
        SUBSCRIPTIONS.insert(w.tx, w.site_id, doc, w.now)
        return doc
    return site.ctx().write_sync(unit_)
