"""A subscription as stored: its API document and what billhive keeps beside it.

Internal state (not part of the resource; ``domain.subscriptions.State``) is the JSON column
``subscriptions.internal``: the billing anchor, a cancellation scheduled at term end, changes
scheduled at term end, charges waiting for the term end, and whether the setup cost is still to bill.
"""

from __future__ import annotations

import copy

from sqlalchemy import bindparam, select

from billhive import spec
from billhive.domain import subscriptions as R
from billhive.domain.subscription_billing import take_scheduled
from billhive.domain.subscriptions import State
from billhive.errors import not_found
from billhive.services import dues
from billhive.store import schema as S
from billhive.store.db import Q
from billhive.store.inlist import InList
from billhive.store.resources import SUBSCRIPTIONS
from billhive.util.jsonutil import dumps, loads
from billhive.work.context import Work

LIVE = R.LIVE
T = S.subscriptions


_LOAD = Q(select(T.c.data, T.c.internal).where(T.c.site_id == bindparam("site_id"), T.c.id == bindparam("id")))
_LOAD_FOR_UPDATE = Q(_LOAD.stmt.with_for_update())
_LOAD_MANY = InList(lambda ids: select(T.c.id, T.c.data, T.c.internal).where(
    T.c.site_id == bindparam("site_id"), T.c.id.in_(ids)), "id")


def load(w: Work, subscription_id: str, *, for_update: bool = False) -> tuple[dict, State] | None:
    known = SUBSCRIPTIONS.remembered(w.tx, w.site_id, subscription_id, "internal")  # ``preload``ed
    if known is not None:
        doc, (internal,) = known
        return doc, State.from_dict(loads(internal) if internal else {})
    row = w.tx.one(_LOAD_FOR_UPDATE if for_update else _LOAD, {"site_id": w.site_id, "id": subscription_id})
    return (loads(row[0]), State.from_dict(loads(row[1]) if row[1] else {})) if row else None


def load_many(w: Work, subscription_ids: list[str]) -> dict[str, tuple[dict, State]]:
    """``load`` of several subscriptions in one statement (not locked), by id; absent ones left out."""
    if not subscription_ids:
        return {}
    rows = w.tx.all(*_LOAD_MANY(subscription_ids, {"site_id": w.site_id}))
    return {r[0]: (loads(r[1]), State.from_dict(loads(r[2]) if r[2] else {})) for r in rows}


def preload(w: Work, subscription_ids: list[str]) -> dict[str, dict]:
    """Load several subscriptions, locked, in one statement, for the ``load`` calls that follow
    in this unit (answered from memory while the rows are unchanged: ``DocTable.get_many``): by id."""
    return SUBSCRIPTIONS.get_many(w.tx, w.site_id, subscription_ids, for_update=True, extra=("internal",))


def require(w: Work, subscription_id: str, *, for_update: bool = False) -> tuple[dict, State]:
    found = load(w, subscription_id, for_update=for_update)
    if found is None:
        raise not_found("subscription", subscription_id)
    return found


def save(w: Work, sub: dict, st: State, *, insert: bool = False) -> None:
    sub = dues.fill(w, document(sub))
    if insert:
        SUBSCRIPTIONS.insert(w.tx, w.site_id, sub, w.now, columns={"internal": dumps(st.to_dict())})
    elif not SUBSCRIPTIONS.update(w.tx, w.site_id, sub, w.now, columns={"internal": dumps(st.to_dict())}):
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


_FIELD_ORDER = {name: i for i, name in enumerate((*spec.resource_fields("Subscription"), "object", "customer_id"))}
