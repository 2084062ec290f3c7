"""Subscriptions: /api/v1/subscriptions/... and recurring billing on the site clock.

Every operation has the same shape: *compose* the outcome on copies (the subscription after the
change, the invoice it bills, built in memory by ``services/invoicing``), then *commit* it (save,
redeem, close or insert the invoice, schedule jobs, record events). Estimates (services/estimates.py)
run the same compose step and never commit — so an estimate cannot drift from the operation.

Invoices:
- the first invoice of a subscription (signup, trial end, start of a future subscription,
  reactivation) is closed at once (``invoicing.close``) and charged after commit;
- renewals and mid-term changes that bill are *pending* when the site's ``metered_billing`` is on
  (``invoicing.insert_pending``; collect closes them), else closed at once the same way.

Jobs (one live job per key, all on the site clock; ``_reschedule`` derives them from the
subscription after every change):
- ``subscription_start:<id>``      a future subscription starts (start_date)
- ``subscription_term_end:<id>``   current_term_end: trial end, renewal, or cancellation
- ``subscription_reminder:<id>``   renewal_reminder_days before a renewal (or a cancellation)
- ``subscription_trial_ending:<id>`` trial_ending_days before the trial ends

Internal state (not part of the resource) is the JSON column ``subscriptions.internal``: the
billing anchor, a cancellation scheduled at term end, changes scheduled at term end, charges
waiting for the term end, and whether the setup cost is still to bill.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import or_, select

from billhive import spec
from billhive.domain import catalog as catalog_rules
from billhive.domain import coupons as CR
from billhive.domain import money
from billhive.domain import periods as P
from billhive.domain import subscriptions as R
from billhive.errors import (
    DuplicateEntry,
    InvalidRequest,
    InvalidState,
    ParamError,
    ParamRequired,
    PaymentMethodNotPresent,
    not_found,
)
from billhive.services import (
    addons,
    cards,
    coupons,
    credits,
    customers,
    dues,
    dunning,
    invoicing,
    payment_intents,
    payments,
    plans,
    transactions,
)
from billhive.store import schema as S
from billhive.store.lists import ListRequest, fetch_page
from billhive.store.resources import (
    ADDONS,
    CARDS,
    COUPONS,
    CUSTOMERS,
    PLANS,
    SUBSCRIPTIONS,
)
from billhive.util.ids import random_id
from billhive.util.jsonutil import dumps, loads
from billhive.work import jobs
from billhive.work.context import Ctx, Work

_ID = re.compile(r"^[^\s/\\?#%]+$")
LIVE = R.LIVE
T = S.subscriptions


# ---- internal state ------------------------------------------------------------------------------

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
    def from_json(cls, raw: str | None) -> "State":
        d = loads(raw) if raw else {}
        return cls(d.get("anchor"), bool(d.get("cancel_scheduled")), d.get("scheduled"), list(d.get("charges") or []),
                   bool(d.get("setup_pending")))


def _load(w: Work, subscription_id: str, *, for_update: bool = False) -> tuple[dict, State] | None:
    stmt = select(T.c.data, T.c.internal).where(T.c.site_id == w.site_id, T.c.id == subscription_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = w.tx.one(stmt)
    return (loads(row[0]), State.from_json(row[1])) if row else None


def _require(w: Work, subscription_id: str, *, for_update: bool = False) -> tuple[dict, State]:
    found = _load(w, subscription_id, for_update=for_update)
    if found is None:
        raise not_found("subscription", subscription_id)
    return found


def _save(w: Work, sub: dict, st: State, *, insert: bool = False) -> None:
    sub = dues.fill(w, _document(sub))
    if insert:
        SUBSCRIPTIONS.insert(w.tx, w.site_id, sub, w.now, columns={"internal": st.to_json()})
    elif not SUBSCRIPTIONS.update(w.tx, w.site_id, sub, w.now, columns={"internal": st.to_json()}):
        raise not_found("subscription", sub["id"])


_FIELD_ORDER = {name: i for i, name in enumerate((*spec.resource_fields("Subscription"), "object", "customer_id"))}


def _document(sub: dict) -> dict:
    """The subscription as the API shows it: the spec's field order, no empty values.
    (``customer_id`` is a v1 field the spec's schema omits; the SDK reads it.)"""
    ordered = sorted(((k, v) for k, v in sub.items() if v is not None and v != []),
                     key=lambda kv: _FIELD_ORDER.get(kv[0], len(_FIELD_ORDER)))
    sub.clear()
    sub.update(ordered)
    return sub


# ---- the catalog and customers (lookups other services own) -------------------------------------------

def _plan(w: Work, plan_id: str, param: str, *, use: bool = True) -> dict:
    """A plan for a new subscription or a change: it must exist and be active. ``use`` marks it
    in use (the real operation); estimates only look."""
    if use:
        return plans.use_plan(w, plan_id, param=param)
    plan = plans.get_plan(w, plan_id, param=param)
    if plan["status"] != "active":
        raise ParamError(f"{param} : The plan {plan_id} is {plan['status']} and cannot be used", param=param)
    return plan


def _plan_any(w: Work, plan_id: str) -> dict:
    """The subscription's current plan, whatever its status now."""
    plan = PLANS.get(w.tx, w.site_id, plan_id)
    if plan is None:
        raise InvalidState(f"The plan {plan_id} of this subscription no longer exists")
    return plan


def _addon(w: Work, addon_id: str, param: str, *, use: bool = True) -> dict:
    if use:
        return addons.use_addon(w, addon_id, param=param)
    addon = addons.get_addon(w, addon_id, param=param)
    if addon["status"] != "active":
        raise ParamError(f"{param} : The addon {addon_id} is {addon['status']} and cannot be used", param=param)
    return addon


def _addon_any(w: Work, addon_id: str) -> dict | None:
    return ADDONS.get(w.tx, w.site_id, addon_id)


def _resolve_coupon(w: Work, value: str, param: str) -> tuple[dict, str | None]:
    """A ``coupon`` parameter names a coupon id or a coupon code: (coupon, code or None), checked
    redeemable (404 / 400 resource_limit_exhausted / 409) — redeemed only when committing."""
    coupon, code = coupons.resolve(w, value, param=param)
    catalog_rules.check_redeemable(coupon, w.now, param=param)
    return coupon, code


def _redeem(w: Work, coupon: dict, code: str | None, param: str) -> None:
    coupons.redeem(w, coupon["id"], code, param=param)


def _coupon_doc(w: Work, coupon_id: str) -> dict | None:
    return COUPONS.get(w.tx, w.site_id, coupon_id)


def _customer(w: Work, customer_id: str, *, for_update: bool = False, param: str | None = None) -> dict:
    return customers.get_customer(w, customer_id, for_update=for_update, param=param)


# ---- payment details given with a subscription operation (card[...], payment_intent[...],
# payment_method[...]): the customers service's rules; a card is stored at the gateway before the
# write transaction, never inside it -------------------------------------------------------------------

@dataclass(frozen=True)
class PaymentIn:
    """Payment details of a request, checked (and a card stored at the gateway)."""

    card: cards.CardInput | None = None
    stored: Any = None
    intent_id: str | None = None
    method: dict | None = None  # a non-card payment method


async def prepare_payment(ctx: Ctx, params: dict) -> PaymentIn:
    given = [k for k in ("card", "payment_intent", "payment_method") if params.get(k)]
    if len(given) > 1:
        raise InvalidRequest(f"{given[1]} : cannot be given together with {given[0]}", param=given[1])
    if params.get("card"):
        gateway = await cards.site_gateway(ctx, params["card"].get("gateway"), "card[gateway]")
        now = await ctx.read(lambda w: w.now)
        card = cards.check_card(params["card"], "card", now)
        return PaymentIn(card=card, stored=await cards.store_at_gateway(ctx, gateway, card))
    if params.get("payment_intent"):
        intent_id = params["payment_intent"].get("id")
        if intent_id is None:
            raise ParamRequired("payment_intent[id] : cannot be blank (the chargebee gateway completes 3DS through "
                                "payment intents)", param="payment_intent[id]")
        return PaymentIn(intent_id=intent_id)
    if params.get("payment_method"):
        return PaymentIn(method=customers._payment_method(ctx.app, params["payment_method"], "payment_method"))
    return PaymentIn()


def _apply_payment(w: Work, customer: dict, pay: PaymentIn) -> list[tuple[str, dict]]:
    """Give an existing customer the request's payment details; returns the events to record
    (card_added / card_updated / card_deleted) with their content. The caller saves the customer."""
    card = None
    if pay.card is not None:
        cards.check_expiry(pay.card.expiry_year, pay.card.expiry_month, w.now, "card")
        card = cards.build_card(customer["id"], pay.card, pay.stored)
    elif pay.intent_id is not None:
        card = payment_intents.consume(w, pay.intent_id, customer["id"], param="payment_intent[id]")
    if card is not None:
        added = cards.attach(w, customer, card)
        return [("card_added" if added else "card_updated", card)]
    if pay.method is not None:
        old = cards.detach(w, customer)
        customer["payment_method"] = pay.method
        return [("card_deleted", old)] if old is not None else []
    return []


def _new_customer(w: Work, params: dict, pay: PaymentIn) -> dict:
    """create_a_subscription's customer (customer[...], billing_address[...], the payment details),
    created by the customers service (customer_created, card_added)."""
    given = dict(params.get("customer") or {})
    customer_id = given.pop("id", None) or random_id()
    _validate_id(customer_id, "customer[id]")
    if CUSTOMERS.exists(w.tx, w.site_id, customer_id):
        raise DuplicateEntry(f"customer[id] : The value {customer_id} is already present.", param="customer[id]")
    for k in ("billing_address", "created_from_ip"):
        if params.get(k) is not None:
            given[k] = params[k]
    return customers._create(w, customer_id, given, pay.card, pay.stored, pay.method, pay.intent_id)["customer"]


# ---- items, charges, invoices -----------------------------------------------------------------------

def _addon_rows(sub: dict) -> list[dict]:
    return list(sub.get("addons") or [])


def _items(w: Work, plan: dict, plan_quantity: int, addons: list[dict]) -> list[R.Item]:
    out = [R.plan_item(plan, plan_quantity)]
    for row in addons:
        addon = _addon_any(w, row["id"])
        if addon is not None:
            out.append(R.addon_item(addon, int(row.get("quantity", 1))))
    return out


def _check_addons(w: Work, plan: dict, given: list[dict], *, use: bool) -> tuple[list[dict], list[R.Item]]:
    """addons[id][i] / addons[quantity][i]: (recurring rows for the subscription, one-time items)."""
    seen: set[str] = set()
    recurring: list[dict] = []
    once: list[R.Item] = []
    for i, row in enumerate(given):
        pid = f"addons[id][{i}]"
        if "id" not in row:
            raise ParamError(f"{pid} : cannot be blank", param=pid)
        if row["id"] in seen:
            raise ParamError(f"{pid} : {row['id']} is given more than once", param=pid)
        seen.add(row["id"])
        addon = _addon(w, row["id"], pid, use=use)
        qty = row.get("quantity")
        if addon.get("type") == "quantity":
            qty = 1 if qty is None else qty
            if qty < 1:
                raise ParamError(f"addons[quantity][{i}] : must be at least 1", param=f"addons[quantity][{i}]")
        else:
            if qty not in (None, 1):
                raise ParamError(f"addons[quantity][{i}] : quantity applies only to quantity type addons",
                                 param=f"addons[quantity][{i}]")
            qty = 1
        if addon.get("charge_type", "recurring") == "recurring":
            if (addon.get("period", 1), addon.get("period_unit")) != (plan.get("period", 1), plan.get("period_unit")):
                raise InvalidRequest(f"{pid} : the addon {addon['id']} is billed every {addon.get('period', 1)} "
                                     f"{addon.get('period_unit')}(s), the plan every {plan.get('period', 1)} "
                                     f"{plan.get('period_unit')}(s)", param=pid)
            out = {"id": addon["id"], "quantity": qty}
            if row.get("proration_type"):
                out["proration_type"] = row["proration_type"]
            recurring.append(out)
        else:
            once.append(R.addon_item(addon, qty))
    return recurring, once


def _delayed_items(w: Work, st: State) -> list[R.Item]:
    """Charges waiting for the term end (add_charge_at_term_end, charge_addon_at_term_end)."""
    out = []
    for c in st.charges:
        if "addon_id" in c:
            addon = _addon_any(w, c["addon_id"])
            if addon is not None:
                out.append(R.addon_item(addon, int(c.get("quantity", 1))))
        else:
            out.append(R.adhoc_item(int(c["amount"]), c["description"]))
    return out


def _check_total(existing: list[R.Item], added: list[tuple[R.Item, str]]) -> None:
    """A term's charges - the ``existing`` items and those this request ``added``, each with the
    parameter it comes from - stay within money.MAX_AMOUNT, so no invoice of the subscription
    (renewals included) goes beyond it. The error names the parameter of the added item that takes
    the sum over (existing items count first). A request that adds nothing is not held to it."""
    if not added:
        return
    parts = [*((i.amount, None) for i in existing), *((i.amount, param) for i, param in added)]
    money.total_of(parts, "the charges of a term")


def _plan_param(params: dict) -> str | None:
    """The parameter a plan's line comes from in this request (None: unchanged by it)."""
    return next((k for k in ("plan_quantity", "plan_id") if params.get(k) is not None), None)


def _split_given(items: list[R.Item], params: dict) -> tuple[list[R.Item], list[tuple[R.Item, str]]]:
    """(items this request does not touch, [(item, parameter)] for those it gives): the plan by
    plan_quantity / plan_id, addons by addons[quantity][i] / addons[id][i]."""
    given = {row.get("id"): i for i, row in enumerate(params.get("addons") or ())}
    existing, added = [], []
    for item in items:
        param: str | None = None
        if item.entity_type == "plan":
            param = _plan_param(params)
        elif item.entity_type == "addon" and item.entity_id in given:
            i = given[item.entity_id]
            param = f"addons[quantity][{i}]" if "quantity" in params["addons"][i] else f"addons[id][{i}]"
        if param is None:
            existing.append(item)
        else:
            added.append((item, param))
    return existing, added


def _coupons_in_effect(w: Work, sub: dict, at: int) -> list[tuple[dict, dict]]:
    out = []
    for entry in sub.get("coupons") or []:
        coupon = _coupon_doc(w, entry["coupon_id"])
        if coupon is not None and CR.in_effect(entry, coupon, at):
            out.append((entry, coupon))
    return out


def _drop_spent_coupons(w: Work, sub: dict, at: int) -> None:
    """Coupons whose duration is over leave the subscription (at a term start)."""
    keep = []
    for entry in sub.get("coupons") or []:
        coupon = _coupon_doc(w, entry["coupon_id"])
        if coupon is not None and CR.in_effect(entry, coupon, at):
            keep.append(entry)
    sub["coupons"] = keep


def _notes(w: Work, sub: dict, plan: dict | None, customer: dict, coupons: list[dict]) -> list[dict]:
    notes = []
    for entity_type, doc in (("subscription", sub), ("plan", plan), ("customer", customer)):
        if doc and doc.get("invoice_notes"):
            notes.append({"note": doc["invoice_notes"], "entity_type": entity_type, "entity_id": doc["id"]})
    for c in coupons:
        if c.get("invoice_notes"):
            notes.append({"note": c["invoice_notes"], "entity_type": "coupon", "entity_id": c["id"]})
    return notes


def _invoice(w: Work, sub: dict, customer: dict, charges: list[R.Charge], *, at: int, first: bool,
             pending: bool, plan: dict | None, credit: int = 0) -> tuple[dict, int]:
    """The invoice for these charges (in memory): the subscription's coupons in effect at ``at``
    discount it (their applied_count goes up on ``sub``), then up to ``credit`` of prorated
    credits (credit_adjustment). Returns (invoice, credit left over)."""
    lines = [invoicing.line_item(**c.line_fields()) for c in charges]
    for li in lines:
        if li.get("entity_id") is None:
            li.pop("entity_id", None)
    in_effect = _coupons_in_effect(w, sub, at)
    discounts = CR.discounts([c for _, c in in_effect], lines)
    used = {d["entity_id"] for d in discounts}
    for entry, coupon in in_effect:
        if coupon["id"] in used:
            entry["applied_count"] = int(entry.get("applied_count", 0)) + 1
    left = max(0, sum(li["amount"] for li in lines) - sum(d["amount"] for d in discounts))
    adjust = min(credit, left)
    if adjust > 0:
        discounts.append({"amount": adjust, "description": "Prorated credits for the unused period",
                          "type": "credit_adjustment"})
    inv = invoicing.new_invoice(w, customer=customer, start_date=at, line_items=lines, recurring=True,
                                first_invoice=first, subscription_id=sub["id"], discounts=discounts, pending=pending)
    notes = _notes(w, sub, plan, customer, [c for _, c in in_effect if c["id"] in used])
    if notes:
        inv["notes"] = notes
    if sub.get("po_number"):
        inv["po_number"] = sub["po_number"]
    return inv, credit - adjust


# ---- jobs -----------------------------------------------------------------------------------------------

JOB_START = "subscription_start"
JOB_TERM_END = "subscription_term_end"
JOB_REMINDER = "subscription_reminder"
JOB_TRIAL_ENDING = "subscription_trial_ending"
DAY = 86400


def _key(kind: str, sub_id: str) -> str:
    return f"{kind}:{sub_id}"


def _reschedule(w: Work, sub: dict, st: State) -> None:
    """The subscription's jobs, derived from its status and dates."""
    sid, status = sub["id"], sub["status"]
    wanted: dict[str, int] = {}
    payloads: dict[str, dict] = {}
    if status == "future":
        wanted[JOB_START] = int(sub["start_date"])
    elif status in ("in_trial", "active", "non_renewing"):
        end = int(sub["current_term_end"])
        wanted[JOB_TERM_END] = end
        payloads[JOB_TERM_END] = {"at": end}
        if status == "in_trial":
            at = end - int(w.site.setting("trial_ending_days")) * DAY
            if at > w.now:
                wanted[JOB_TRIAL_ENDING] = at
                payloads[JOB_TRIAL_ENDING] = {"at": end}
        else:
            at = end - int(w.site.setting("renewal_reminder_days")) * DAY
            if at > w.now:
                wanted[JOB_REMINDER] = at
                payloads[JOB_REMINDER] = {"at": end}
    for kind in (JOB_START, JOB_TERM_END, JOB_REMINDER, JOB_TRIAL_ENDING):
        if kind in wanted:
            jobs.schedule(w, kind, sid, due_at=wanted[kind], key=_key(kind, sid), payload=payloads.get(kind))
        else:
            jobs.cancel(w, _key(kind, sid))


def _cancel_jobs(w: Work, sub_id: str) -> None:
    for kind in (JOB_START, JOB_TERM_END, JOB_REMINDER, JOB_TRIAL_ENDING):
        jobs.cancel(w, _key(kind, sub_id))


# ---- events and responses ----------------------------------------------------------------------------

def _content(w: Work, sub: dict, invoice: dict | None = None) -> dict:
    out: dict = {"subscription": dues.fill(w, sub)}
    customer = CUSTOMERS.get(w.tx, w.site_id, sub["customer_id"])
    if customer is not None:
        out["customer"] = customer
    card = cards.get_card(w, sub["customer_id"])
    if card is not None:
        out["card"] = card
    if invoice is not None:
        out["invoice"] = invoice
    return out


# every event type this module emits, some through variables (for docs/coverage.md)
EMITS = ("subscription_created", "subscription_started", "subscription_activated", "subscription_changed",
         "subscription_cancelled", "subscription_cancellation_scheduled", "subscription_scheduled_cancellation_removed",
         "subscription_reactivated", "subscription_renewed", "subscription_deleted", "subscription_trial_ending",
         "subscription_trial_extended", "subscription_renewal_reminder", "subscription_cancelling",
         "subscription_shipping_address_updated", "card_added", "card_updated", "card_deleted")


def _emit(w: Work, event_type: str, sub: dict, invoice: dict | None = None) -> dict:
    content = _content(w, copy.deepcopy(sub), invoice)
    w.emit(event_type, content)
    return content


@dataclass
class Outcome:
    """What a committed operation answers, and the charges to make once it is durable."""

    body: dict
    charges: list[invoicing.ChargePlan] = field(default_factory=list)


async def _finish(ctx: Ctx, out: Outcome) -> dict:
    """Charge after commit (never inside a transaction); the answer shows the settled invoice."""
    for plan in out.charges:
        inv = await payments.charge_and_settle(ctx, plan)
        if out.body.get("invoice", {}).get("id") == inv["id"]:
            out.body["invoice"] = inv
    return await dues.reload(ctx, out.body) if out.charges else out.body


def _charge_in_job(w: Work, plan: invoicing.ChargePlan | None) -> None:
    """From a scheduler job: charge once the job's transaction is durable."""
    if plan is None:
        return
    app, site_pk, origin = w.app, w.site_id, w.origin

    async def charge() -> None:
        await payments.charge_and_settle(Ctx(app, site_pk, origin), plan)
    w.after_commit(charge)


def _issue(w: Work, inv: dict, *, may_pend: bool) -> invoicing.ChargePlan | None:
    """Save the invoice: pending under metered billing when allowed (renewals, changes), else
    closed at once (numbered, credits applied, charge planned)."""
    if may_pend and w.site.setting("metered_billing"):
        inv["end_date"] = inv["start_date"]  # the renewal (or change) date, kept by close_date=renewal_date
        invoicing.insert_pending(w, inv)
        return None
    return invoicing.close(w, inv, insert=True, expect_status=None)


def _require_payment_method(w: Work, inv: dict, plan: invoicing.ChargePlan | None) -> None:
    """Chargebee creates (or reactivates) a subscription whose first invoice must be paid now only
    when the customer has a payment method (auto-collection on, amount due, no card -> 400)."""
    if plan is None and inv["status"] == "payment_due":
        customer = _customer(w, inv["customer_id"])
        if invoicing.effective_auto_collection(w, inv, customer) == "on":
            raise PaymentMethodNotPresent("The customer has no card on file; it is needed to collect the "
                                          "subscription's first invoice (auto_collection is on)")


# ==== create ==========================================================================================

@dataclass
class Composed:
    """A subscription after an operation, and the invoice it bills now (built in memory)."""

    sub: dict
    st: State
    customer: dict
    plan: dict
    invoice: dict | None = None  # billed now
    first: bool = False  # the subscription's first invoice (never pending)
    credit_left: int = 0  # prorated credits beyond the invoice: refundable credits for the customer
    coupon: tuple[dict, str | None] | None = None  # a coupon to redeem
    events: list[str] = field(default_factory=list)


def _validate_id(value: str, param: str) -> None:
    if not _ID.match(value):
        raise ParamError(f"{param} : may not contain whitespace, '/', '\\', '?', '#' or '%'", param=param)


def compose_create(w: Work, params: dict, customer: dict, *, use: bool = True) -> Composed:
    """The subscription create_a_subscription / create_subscription_for_customer would make for
    ``customer`` now, with its first invoice when one is due now. Reads only (``use`` marks the
    plan and addons in use, as the real operation does)."""
    now = w.now
    sub_id = params.get("id") or random_id()
    _validate_id(sub_id, "id")
    plan = _plan(w, params["plan_id"], "plan_id", use=use)
    quantity = params.get("plan_quantity", 1)
    recurring, once = _check_addons(w, plan, params.get("addons") or [], use=use)
    setup = R.setup_charge(plan, now)
    _check_total(*_split_given([*_items(w, plan, quantity, recurring), *once, *([setup.item] if setup else [])],
                               {**params, "plan_id": plan["id"]}))
    period, unit = int(plan.get("period", 1)), plan.get("period_unit", "month")

    start = params.get("start_date")
    future = start is not None and start > now
    if start is None:
        start = now
    elif start < now and start < P.add_period(now, -period, unit):
        raise ParamError("start_date : can be backdated by at most one billing period of the plan", param="start_date")

    trial_end = params.get("trial_end")
    if trial_end == 0:
        trial_end = None
    elif trial_end is None and plan.get("trial_period"):
        trial_end = P.trial_end(start, int(plan["trial_period"]), plan.get("trial_period_unit", "day"))
    elif trial_end is not None and trial_end <= start:
        raise ParamError("trial_end : must be later than the subscription's start", param="trial_end")

    cycles = params.get("billing_cycles", plan.get("billing_cycles"))
    sub: dict = {"id": sub_id, "plan_id": plan["id"], "plan_quantity": quantity}
    if cycles is not None:
        sub["remaining_billing_cycles"] = cycles
    for k in ("po_number", "affiliate_token", "created_from_ip", "invoice_notes", "meta_data"):
        if params.get(k) is not None:
            sub[k] = params[k]
    if params.get("shipping_address"):
        sub["shipping_address"] = {**params["shipping_address"], "object": "shipping_address"}
    sub.update({"created_at": now, "has_scheduled_changes": False, "object": "subscription",
                "customer_id": customer["id"]})
    if recurring:
        sub["addons"] = recurring
    st = State(setup_pending=bool(plan.get("setup_cost")))

    coupon = None
    if params.get("coupon"):
        c, code = _resolve_coupon(w, params["coupon"], "coupon")
        if not CR.applicable(c, [("plan", plan["id"]), *(("addon", a["id"]) for a in recurring),
                                 *(("addon", i.entity_id) for i in once)]):
            raise InvalidRequest(f"coupon : The coupon {c['id']} is not applicable to this plan or its addons",
                                 param="coupon")
        sub["coupons"] = [CR.attach(c, now, code)]
        coupon = (c, code)

    out = Composed(sub, st, customer, plan, coupon=coupon)
    if future:
        sub["status"] = "future"
        sub["start_date"] = start
        if trial_end is not None:
            sub["trial_end"] = trial_end
        st.charges = [{"addon_id": i.entity_id, "quantity": i.quantity} for i in once]
        return out
    sub["started_at"] = start
    if params.get("start_date") is not None:  # backdated: the given start date is kept, as for future ones
        sub["start_date"] = start
    if trial_end is not None:
        sub["status"] = "in_trial"
        sub.update({"trial_start": start, "trial_end": trial_end, "current_term_start": start,
                    "current_term_end": trial_end})
        st.charges = [{"addon_id": i.entity_id, "quantity": i.quantity} for i in once]
        return out
    sub["status"] = "active"
    _start_first_term(w, out, start, extra=once)
    return out


def _start_first_term(w: Work, c: Composed, at: int, extra: list[R.Item] = ()) -> None:  # type: ignore[assignment]
    """The subscription becomes active at ``at``: its first term and first invoice (full term, the
    setup cost and charges waiting for it). ``c.sub["status"]`` is already the target status."""
    sub, st, plan = c.sub, c.st, c.plan
    st.anchor = at
    sub["activated_at"] = at
    sub["current_term_start"] = at
    sub["current_term_end"] = P.term_end(at, 1, int(plan.get("period", 1)), plan.get("period_unit", "month"))
    remaining, last = R.start_term(sub.get("remaining_billing_cycles"))
    if remaining is not None:
        sub["remaining_billing_cycles"] = remaining
    if last and sub["status"] == "active":
        sub["status"] = "non_renewing"
    items = _items(w, plan, sub["plan_quantity"], _addon_rows(sub))
    charges = R.term_charges(items, at, sub["current_term_end"])
    if st.setup_pending:
        setup = R.setup_charge(plan, at)
        if setup is not None:
            charges.append(setup)
        st.setup_pending = False
    charges += R.one_time_charges([*extra, *_delayed_items(w, st)], at)
    st.charges = []
    c.invoice, _ = _invoice(w, sub, c.customer, charges, at=at, first=True, pending=False, plan=plan)
    c.first = True


def _commit_new(w: Work, c: Composed) -> invoicing.ChargePlan | None:
    """Save a composed new subscription (the customer row exists), its invoice and jobs."""
    if SUBSCRIPTIONS.exists(w.tx, w.site_id, c.sub["id"]):
        raise DuplicateEntry(f"id : The value {c.sub['id']} is already present.", param="id")
    if c.coupon is not None:
        _redeem(w, c.coupon[0], c.coupon[1], "coupon")
    _save(w, c.sub, c.st, insert=True)
    plan = None
    if c.invoice is not None:
        plan = _issue(w, c.invoice, may_pend=False)
        _require_payment_method(w, c.invoice, plan)
    _reschedule(w, c.sub, c.st)
    return plan


def _create_unit(w: Work, params: dict, customer_id: str | None, pay: PaymentIn) -> Outcome:
    if customer_id is None:  # create_a_subscription: the customer comes with it
        customer = _new_customer(w, params, pay)
    else:
        customer = _customer(w, customer_id, for_update=True)
        changes = _apply_payment(w, customer, pay)
        if changes:
            cards.save_customer(w, customer)
            for event, card in changes:
                w.emit(event, cards.content(customer, card))
    c = compose_create(w, params, customer)
    plan = _commit_new(w, c)
    body = _emit(w, "subscription_created", c.sub, c.invoice)
    return Outcome(body, [plan] if plan else [])


async def create(ctx: Ctx, params: dict) -> dict:
    """POST /subscriptions — a subscription with its customer (customer[...], card[...],
    payment_intent[...] or payment_method[...], billing_address[...])."""
    pay = await prepare_payment(ctx, params)
    return await _finish(ctx, await ctx.write(_create_unit, params, None, pay))


async def create_for_customer(ctx: Ctx, customer_id: str, params: dict) -> dict:
    """POST /customers/{id}/subscriptions (payment_intent[...] gives the customer its card first)."""
    pay = await prepare_payment(ctx, params)
    return await _finish(ctx, await ctx.write(_create_unit, params, customer_id, pay))


# ==== reads =============================================================================================

def _view(w: Work, subscription_id: str) -> dict:
    sub, _ = _require(w, subscription_id)
    return _content(w, sub)


async def retrieve(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    return await ctx.read(_view, subscription_id)


def _with_scheduled(w: Work, sub: dict, st: State) -> dict:
    """The subscription as it will be once its scheduled changes apply (only plan, quantity,
    remaining cycles, addons and coupons change)."""
    out = copy.deepcopy(sub)
    if st.scheduled:
        _take_scheduled(out, st.scheduled)
    return _document(out)


def _take_scheduled(sub: dict, sc: dict) -> None:
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


async def retrieve_with_scheduled_changes(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        sub, st = _require(w, subscription_id)
        return _content(w, _with_scheduled(w, sub, st))
    return await ctx.read(run)


def _page(ctx: Ctx, req: ListRequest, *where: Any, customer_id: str | None = None):  # type: ignore[no-untyped-def]
    """A page of subscriptions; list_subscriptions gives each its customer and card (the spec),
    a customer's list (list_subscriptions_for_a_customer) only the subscriptions."""
    def run(w: Work) -> dict:
        page = fetch_page(w.tx, SUBSCRIPTIONS, w.site_id, req, where=where,
                          parent=(CUSTOMERS, customer_id) if customer_id is not None else None)
        if customer_id is not None:
            return page.response("subscription")
        ids = list({s["customer_id"] for s in page.items})
        customers = {c["id"]: c for c in CUSTOMERS.find(w.tx, w.site_id, CUSTOMERS.t.c.id.in_(ids))} if ids else {}
        cards = {c["customer_id"]: c for c in CARDS.find(w.tx, w.site_id, CARDS.t.c.id.in_(ids))} if ids else {}

        def extra(sub: dict) -> dict:
            out = {}
            if sub["customer_id"] in customers:
                out["customer"] = customers[sub["customer_id"]]
            if sub["customer_id"] in cards:
                out["card"] = cards[sub["customer_id"]]
            return out
        return page.response("subscription", extra)
    return ctx.read(run)


async def list_subscriptions(ctx: Ctx, params: dict) -> dict:
    return await _page(ctx, params["_list"])


async def list_for_customer(ctx: Ctx, customer_id: str, params: dict) -> dict:
    return await _page(ctx, params["_list"], T.c.customer_id == customer_id, customer_id=customer_id)


# ==== term end: trial end, renewal, cancellation (scheduler) ==============================================

def _apply_scheduled(w: Work, sub: dict, st: State) -> bool:
    """Scheduled changes take effect (at a term end). Returns whether there were any."""
    if not st.scheduled:
        return False
    _take_scheduled(sub, st.scheduled)
    st.scheduled = None
    sub["has_scheduled_changes"] = False
    return True


def compose_renewal(w: Work, sub: dict, st: State, at: int, *, include_delayed: bool = True) -> Composed:
    """The subscription renewed at ``at`` (its term end) and the renewal invoice, on copies.
    Changes scheduled for the term end apply first; a new billing period restarts the anchor."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    customer = _customer(w, sub["customer_id"])
    before = _plan_any(w, sub["plan_id"])
    changed = _apply_scheduled(w, sub, st)
    plan = _plan_any(w, sub["plan_id"])
    period, unit = int(plan.get("period", 1)), plan.get("period_unit", "month")
    if st.anchor is None or _period(before) != (period, unit):
        st.anchor = at
    _drop_spent_coupons(w, sub, at)
    sub["current_term_start"] = at
    sub["current_term_end"] = P.term_end_after(st.anchor, period, unit, at)
    remaining, last = R.start_term(sub.get("remaining_billing_cycles"))
    if remaining is not None:
        sub["remaining_billing_cycles"] = remaining
    if last:
        sub["status"] = "non_renewing"
    items = _items(w, plan, sub["plan_quantity"], _addon_rows(sub))
    charges = R.term_charges(items, at, sub["current_term_end"])
    if include_delayed:
        charges += R.one_time_charges(_delayed_items(w, st), at)
        st.charges = []
    inv, _ = _invoice(w, sub, customer, charges, at=at, first=False, pending=bool(w.site.setting("metered_billing")),
                      plan=plan)
    c = Composed(sub, st, customer, plan, invoice=inv)
    if changed:
        c.events.append("subscription_changed")
    return c


def _period(plan: dict) -> tuple[int, str]:
    return int(plan.get("period", 1)), plan.get("period_unit", "month")


def compose_delayed_only(w: Work, sub: dict, st: State, at: int) -> Composed:
    """A non-renewing subscription's term end: only the charges waiting for it are billed."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    customer = _customer(w, sub["customer_id"])
    plan = _plan_any(w, sub["plan_id"])
    items = _delayed_items(w, st)
    c = Composed(sub, st, customer, plan)
    if items:
        c.invoice, _ = _invoice(w, sub, customer, R.one_time_charges(items, at), at=at, first=False, pending=False,
                                plan=plan)
    st.charges = []
    return c


def _cancel(w: Work, sub: dict, st: State, at: int, *, reason: str | None = None,
            bill_delayed: bool = True) -> tuple[dict, dict | None, invoicing.ChargePlan | None]:
    """The subscription is cancelled at ``at``: charges waiting for the term end are billed (closed
    at once), jobs end. Saves and records subscription_cancelled."""
    plan = None
    inv = None
    if bill_delayed and st.charges and sub["status"] != "future":
        c = compose_delayed_only(w, sub, st, at)
        sub, st = c.sub, c.st
        if c.invoice is not None:
            inv = c.invoice
            plan = _issue(w, inv, may_pend=False)
    st.charges = []
    R.transition(sub, "cancelled")
    sub["cancelled_at"] = at
    if reason:
        sub["cancel_reason"] = reason
    st.cancel_scheduled = False
    st.scheduled = None
    sub["has_scheduled_changes"] = False
    _save(w, sub, st)
    _cancel_jobs(w, sub["id"])
    _emit(w, "subscription_cancelled", sub, inv)
    return sub, inv, plan


def compose_activation(w: Work, sub: dict, st: State, at: int, customer: dict | None = None) -> Composed:
    """A trial ends or a future subscription starts (without trial) at ``at``, on copies: the
    changes scheduled for then apply, and the first term starts with its invoice."""
    customer = customer or _customer(w, sub["customer_id"])
    c = Composed(copy.deepcopy(sub), copy.deepcopy(st), customer, _plan_any(w, sub["plan_id"]))
    if _apply_scheduled(w, c.sub, c.st):
        c.events.append("subscription_changed")
    c.plan = _plan_any(w, c.sub["plan_id"])
    c.sub["status"] = "active"
    _start_first_term(w, c, at)
    return c


def _activate(w: Work, sub: dict, st: State, at: int, event: str) -> invoicing.ChargePlan | None:
    """A trial ends (event subscription_activated) or a future subscription starts without a
    trial (subscription_started): the first term and its invoice (never pending)."""
    c = compose_activation(w, sub, st, at)
    inv = c.invoice
    assert inv is not None
    if event == "subscription_activated" and inv["amount_due"] > 0 \
            and w.site.setting("trial_end_without_card") == "cancel" \
            and invoicing.effective_auto_collection(w, inv, c.customer) == "on" \
            and invoicing.usable_card(w, c.customer) is None:
        # nothing to charge the first invoice to: the trial ends in a cancellation (Chargebee's no_card)
        _cancel(w, sub, st, at, reason="no_card", bill_delayed=False)
        return None
    target = c.sub["status"]
    c.sub["status"] = sub["status"]
    R.transition(c.sub, target)
    _save(w, c.sub, c.st)
    charge = _issue(w, inv, may_pend=False)
    _reschedule(w, c.sub, c.st)
    for e in c.events:
        _emit(w, e, c.sub)
    _emit(w, event, c.sub, inv)
    return charge


def _renew(w: Work, sub: dict, st: State, at: int) -> invoicing.ChargePlan | None:
    c = compose_renewal(w, sub, st, at)
    _save(w, c.sub, c.st)
    assert c.invoice is not None
    charge = _issue(w, c.invoice, may_pend=True)
    _reschedule(w, c.sub, c.st)
    for event in c.events:
        _emit(w, event, c.sub)
    _emit(w, "subscription_renewed", c.sub, c.invoice)
    return charge


def on_term_end(w: Work, job: jobs.Job) -> None:
    found = _load(w, job.ref_id, for_update=True)
    if found is None:
        return
    sub, st = found
    if sub["status"] not in ("in_trial", "active", "non_renewing") or sub.get("current_term_end") != job.due_at:
        return  # stale: the subscription moved on since this was scheduled
    at = job.due_at
    if sub["status"] == "in_trial":
        if st.cancel_scheduled:
            _, _, charge = _cancel(w, sub, st, at)
        else:
            charge = _activate(w, sub, st, at, "subscription_activated")
    elif sub["status"] == "non_renewing":
        _, _, charge = _cancel(w, sub, st, at)
    else:
        charge = _renew(w, sub, st, at)
    _charge_in_job(w, charge)


def on_start(w: Work, job: jobs.Job) -> None:
    found = _load(w, job.ref_id, for_update=True)
    if found is None:
        return
    sub, st = found
    if sub["status"] != "future" or sub.get("start_date") != job.due_at:
        return
    at = job.due_at
    sub["started_at"] = at
    if sub.get("trial_end") and sub["trial_end"] > at:
        R.transition(sub, "in_trial")
        sub.update({"trial_start": at, "current_term_start": at, "current_term_end": sub["trial_end"]})
        _save(w, sub, st)
        _reschedule(w, sub, st)
        _emit(w, "subscription_started", sub)
        return
    _charge_in_job(w, _activate(w, sub, st, at, "subscription_started"))


def on_reminder(w: Work, job: jobs.Job) -> None:
    found = _load(w, job.ref_id)
    if found is None:
        return
    sub, st = found
    if sub.get("current_term_end") != (job.payload or {}).get("at"):
        return
    if sub["status"] == "active":
        _emit(w, "subscription_renewal_reminder", sub)
    elif sub["status"] == "non_renewing":
        _emit(w, "subscription_cancelling", sub)


def on_trial_ending(w: Work, job: jobs.Job) -> None:
    found = _load(w, job.ref_id)
    if found is None:
        return
    sub, _ = found
    if sub["status"] == "in_trial" and sub.get("current_term_end") == (job.payload or {}).get("at"):
        _emit(w, "subscription_trial_ending", sub)


def cancel_for_non_payment(w: Work, subscription_id: str, reason: str) -> None:
    """Dunning gave up on one of the subscription's invoices and the site cancels such
    subscriptions: cancelled now, cancel_reason ``reason``. No new invoice is made for charges
    waiting for the term end (they are dropped)."""
    found = _load(w, subscription_id, for_update=True)
    if found is None:
        return
    sub, st = found
    if sub["status"] == "cancelled":
        return
    _cancel(w, sub, st, w.now, reason=reason, bill_delayed=False)


# ==== update ============================================================================================

def _merge_addons(current: list[dict], given: list[dict], replace: bool) -> list[dict]:
    if replace:
        return list(given)
    out = [dict(a) for a in current]
    by_id = {a["id"]: a for a in out}
    for row in given:
        if row["id"] in by_id:
            by_id[row["id"]].update(row)
        else:
            out.append(dict(row))
    return out


def _policies(w: Work, addons: list[dict]) -> dict[tuple[str, str | None], str]:
    """Each addon's proration for a mid-term change: the request's proration_type, else the
    addon's own (site_default = partial_term)."""
    out: dict[tuple[str, str | None], str] = {}
    for row in addons:
        kind = row.get("proration_type")
        if kind is None:
            addon = _addon_any(w, row["id"]) or {}
            kind = addon.get("proration_type", "site_default")
        out[("addon", row["id"])] = "partial_term" if kind == "site_default" else kind
    return out


def _check_period(plan: dict, addons: list[dict], w: Work) -> None:
    for i, row in enumerate(addons):
        addon = _addon_any(w, row["id"])
        if addon and addon.get("charge_type", "recurring") == "recurring" and _period(addon) != _period(plan):
            raise InvalidRequest(f"plan_id : the subscription's addon {addon['id']} is billed every "
                                 f"{addon.get('period', 1)} {addon.get('period_unit')}(s), the plan {plan['id']} every "
                                 f"{plan.get('period', 1)} {plan.get('period_unit')}(s)", param="plan_id")


def compose_update(w: Work, sub: dict, st: State, params: dict, *, use: bool = True) -> Composed:
    """update_a_subscription on copies: the subscription after the change and the invoice the
    change bills now (prorated), if any. Reads only."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    if sub["status"] == "cancelled":
        raise InvalidState(f"Subscription {sub['id']} is cancelled; reactivate it before changing it")
    now = w.now
    customer = _customer(w, sub["customer_id"])
    current = _plan_any(w, sub["plan_id"])
    plan = current
    if params.get("plan_id") is not None and params["plan_id"] != sub["plan_id"]:
        plan = _plan(w, params["plan_id"], "plan_id", use=use)
    plan_changed = plan["id"] != current["id"]
    quantity = params.get("plan_quantity", sub["plan_quantity"])
    recurring, once = _check_addons(w, plan, params.get("addons") or [], use=use)
    addons = _merge_addons(_addon_rows(sub), recurring, bool(params.get("replace_addon_list")))
    existing, added = _split_given([*_items(w, plan, quantity, addons), *once], params)
    _check_total([*existing, *_delayed_items(w, st)], added)
    if plan_changed:
        _check_period(plan, addons, w)
    cycles_given = "billing_cycles" in params
    cycles = params["billing_cycles"] if cycles_given else (plan.get("billing_cycles") if plan_changed else None)
    coupons = list(sub.get("coupons") or [])
    coupon = None
    if params.get("coupon"):
        c, code = _resolve_coupon(w, params["coupon"], "coupon")
        if not CR.applicable(c, [("plan", plan["id"]), *(("addon", a["id"]) for a in addons)]):
            raise InvalidRequest(f"coupon : The coupon {c['id']} is not applicable to this plan or its addons",
                                 param="coupon")
        if all(e["coupon_id"] != c["id"] for e in coupons):
            coupons.append(CR.attach(c, now, code))
            coupon = (c, code)

    for k in ("po_number", "invoice_notes", "meta_data"):
        if params.get(k) is not None:
            sub[k] = params[k]
    out = Composed(sub, st, customer, plan, coupon=coupon)
    status = sub["status"]
    if status not in ("future", "in_trial") and ("trial_end" in params or "start_date" in params):
        name = "trial_end" if "trial_end" in params else "start_date"
        raise ParamError(f"{name} : can be changed only for future and in_trial subscriptions", param=name)
    if status != "future" and "start_date" in params:
        raise ParamError("start_date : applicable only for future subscriptions", param="start_date")

    if params.get("end_of_term"):
        if status == "future":
            raise InvalidRequest("end_of_term : a future subscription has no term yet; change it directly",
                                 param="end_of_term")
        st.scheduled = {"plan_id": plan["id"], "plan_quantity": quantity, "addons": addons, "coupons": coupons}
        if cycles_given or plan_changed:
            st.scheduled["remaining_billing_cycles"] = cycles
        sub["has_scheduled_changes"] = True
        st.charges += [{"addon_id": i.entity_id, "quantity": i.quantity} for i in once]
        return out

    st.scheduled = None  # an immediate change replaces what was scheduled
    sub["has_scheduled_changes"] = False
    old_items = _items(w, current, sub["plan_quantity"], _addon_rows(sub))
    sub["plan_id"], sub["plan_quantity"], sub["addons"], sub["coupons"] = plan["id"], quantity, addons, coupons
    if cycles_given or plan_changed:
        sub["remaining_billing_cycles"] = cycles

    if status in ("future", "in_trial"):
        _change_unbilled(sub, st, params, plan, plan_changed, now)
        st.charges += [{"addon_id": i.entity_id, "quantity": i.quantity} for i in once]
        return out

    new_items = _items(w, plan, quantity, addons)
    term_start, term_end = int(sub["current_term_start"]), int(sub["current_term_end"])
    if _period(plan) != _period(current):
        new_end = P.term_end(now, 1, *_period(plan))
        proration = R.reset_term_change(old_items, new_items, now, term_start, term_end, new_end)
        st.anchor = now
        sub["current_term_start"], sub["current_term_end"] = now, new_end
        remaining, last = R.start_term(sub.get("remaining_billing_cycles"))
        if remaining is not None:
            sub["remaining_billing_cycles"] = remaining
    else:
        prorate = params.get("prorate", w.site.setting("prorate_subscription_changes"))
        proration = (R.prorate_change(old_items, new_items, now, term_start, term_end, _policies(w, addons))
                     if prorate else R.Proration([], 0))
    charges = list(proration.charges) + R.one_time_charges(once, now)
    if charges:
        charges += R.one_time_charges(_delayed_items(w, st), now)  # collected along with the change
        st.charges = []
        out.invoice, out.credit_left = _invoice(w, sub, customer, charges, at=now, first=False,
                                                pending=bool(w.site.setting("metered_billing")), plan=plan,
                                                credit=proration.credit)
    else:
        out.credit_left = proration.credit
    sub["status"] = R.status_for_cycles(sub["status"], sub.get("remaining_billing_cycles"), st.cancel_scheduled)
    return out


def _change_unbilled(sub: dict, st: State, params: dict, plan: dict, plan_changed: bool, now: int) -> None:
    """A future or in_trial subscription changes without billing (nothing was billed yet)."""
    if plan_changed:
        st.setup_pending = bool(plan.get("setup_cost"))
    if sub["status"] == "future":
        if "start_date" in params:
            if params["start_date"] <= now:
                raise ParamError("start_date : must be in the future", param="start_date")
            sub["start_date"] = params["start_date"]
        if "trial_end" in params:
            if params["trial_end"] == 0:
                sub.pop("trial_end", None)
            else:
                sub["trial_end"] = params["trial_end"]
        if sub.get("trial_end") is not None and sub["trial_end"] <= sub["start_date"]:
            raise ParamError("trial_end : must be later than start_date", param="trial_end")
    elif "trial_end" in params:  # in_trial
        if params["trial_end"] <= now:
            raise ParamError("trial_end : must be in the future", param="trial_end")
        sub["trial_end"] = sub["current_term_end"] = params["trial_end"]


async def update(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """POST /subscriptions/{id} — plan, quantity, addons, coupon, cycles; now (prorated) or at term end."""
    pay = await prepare_payment(ctx, params)
    return await _finish(ctx, await ctx.write(_update_unit, subscription_id, params, pay))


def _update_unit(w: Work, subscription_id: str, params: dict, pay: PaymentIn) -> Outcome:
    sub, st = _require(w, subscription_id, for_update=True)
    old_trial_end = sub.get("trial_end") if sub["status"] == "in_trial" else None
    old_shipping = sub.get("shipping_address")
    c = compose_update(w, sub, st, params)
    if c.coupon is not None:
        _redeem(w, c.coupon[0], c.coupon[1], "coupon")
    if params.get("shipping_address"):
        c.sub["shipping_address"] = {**(old_shipping or {}), **params["shipping_address"], "object": "shipping_address"}
    customer = _customer(w, sub["customer_id"], for_update=True)
    customer_changed = False
    if params.get("billing_address"):
        customer["billing_address"] = {**params["billing_address"], "object": "billing_address"}
        customer_changed = True
    if (params.get("customer") or {}).get("vat_number") is not None:
        customer["vat_number"] = params["customer"]["vat_number"]
        customer_changed = True
    card_events = _apply_payment(w, customer, pay)
    if card_events:
        customer_changed = True
    if c.credit_left > 0:
        credits.move(w, customer, "refundable", c.credit_left, "proration", reference_type="subscription",
                     reference_id=sub["id"], description="Prorated credits for the unused period")
        customer_changed = True
    if customer_changed:
        cards.save_customer(w, customer)
    _save(w, c.sub, c.st)
    charge = None
    if c.invoice is not None:
        charge = _issue(w, c.invoice, may_pend=True)
    _reschedule(w, c.sub, c.st)
    for event, card in card_events:
        w.emit(event, cards.content(customer, card))
    if customer_changed:
        w.emit("customer_changed", cards.content(customer, cards.get_card(w, customer["id"])))
    if c.sub.get("shipping_address") != old_shipping:
        _emit(w, "subscription_shipping_address_updated", c.sub)
    if old_trial_end is not None and c.sub.get("trial_end", 0) > old_trial_end:
        _emit(w, "subscription_trial_extended", c.sub)
    body = _emit(w, "subscription_changed", c.sub, c.invoice)
    return Outcome(body, [charge] if charge else [])


# ==== cancel, reactivate, scheduled cancellation ==============================================================

async def cancel(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """POST /subscriptions/{id}/cancel — now, or at the end of the term (or trial)."""
    def run(w: Work) -> Outcome:
        sub, st = _require(w, subscription_id, for_update=True)
        R.require_status(sub, LIVE, "cancel it")
        if not params.get("end_of_term"):
            sub, inv, charge = _cancel(w, sub, st, w.now)
            return Outcome(_content(w, sub, inv), [charge] if charge else [])
        if sub["status"] == "future":
            raise InvalidState(f"Subscription {sub['id']} has not started; cancel it without end_of_term")
        if st.cancel_scheduled or sub["status"] == "non_renewing":
            raise InvalidState(f"Subscription {sub['id']} is already scheduled to cancel at the end of its term")
        st.cancel_scheduled = True
        if sub["status"] == "active":
            R.transition(sub, "non_renewing")
        _save(w, sub, st)
        _reschedule(w, sub, st)
        return Outcome(_emit(w, "subscription_cancellation_scheduled", sub))
    return await _finish(ctx, await ctx.write(run))


async def remove_scheduled_cancellation(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        sub, st = _require(w, subscription_id, for_update=True)
        if not (sub["status"] == "non_renewing" or (sub["status"] == "in_trial" and st.cancel_scheduled)):
            raise InvalidState(f"Subscription {sub['id']} has no scheduled cancellation")
        plan = _plan_any(w, sub["plan_id"])
        cycles = params.get("billing_cycles", plan.get("billing_cycles"))
        if cycles is None:
            sub.pop("remaining_billing_cycles", None)
        else:
            sub["remaining_billing_cycles"] = cycles
        st.cancel_scheduled = False
        if sub["status"] == "non_renewing":
            if cycles == 0:
                raise ParamError("billing_cycles : must be at least 1 to remove the scheduled cancellation",
                                 param="billing_cycles")
            R.transition(sub, "active")
        _save(w, sub, st)
        _reschedule(w, sub, st)
        return _emit(w, "subscription_scheduled_cancellation_removed", sub)
    return await ctx.write(run)


def compose_reactivation(w: Work, sub: dict, st: State, params: dict) -> Composed:
    """reactivate_a_subscription on copies: a cancelled subscription starts again now (active,
    with a new term and its invoice) or in a trial until trial_end."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    customer = _customer(w, sub["customer_id"])
    plan = _plan_any(w, sub["plan_id"])
    c = Composed(sub, st, customer, plan)
    now = w.now
    if sub["status"] == "non_renewing":  # deprecated: acts as remove_scheduled_cancellation, cycles forever
        for name in ("trial_end", "billing_cycles"):
            if name in params:
                raise ParamError(f"{name} : not applicable when reactivating a non_renewing subscription", param=name)
        sub.pop("remaining_billing_cycles", None)
        st.cancel_scheduled = False
        R.transition(sub, "active")
        return c
    R.require_status(sub, ("cancelled",), "reactivate it (only cancelled subscriptions can be reactivated)")
    if plan.get("status", "active") != "active":
        raise InvalidState(f"The subscription's plan {plan['id']} is {plan.get('status')}; change the plan first")
    cycles = params.get("billing_cycles", plan.get("billing_cycles"))
    if cycles is None:
        sub.pop("remaining_billing_cycles", None)
    else:
        sub["remaining_billing_cycles"] = cycles
    for k in ("cancelled_at", "cancel_reason"):
        sub.pop(k, None)
    _drop_spent_coupons(w, sub, now)
    trial_end = params.get("trial_end")
    if trial_end is not None:
        if trial_end <= now:
            raise ParamError("trial_end : must be in the future", param="trial_end")
        R.transition(sub, "in_trial")
        sub.update({"trial_start": now, "trial_end": trial_end, "current_term_start": now,
                    "current_term_end": trial_end})
        return c
    R.transition(sub, "active")
    _start_first_term(w, c, now)
    return c


async def reactivate(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    pay = await prepare_payment(ctx, params)

    def run(w: Work) -> Outcome:
        sub, st = _require(w, subscription_id, for_update=True)
        if pay.intent_id is not None:  # the authorized card pays the reactivation's invoice
            customer = _customer(w, sub["customer_id"], for_update=True)
            for event, card in _apply_payment(w, customer, pay):
                cards.save_customer(w, customer)
                w.emit(event, cards.content(customer, card))
        c = compose_reactivation(w, sub, st, params)
        _save(w, c.sub, c.st)
        charge = None
        if c.invoice is not None:
            charge = _issue(w, c.invoice, may_pend=False)
            _require_payment_method(w, c.invoice, charge)
        _reschedule(w, c.sub, c.st)
        return Outcome(_emit(w, "subscription_reactivated", c.sub, c.invoice), [charge] if charge else [])
    return await _finish(ctx, await ctx.write(run))


# ==== delete, term end, scheduled changes ====================================================================

async def delete(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """Deletes the subscription with its invoices and transactions (Chargebee v1), and its jobs."""
    def run(w: Work) -> dict:
        sub, _ = _require(w, subscription_id, for_update=True)
        body = _content(w, sub)
        I, X, L = S.invoices, S.transactions, S.invoice_transactions
        inv_ids = [r[0] for r in w.tx.all(select(I.c.id).where(I.c.site_id == w.site_id,
                                                               I.c.subscription_id == sub["id"]))]
        txn_ids = [r[0] for r in w.tx.all(select(X.c.id).where(X.c.site_id == w.site_id,
                                                               X.c.subscription_id == sub["id"]))]
        if inv_ids or txn_ids:
            w.tx.execute(sql_delete(L).where(L.c.site_id == w.site_id, or_(L.c.invoice_id.in_(inv_ids),
                                                                       L.c.txn_id.in_(txn_ids))))
        for inv_id in inv_ids:
            jobs.cancel(w, f"{dunning.JOB}:{inv_id}")
        transactions.announce_deleted(w, X.c.subscription_id == sub["id"])
        w.tx.execute(sql_delete(I).where(I.c.site_id == w.site_id, I.c.subscription_id == sub["id"]))
        w.tx.execute(sql_delete(X).where(X.c.site_id == w.site_id, X.c.subscription_id == sub["id"]))
        SUBSCRIPTIONS.delete(w.tx, w.site_id, sub["id"])
        _cancel_jobs(w, sub["id"])
        w.emit("subscription_deleted", copy.deepcopy(body))
        return body
    return await ctx.write(run)


async def change_term_end(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """Moves the current term's end (trial end, next billing, or cancellation date); no proration.
    Later terms are counted from the new date."""
    def run(w: Work) -> dict:
        sub, st = _require(w, subscription_id, for_update=True)
        R.require_status(sub, ("in_trial", "active", "non_renewing"), "change its term end")
        new_end = params["term_ends_at"]
        if new_end <= w.now:
            raise ParamError("term_ends_at : must be in the future", param="term_ends_at")
        if new_end <= int(sub["current_term_start"]):
            raise ParamError("term_ends_at : must be after the current term's start", param="term_ends_at")
        old_end = int(sub["current_term_end"])
        sub["current_term_end"] = new_end
        if sub["status"] == "in_trial":
            sub["trial_end"] = new_end
        else:
            st.anchor = new_end
        _save(w, sub, st)
        _reschedule(w, sub, st)
        event = "subscription_trial_extended" if sub["status"] == "in_trial" and new_end > old_end \
            else "subscription_changed"
        return _emit(w, event, sub)
    return await ctx.write(run)


async def remove_scheduled_changes(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        sub, st = _require(w, subscription_id, for_update=True)
        if not st.scheduled:
            raise InvalidState(f"Subscription {sub['id']} has no scheduled changes")
        st.scheduled = None
        sub["has_scheduled_changes"] = False
        _save(w, sub, st)
        return _emit(w, "subscription_changed", sub)
    return await ctx.write(run)


def _scheduled_change(sub: dict, st: State) -> dict | None:
    """The v1 SubscriptionScheduledChange: the action scheduled for the term end, if any."""
    if st.cancel_scheduled or sub["status"] == "non_renewing":
        data = {"cancel_at": sub.get("current_term_end")}
        return {"action_type": "cancel", "data": dumps(data), "created_at": sub.get("created_at"),
                "modified_at": sub.get("current_term_end")}
    return None


async def scheduled_changes(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """GET /subscriptions/{id}/scheduled_changes — the scheduled action (v1: cancel)."""
    def run(w: Work) -> dict:
        sub, st = _require(w, subscription_id)
        change = _scheduled_change(sub, st)
        if change is None:
            raise not_found("subscription_scheduled_change", subscription_id)
        return {"subscription_scheduled_change": change}
    return await ctx.read(run)


async def update_scheduled_changes(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """POST /subscriptions/{id}/update_scheduled_changes — action_type cancel schedules the
    cancellation at the term end; reactivate removes it; pause is not part of v1 billing."""
    action = params.get("action_type")

    def run(w: Work) -> dict:
        sub, st = _require(w, subscription_id, for_update=True)
        if action is None:
            raise ParamError("action_type : cannot be blank", param="action_type")
        if action == "pause":
            raise InvalidRequest("action_type : pausing subscriptions is not supported", param="action_type")
        R.require_status(sub, ("in_trial", "active", "non_renewing"), "schedule an action")
        if action == "cancel":
            if not st.cancel_scheduled:
                st.cancel_scheduled = True
                if sub["status"] == "active":
                    R.transition(sub, "non_renewing")
                _save(w, sub, st)
                _reschedule(w, sub, st)
                _emit(w, "subscription_cancellation_scheduled", sub)
        else:  # reactivate: the subscription goes on after the term end
            if not st.cancel_scheduled and sub["status"] != "non_renewing":
                raise InvalidState(f"Subscription {sub['id']} has no scheduled cancellation")
            st.cancel_scheduled = False
            if sub["status"] == "non_renewing":
                sub.pop("remaining_billing_cycles", None)
                R.transition(sub, "active")
            _save(w, sub, st)
            _reschedule(w, sub, st)
            _emit(w, "subscription_scheduled_cancellation_removed", sub)
            return {"subscription_scheduled_change": {"action_type": "reactivate", "data": dumps({}),
                                                      "created_at": w.now, "modified_at": w.now}}
        change = _scheduled_change(sub, st)
        assert change is not None
        change["modified_at"] = w.now
        return {"subscription_scheduled_change": change}
    return await ctx.write(run)


# ==== charges at term end ==================================================================================

def _renewal_items(w: Work, sub: dict, st: State) -> list[R.Item]:
    """What the next renewal charges before discounts: the plan and addons (after scheduled
    changes) and the charges waiting for the term end."""
    nxt = _with_scheduled(w, sub, st)
    return [*_items(w, _plan_any(w, nxt["plan_id"]), nxt["plan_quantity"], _addon_rows(nxt)), *_delayed_items(w, st)]


def _delayed_charge_target(w: Work, subscription_id: str) -> tuple[dict, State]:
    sub, st = _require(w, subscription_id, for_update=True)
    R.require_status(sub, ("in_trial", "active", "non_renewing"), "add charges for the end of its term")
    return sub, st


async def add_charge_at_term_end(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """A one-time charge billed with the invoice at the end of the current term."""
    def run(w: Work) -> dict:
        sub, st = _delayed_charge_target(w, subscription_id)
        if params.get("amount") is None:
            raise ParamError("amount : cannot be blank", param="amount")
        _check_total(_renewal_items(w, sub, st), [(R.adhoc_item(params["amount"], params["description"]), "amount")])
        st.charges.append({"amount": params["amount"], "description": params["description"]})
        _save(w, sub, st)
        from billhive.services import estimates

        return {"estimate": estimates.renewal_estimate_of(w, sub, st, include_delayed=True)}
    return await ctx.write(run)


async def charge_addon_at_term_end(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    """A non-recurring addon billed with the invoice at the end of the current term."""
    def run(w: Work) -> dict:
        sub, st = _delayed_charge_target(w, subscription_id)
        addon = _addon(w, params["addon_id"], "addon_id")
        if addon.get("charge_type", "recurring") != "non_recurring":
            raise InvalidRequest(f"addon_id : {addon['id']} is a recurring addon; only non-recurring addons can be "
                                 "charged", param="addon_id")
        qty = params.get("addon_quantity")
        if addon.get("type") == "quantity":
            if qty is None:
                raise ParamError("addon_quantity : cannot be blank for quantity type addons", param="addon_quantity")
        elif qty not in (None, 1):
            raise ParamError("addon_quantity : applicable only for quantity type addons", param="addon_quantity")
        _check_total(_renewal_items(w, sub, st), [(R.addon_item(addon, qty or 1), "addon_quantity")])
        st.charges.append({"addon_id": addon["id"], "quantity": qty or 1})
        _save(w, sub, st)
        from billhive.services import estimates

        return {"estimate": estimates.renewal_estimate_of(w, sub, st, include_delayed=True)}
    return await ctx.write(run)
