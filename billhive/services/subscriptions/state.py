"""A subscription as stored: its API document and what billhive keeps beside it.

Internal state (not part of the resource) is the JSON column ``subscriptions.internal``: the
billing anchor, a cancellation scheduled at term end, changes scheduled at term end, charges
waiting for the term end, and whether the setup cost is still to bill.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from sqlalchemy import select

from billhive import spec
from billhive.domain import subscriptions as R
from billhive.errors import not_found
from billhive.store import schema as S
from billhive.store.resources import SUBSCRIPTIONS
from billhive.util.jsonutil import dumps, loads
from billhive.work.context import Work

LIVE = R.LIVE
T = S.subscriptions


@dataclass
class State:
    """What billhive keeps about a subscription beyond its API fields."""

    anchor: int | None = None  # term boundaries are anchor + k periods
    cancel_scheduled: bool = False  # cancel at the end of the current term (or trial)
    scheduled: dict | None = None  # changes for the term end: plan_id, plan_quantity, addons, coupons, cycles
    charges: list[dict] = field(default_factory=list)  # for the term end: {amount, description} | {addon_id, quantity}
    setup_pending: bool = False  # the plan's setup cost is billed with the first invoice

    def to_json(self) -> str:
        return dumps({"anchor": self.anchor, "cancel_scheduled": self.cancel_scheduled, "scheduled": self.scheduled,
                      "charges": self.charges, "setup_pending": self.setup_pending})

    @classmethod
    def from_json(cls, raw: str | None) -> State:
        d = loads(raw) if raw else {}
        return cls(d.get("anchor"), bool(d.get("cancel_scheduled")), d.get("scheduled"), list(d.get("charges") or []),
                   bool(d.get("setup_pending")))


def load(w: Work, subscription_id: str, *, for_update: bool = False) -> tuple[dict, State] | None:
    stmt = select(T.c.data, T.c.internal).where(T.c.site_id == w.site_id, T.c.id == subscription_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = w.tx.one(stmt)
    return (loads(row[0]), State.from_json(row[1])) if row else None


def require(w: Work, subscription_id: str, *, for_update: bool = False) -> tuple[dict, State]:
    found = load(w, subscription_id, for_update=for_update)
    if found is None:
        raise not_found("subscription", subscription_id)
    return found


def save(w: Work, sub: dict, st: State, *, insert: bool = False) -> None:
    sub = document(sub)
    if insert:
        SUBSCRIPTIONS.insert(w.tx, w.site_id, sub, w.now, columns={"internal": st.to_json()})
    elif not SUBSCRIPTIONS.update(w.tx, w.site_id, sub, w.now, columns={"internal": st.to_json()}):
        raise not_found("subscription", sub["id"])


def document(sub: dict) -> dict:
    """The subscription as the API shows it: the spec's field order, no empty values.
    (``customer_id`` is a v1 field the spec's schema omits; the SDK reads it.)"""
    ordered = sorted(((k, v) for k, v in sub.items() if v is not None and v != []),
                     key=lambda kv: _FIELD_ORDER.get(kv[0], len(_FIELD_ORDER)))
    sub.clear()
    sub.update(ordered)
    return sub


def with_scheduled(sub: dict, st: State) -> dict:
    """The subscription as it will be once its scheduled changes apply (only plan, quantity,
    remaining cycles, addons and coupons change)."""
    out = copy.deepcopy(sub)
    if st.scheduled:
        take_scheduled(out, st.scheduled)
    return document(out)


def take_scheduled(sub: dict, sc: dict) -> None:
    """Put a scheduled change's plan, quantity, addons, coupons and billing cycles on sub."""
    sub["plan_id"] = sc["plan_id"]
    sub["plan_quantity"] = sc["plan_quantity"]
    sub["addons"] = sc.get("addons") or []
    if "coupons" in sc:
        sub["coupons"] = sc["coupons"]
    if "remaining_billing_cycles" in sc:
        sub["remaining_billing_cycles"] = sc["remaining_billing_cycles"]
        if sc["remaining_billing_cycles"] is None:
            sub.pop("remaining_billing_cycles", None)


_FIELD_ORDER = {name: i for i, name in enumerate((*spec.resource_fields("Subscription"), "object", "customer_id"))}
