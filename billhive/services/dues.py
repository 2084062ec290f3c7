"""Keeping a subscription's dues (``due_invoices_count``, ``due_since``, ``total_dues``) true.

Every place that writes an invoice of a subscription with a new status or amount due calls
``refresh`` once, after the invoice is written in its transaction: the subscription's unpaid
invoices are loaded, ``domain/dues`` decides the fields, and the subscription document is saved
when they changed (no event of its own: Chargebee sends none for dues; the next event showing
the subscription carries them). ``fill`` sets them on a subscription document about to be shown
or saved, from the invoices as stored; ``reload`` puts them on an answer after its charges
settled (in a later transaction)."""

from __future__ import annotations

from sqlalchemy import bindparam, or_, select

from billhive import spec
from billhive.domain import dues as rules
from billhive.domain.invoices import CLOSED_UNPAID
from billhive.store.db import Q, Tx
from billhive.store.inlist import InList
from billhive.store.resources import INVOICES, SUBSCRIPTIONS
from billhive.util.jsonutil import loads
from billhive.work.context import Ctx, Work

_I = INVOICES.t
_UNPAID = Q(select(_I.c.data).where(_I.c.site_id == bindparam("site_id"),
                                    _I.c.subscription_id == bindparam("subscription_id"),
                                    or_(*(_I.c.status == status for status in CLOSED_UNPAID))))
_UNPAID_MANY = InList(lambda ids: select(_I.c.subscription_id, _I.c.data).where(
    _I.c.site_id == bindparam("site_id"), _I.c.subscription_id.in_(ids),
    or_(*(_I.c.status == status for status in CLOSED_UNPAID))), "subscription_id")


def refresh(w: Work, invoice: dict, *shown: dict | None) -> None:
    """After ``invoice`` was written: its subscription's dues, saved; the subscription documents
    in ``shown`` (event content about to be recorded: ``{"subscription": ...}`` dicts, or None)
    get them too."""
    sub_id = invoice.get("subscription_id")
    if not sub_id:
        return
    fields = rules.dues([*_unpaid(w.tx, w.site_id, sub_id), invoice])
    sub = SUBSCRIPTIONS.get(w.tx, w.site_id, sub_id, for_update=True)
    if sub is not None and rules.apply(sub, fields):
        SUBSCRIPTIONS.save(w.tx, w.site_id, _ordered(sub), w.now)
    for content in shown:
        target = (content or {}).get("subscription")
        if isinstance(target, dict) and target.get("id") == sub_id:
            rules.apply(target, fields)
            _ordered(target)


def fill(w: Work, sub: dict) -> dict:
    """``sub`` (a subscription document) with its dues from its invoices as stored now."""
    return fill_from(sub, _unpaid(w.tx, w.site_id, sub["id"]))


def fill_from(sub: dict, unpaid: list[dict]) -> dict:
    """``fill`` with the subscription's unpaid invoices already loaded (``unpaid_of``)."""
    rules.apply(sub, rules.dues(unpaid))
    return _ordered(sub)


def unpaid_of(w: Work, subscription_ids: list[str]) -> dict[str, list[dict]]:
    """The unpaid invoices of several subscriptions, in one statement (for ``fill_from``)."""
    out: dict[str, list[dict]] = {i: [] for i in subscription_ids}
    if subscription_ids:
        rows = w.tx.all(*_UNPAID_MANY(subscription_ids, {"site_id": w.site_id}))
        for sub_id, data in rows:
            out[sub_id].append(loads(data))
    return out


async def reload(ctx: Ctx, body: dict) -> dict:
    """An operation's answer after its charges settled: its subscription shows the dues stored now."""
    sub = body.get("subscription")
    if isinstance(sub, dict) and sub.get("id"):
        stored = await ctx.read(lambda w: SUBSCRIPTIONS.get(w.tx, w.site_id, sub["id"]))
        if stored is not None:
            rules.apply(sub, {k: stored[k] for k in rules.FIELDS if k in stored})
            _ordered(sub)
    return body


def preload(w: Work, subscription_ids: list[str]) -> None:
    """Read the unpaid invoices of several subscriptions in one statement (locked) for the dues
    that follow in this unit (``fill``, ``refresh``): each subscription's are answered from memory
    until an invoice of the subscription is written (``DocTable.remember``)."""
    if not subscription_ids:
        return
    ids = sorted(set(subscription_ids))
    found: dict[str, list[str]] = {i: [] for i in ids}
    for sub_id, data in w.tx.all(*_UNPAID_MANY_LOCKED(ids, {"site_id": w.site_id})):
        found[sub_id].append(data)
    for sub_id, texts in found.items():
        INVOICES.remember(w.tx, w.site_id, "subscription_id", sub_id, _UNPAID_MEMO, texts)


_UNPAID_MEMO = "dues.unpaid"
_UNPAID_MANY_LOCKED = InList(lambda ids: _UNPAID_MANY.build(ids).with_for_update(), "subscription_id")


def _unpaid(tx: Tx, site_pk: int, subscription_id: str) -> list[dict]:
    known = INVOICES.recall(tx, site_pk, "subscription_id", subscription_id, _UNPAID_MEMO)
    if known is not None:  # preloaded, and no invoice of the subscription written since
        return [loads(d) for d in known]
    return [loads(r[0]) for r in tx.all(_UNPAID, {"site_id": site_pk, "subscription_id": subscription_id})]


_ORDER = {name: i for i, name in enumerate(spec.resource_fields("Subscription"))}


def _ordered(sub: dict) -> dict:
    """The document's fields in the spec's order (unknown ones after), in place."""
    items = sorted(sub.items(), key=lambda kv: _ORDER.get(kv[0], len(_ORDER)))
    sub.clear()
    sub.update(items)
    return sub
