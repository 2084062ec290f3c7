"""Catalog and subscription objects for the invoice-creation tests (fixed, valid defaults).
Addons and coupons are made through the catalog API; states that API cannot reach (an archived
coupon, a coupon whose valid_till has passed) and subscriptions are put straight into the store."""

from __future__ import annotations

import uuid

from billhive.store.resources import COUPONS, SUBSCRIPTIONS
from billhive.work.context import Work
from tests.support.server import TestSite


def addon(site: TestSite, *, addon_id: str | None = None, price: int = 500, type: str = "on_off",
          charge_type: str = "non_recurring", status: str = "active", name: str | None = None,
          invoice_name: str | None = None, unit: str | None = None) -> dict:
    aid = addon_id or "addon_" + uuid.uuid4().hex[:10]
    data = {"id": aid, "name": name or f"Addon {aid}", "type": type, "charge_type": charge_type, "price": price}
    if charge_type == "recurring":
        data["period_unit"] = "month"
    if invoice_name:
        data["invoice_name"] = invoice_name
    if unit:
        data["unit"] = unit
    doc = site.api.post("/addons", data)["addon"]
    if status == "archived":
        doc = site.api.post(f"/addons/{aid}/delete")["addon"]
    return doc


def coupon(site: TestSite, *, coupon_id: str | None = None, discount_type: str = "percentage",
           percentage: float | None = 10.0, amount: int | None = None, quantity: int | None = None,
           duration_type: str = "one_time", apply_on: str = "invoice_amount", addon_ids: tuple[str, ...] = (),
           max_redemptions: int | None = None, valid_till: int | None = None, status: str = "active") -> dict:
    cid = coupon_id or "coupon_" + uuid.uuid4().hex[:10]
    data: dict = {"id": cid, "name": f"Coupon {cid}", "discount_type": discount_type, "duration_type": duration_type,
                  "apply_on": apply_on}
    if discount_type == "percentage":
        data["discount_percentage"] = percentage
    elif discount_type == "fixed_amount":
        data["discount_amount"] = amount
    else:
        data["discount_quantity"] = quantity
    if apply_on == "each_specified_item":
        data["plan_constraint"] = "none"
        data["addon_constraint"] = "specific" if addon_ids else "all"
        for i, a in enumerate(addon_ids):
            data[f"addon_ids[{i}]"] = a
    if max_redemptions is not None:
        data["max_redemptions"] = max_redemptions
    if status == "active" and valid_till is None:
        return site.api.post("/coupons", data)["coupon"]

    def unit_(w: Work) -> dict:  # states the API does not create
        doc = {**{k: v for k, v in data.items() if "[" not in k}, "object": "coupon", "status": status,
               "redemptions": 0, "created_at": w.now, "plan_constraint": data.get("plan_constraint", "not_applicable"),
               "addon_constraint": data.get("addon_constraint", "not_applicable")}
        if addon_ids:
            doc["addon_ids"] = list(addon_ids)
        if valid_till is not None:
            doc["valid_till"] = valid_till
        COUPONS.insert(w.tx, w.site_id, doc, w.now)
        return doc
    return site.ctx().write_sync(unit_)


def subscription(site: TestSite, customer_id: str, *, auto_collection: str | None = None) -> dict:
    sid = "sub_" + uuid.uuid4().hex[:10]

    def unit_(w: Work) -> dict:
        doc = {"id": sid, "object": "subscription", "customer_id": customer_id, "plan_id": "basic",
               "plan_quantity": 1, "status": "active", "created_at": w.now, "started_at": w.now,
               "current_term_start": w.now, "current_term_end": w.now + 30 * 86400, "due_invoices_count": 0}
        if auto_collection:
            doc["auto_collection"] = auto_collection
        SUBSCRIPTIONS.insert(w.tx, w.site_id, doc, w.now)
        return doc
    return site.ctx().write_sync(unit_)
