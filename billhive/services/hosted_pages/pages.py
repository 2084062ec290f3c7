"""A hosted page as stored (the document, and the checkout request beside it in the ``checkout``
column), and the checks a checkout makes with the code of the operation it will run, composed as
an estimate (nothing is written, nothing redeemed): when the page is created (api.py) and each
time it is shown (view.py)."""

from __future__ import annotations

import re

from sqlalchemy import select

from billhive.domain import subscriptions as R
from billhive.errors import DuplicateEntry, InvalidState, not_found
from billhive.services import estimates, invoices
from billhive.store.resources import CUSTOMERS, HOSTED_PAGES, SUBSCRIPTIONS
from billhive.util.jsonutil import dumps, loads
from billhive.work.context import Work

TTL = 3 * 3600  # Chargebee: checkout pages expire 3 hours after they are created
OPEN = ("created", "requested")
URL = re.compile(r"^https?://[^\s]+$", re.IGNORECASE)
_SUBSCRIPTION_PARAMS = ("id", "plan_id", "plan_quantity", "trial_end", "start_date", "coupon")
# the parameters of the operation a page runs, as the page's own request names them
NEW_NAMES = {k: f"subscription[{k}]" for k in _SUBSCRIPTION_PARAMS}
EXISTING_NAMES = {k: f"subscription[{k}]" for k in _SUBSCRIPTION_PARAMS if k != "id"}
ONE_OFF_NAMES = {"subscription_id": "subscription[id]", "customer_id": "subscription[id]"}
_T = HOSTED_PAGES.t


def page_url(base_url: str, site_name: str, page_id: str) -> str:
    return f"{base_url.rstrip('/')}/hosted_pages/{site_name}/{page_id}"


def is_expired(page: dict, now: int) -> bool:
    return now >= int(page["expires_at"])


def load(w: Work, page_id: str, *, for_update: bool = False) -> tuple[dict, dict] | None:
    stmt = select(_T.c.data, _T.c.checkout).where(_T.c.site_id == w.site_id, _T.c.id == page_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = w.tx.one(stmt)
    return (loads(row[0]), loads(row[1])) if row else None


def require(w: Work, page_id: str, *, for_update: bool = False) -> tuple[dict, dict]:
    found = load(w, page_id, for_update=for_update)
    if found is None:
        raise not_found("hosted_page", page_id)
    return found


def save(w: Work, page: dict, checkout: dict, before: str) -> None:
    """Write a transition; a concurrent one that won first makes this one fail cleanly."""
    if not HOSTED_PAGES.update(w.tx, w.site_id, page, w.now, expect={"state": before},
                               columns={"checkout": dumps(checkout)}):
        raise InvalidState(f"Hosted page {page['id']} was changed by another request; reload it")


# ---- the checks a checkout makes before it exists (and again when it is shown) ------------------

def check_new(w: Work, checkout: dict) -> dict:
    """checkout_new's checks, by create_a_subscription's code: the estimate of the creation."""
    p = checkout["params"]
    if p.get("id"):
        R.check_id(p["id"], "id")
        if SUBSCRIPTIONS.exists(w.tx, w.site_id, p["id"]):
            raise DuplicateEntry(f"id : The value {p['id']} is already present.", param="id")
    customer_id, existing = checkout_customer(w, checkout)
    if customer_id is not None and existing is None:
        R.check_id(customer_id, "customer[id]")
        if not checkout["customer"].get("id") and CUSTOMERS.exists(w.tx, w.site_id, customer_id):
            raise DuplicateEntry(f"customer[id] : The value {customer_id} is already present (a new customer takes "
                                 "subscription[id] as its id; give customer[id] to subscribe an existing customer)",
                                 param="customer[id]")
    customer = existing or {"id": customer_id or "__checkout__", "auto_collection": "on", "object": "customer"}
    return estimates.create_estimate_of(w, p, customer, existing is not None)


def check_existing(w: Work, checkout: dict) -> dict:
    """checkout_existing's checks, by update_a_subscription's code: the estimate of the change."""
    sub_id = checkout["subscription_id"]
    if not SUBSCRIPTIONS.exists(w.tx, w.site_id, sub_id):
        raise not_found("subscription", sub_id, param="subscription[id]")
    return estimates.update_estimate_of(w, sub_id, checkout["params"], include_delayed=False, use_balances=True)


def check_one_off(w: Work, page_type: str, checkout: dict) -> dict:
    p = one_off_params(w, checkout)
    return estimates.invoice_estimate_of(w, p, one_off_build(page_type, p), use_balances=True)


def checkout_customer(w: Work, checkout: dict) -> tuple[str | None, dict | None]:
    """(customer id, the existing customer) of a checkout_new: ``customer[id]`` names an existing
    customer or a new one's id; without it the new customer takes ``subscription[id]`` (Chargebee's
    rule), else a generated id (None)."""
    given = checkout["customer"].get("id")
    if given:
        return given, CUSTOMERS.get(w.tx, w.site_id, given)
    return checkout["params"].get("id"), None


def one_off_build(page_type: str, p: dict) -> invoices.Build:
    return invoices.charge_lines(p) if page_type == "checkout_onetime_charge" else invoices.create_lines(p)


def one_off_params(w: Work, checkout: dict) -> dict:
    """POST /invoices(/charge) parameters for the subscription's customer, as of now."""
    sub_id = checkout["params"]["subscription_id"]
    sub = SUBSCRIPTIONS.get(w.tx, w.site_id, sub_id)
    if sub is None:
        raise not_found("subscription", sub_id, param="subscription[id]")
    return {**checkout["params"], "customer_id": sub["customer_id"]}
