"""The document tables of the API's resources, in one place so services can share them
without importing each other."""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib

from billhive.store import schema as S
from billhive.store.docs import DocTable


def card_expires_at(card: dict) -> int | None:
    """End of the card's expiry month (UTC), the last moment it can be charged."""
    y, m = card.get("expiry_year"), card.get("expiry_month")
    if not y or not m:
        return None
    last_day = calendar.monthrange(int(y), int(m))[1]
    return int(dt.datetime(int(y), int(m), last_day, 23, 59, 59, tzinfo=dt.UTC).timestamp())


# in_use (plans/addons) and a code's status are table-only state, set explicitly by the catalog
PLANS = DocTable(S.plans, "plan", columns={"in_use": lambda d: 0}, insert_only=("in_use",))
ADDONS = DocTable(S.addons, "addon", columns={"in_use": lambda d: 0}, insert_only=("in_use",))
COUPONS = DocTable(S.coupons, "coupon")
COUPON_CODES = DocTable(S.coupon_codes, "coupon_code", columns={"status": lambda d: "enabled"},
                        insert_only=("status",))
def address_row_id(address: dict) -> str:
    """Row id of a subscription's address: a digest of (subscription_id, label), which together
    can be longer than an id column and may contain any separator."""
    key = f"{len(address['subscription_id'])}:{address['subscription_id']}:{address['label']}"
    return "adr_" + hashlib.sha256(key.encode()).hexdigest()[:40]


CUSTOMERS = DocTable(S.customers, "customer", columns={"auto_collection": lambda d: d.get("auto_collection", "on")})
CARDS = DocTable(S.cards, "card", columns={"expires_at": card_expires_at}, id_of=lambda d: d["customer_id"])
INVOICES = DocTable(S.invoices, "invoice", columns={"date": lambda d: d.get("start_date"),
                                                    "amount": lambda d: d.get("amount", 0),
                                                    "amount_due": lambda d: d.get("amount_due", 0),
                                                    "draft_id": lambda d: None,
                                                    "dunning_attempts": lambda d: None,
                                                    "dunning_started_at": lambda d: None},
                    insert_only=("draft_id", "dunning_attempts", "dunning_started_at"))
TRANSACTIONS = DocTable(S.transactions, "transaction",
                        columns={"amount": lambda d: d.get("amount", 0),
                                 "unused_amount": lambda d: d.get("amount_unused", 0) or 0,
                                 "idempotency_key": lambda d: None, "purpose": lambda d: None},
                        insert_only=("idempotency_key", "purpose"))
SUBSCRIPTIONS = DocTable(S.subscriptions, "subscription", columns={"internal": lambda d: None},
                         insert_only=("internal",))
ORDERS = DocTable(S.orders, "order", columns={"status": lambda d: d.get("status", "new")})
PAYMENT_INTENTS = DocTable(S.payment_intents, "payment_intent")
ADDRESSES = DocTable(S.addresses, "address", id_of=address_row_id)
COMMENTS = DocTable(S.comments, "comment")
PORTAL_SESSIONS = DocTable(S.portal_sessions, "portal_session", columns={"browser_key": lambda d: None},
                           insert_only=("browser_key",))
HOSTED_PAGES = DocTable(S.hosted_pages, "hosted_page", columns={"checkout": lambda d: None},
                        insert_only=("checkout",))
CSV_TAX_RULES = DocTable(S.csv_tax_rules, "csv_tax_rule", columns={"region_key": lambda d: None},
                         insert_only=("region_key",))
