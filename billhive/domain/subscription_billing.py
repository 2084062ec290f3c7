"""Subscription billing decisions, as values: what creating, changing, renewing, activating,
reactivating or ending a subscription's term does. Pure.

Each decision takes what the service loaded - the subscription and its ``State`` (never changed:
the decision works on copies), a ``Catalog`` of the plans, addons and coupons involved, the
customer, the site's ``Settings`` and ``now`` - and returns a ``Decision``: the subscription and
state after it, the invoice to make now (a ``Bill``: its lines, discounts and notes; the service
numbers and saves it), the prorated credit left for the customer, the coupon to redeem and the
extra events. The business rules about those values raise here (billhive.errors); "no such
plan / addon / coupon" is the loader's (services/subscriptions/catalog.py).

- ``create``        create_a_subscription: future, in_trial, or active with its first invoice
- ``change``        update_a_subscription: now (prorated, or a new term for another period) or at
                    the term end (scheduled); future and in_trial subscriptions change unbilled
- ``renew``         a term end that renews: scheduled changes apply, the next term is billed
- ``activate``      a trial ends or a future subscription starts: the first term is billed
- ``reactivate``    reactivate_a_subscription
- ``bill_delayed``  a term end that only bills the charges waiting for it (cancellation)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

from billhive.domain import coupons as CR
from billhive.domain import money
from billhive.domain import periods as P
from billhive.domain import subscriptions as R
from billhive.domain.document import Doc
from billhive.domain.subscriptions import Charge, Item, State
from billhive.errors import InvalidRequest, InvalidState, ParamError


@dataclass(frozen=True)
class Catalog:
    """The plans, addons and coupons a decision may need, by id (loaded by the service)."""

    plans: Mapping[str, Doc] = field(default_factory=dict)
    addons: Mapping[str, Doc] = field(default_factory=dict)
    coupons: Mapping[str, Doc] = field(default_factory=dict)

    def plan(self, plan_id: str) -> Doc:
        return self.plans[plan_id]

    def addon(self, addon_id: str) -> Doc | None:
        return self.addons.get(addon_id)

    def coupon(self, coupon_id: str) -> Doc | None:
        return self.coupons.get(coupon_id)


@dataclass(frozen=True)
class Settings:
    """The site settings the decisions read."""

    metered_billing: bool = False  # renewals and changes bill pending invoices
    prorate_changes: bool = True  # prorate_subscription_changes (a change's ``prorate`` overrides it)


@dataclass(frozen=True)
class Bill:
    """The invoice a decision makes now, before the service numbers it."""

    at: int  # its start date
    lines: list[Doc]
    discounts: list[Doc]
    first: bool  # the subscription's first invoice (closed at once, never pending)
    pending: bool
    notes: list[Doc] = field(default_factory=list)
    po_number: str | None = None

    @property
    def total(self) -> int:
        lines: int = sum(li["amount"] for li in self.lines)
        discounts: int = sum(d["amount"] for d in self.discounts)
        return max(0, lines - discounts)


@dataclass
class Decision:
    """A subscription after an operation and what it bills now."""

    sub: Doc
    st: State
    plan: Doc
    bill: Bill | None = None
    credit_left: int = 0  # prorated credits beyond the bill: refundable credits for the customer
    # what the prorated credits credit back: line-like documents (entity_type, entity_id, amount),
    # for the tax the credit carries (domain/taxes.py credit_tax)
    credited: list[Doc] = field(default_factory=list)
    coupon: tuple[Doc, str | None] | None = None  # a coupon to redeem (and the code it was given by)
    events: list[str] = field(default_factory=list)  # recorded before the operation's own event


# ==== create ==========================================================================================

def create(params: Doc, sub_id: str, customer: Doc, plan: Doc, given: list[tuple[Doc, Doc]],
           coupon: tuple[Doc, str | None] | None, catalog: Catalog, now: int) -> Decision:
    """The subscription ``params`` create for ``customer`` now. ``given``: the request's addons
    rows with their addon documents; ``coupon``: the redeemable coupon the request names."""
    quantity = params.get("plan_quantity", 1)
    recurring, once = check_addons(plan, given)
    setup = R.setup_charge(plan, now)
    check_total(*split_given([*items(catalog, plan, quantity, recurring), *once, *([setup.item] if setup else [])],
                             {**params, "plan_id": plan["id"]}))
    period, unit = _period(plan)

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
    sub: Doc = {"id": sub_id, "plan_id": plan["id"], "plan_quantity": quantity}
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

    if coupon is not None:
        c, code = coupon
        if not CR.applicable(c, [("plan", plan["id"]), *(("addon", a["id"]) for a in recurring),
                                 *(("addon", i.entity_id) for i in once)]):
            raise InvalidRequest(f"coupon : The coupon {c['id']} is not applicable to this plan or its addons",
                                 param="coupon")
        sub["coupons"] = [CR.attach(c, now, code)]

    out = Decision(sub, st, plan, coupon=coupon)
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
    _start_first_term(out, customer, catalog, start, extra=once)
    return out


# ==== change ============================================================================================

def check_changeable(sub: Doc) -> None:
    """update_a_subscription's first rule (before anything is loaded)."""
    if sub["status"] == "cancelled":
        raise InvalidState(f"Subscription {sub['id']} is cancelled; reactivate it before changing it")


def change(sub: Doc, st: State, params: Doc, customer: Doc, plan: Doc, given: list[tuple[Doc, Doc]],
           coupon: tuple[Doc, str | None] | None, catalog: Catalog, settings: Settings, now: int) -> Decision:
    """update_a_subscription: ``plan`` is the plan after the change (the current one unless
    plan_id names another); ``given`` and ``coupon`` as for ``create``; ``catalog`` holds the
    current plan and every addon and coupon of the subscription."""
    check_changeable(sub)
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    current = catalog.plan(sub["plan_id"])
    plan_changed = plan["id"] != current["id"]
    quantity: int = params["plan_quantity"] if "plan_quantity" in params else sub["plan_quantity"]
    recurring, once = check_addons(plan, given)
    addons = merge_addons(_addon_rows(sub), recurring, bool(params.get("replace_addon_list")))
    existing, added = split_given([*items(catalog, plan, quantity, addons), *once], params)
    check_total([*existing, *delayed_items(catalog, st)], added)
    if plan_changed:
        _check_period(catalog, plan, addons)
    cycles_given = "billing_cycles" in params
    cycles = params["billing_cycles"] if cycles_given else (plan.get("billing_cycles") if plan_changed else None)
    coupons = list(sub.get("coupons") or [])
    redeem = None
    if coupon is not None:
        c, code = coupon
        if not CR.applicable(c, [("plan", plan["id"]), *(("addon", a["id"]) for a in addons)]):
            raise InvalidRequest(f"coupon : The coupon {c['id']} is not applicable to this plan or its addons",
                                 param="coupon")
        if all(e["coupon_id"] != c["id"] for e in coupons):
            coupons.append(CR.attach(c, now, code))
            redeem = coupon

    for k in ("po_number", "invoice_notes", "meta_data"):
        if params.get(k) is not None:
            sub[k] = params[k]
    out = Decision(sub, st, plan, coupon=redeem)
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
    old_items = items(catalog, current, sub["plan_quantity"], _addon_rows(sub))
    sub["plan_id"], sub["plan_quantity"], sub["addons"], sub["coupons"] = plan["id"], quantity, addons, coupons
    if cycles_given or plan_changed:
        sub["remaining_billing_cycles"] = cycles

    if status in ("future", "in_trial"):
        _change_unbilled(sub, st, params, plan, plan_changed, now)
        st.charges += [{"addon_id": i.entity_id, "quantity": i.quantity} for i in once]
        return out

    new_items = items(catalog, plan, quantity, addons)
    term_start, term_end = int(sub["current_term_start"]), int(sub["current_term_end"])
    if _period(plan) != _period(current):
        new_end = P.term_end(now, 1, *_period(plan))
        proration = R.reset_term_change(old_items, new_items, now, term_start, term_end, new_end)
        st.anchor = now
        sub["current_term_start"], sub["current_term_end"] = now, new_end
        remaining, _ = R.start_term(sub.get("remaining_billing_cycles"))
        if remaining is not None:
            sub["remaining_billing_cycles"] = remaining
    else:
        prorate = params.get("prorate", settings.prorate_changes)
        proration = (R.prorate_change(old_items, new_items, now, term_start, term_end, policies(catalog, addons))
                     if prorate else R.Proration([], 0))
    charges = list(proration.charges) + R.one_time_charges(once, now)
    out.credited = [{"entity_type": i.entity_type, "entity_id": i.entity_id, "amount": a}
                    for i, a in proration.credited if a > 0]
    if charges:
        charges += R.one_time_charges(delayed_items(catalog, st), now)  # collected along with the change
        st.charges = []
        out.bill, out.credit_left = bill(sub, customer, plan, charges, catalog, at=now, first=False,
                                         pending=settings.metered_billing, credit=proration.credit)
    else:
        out.credit_left = proration.credit
    sub["status"] = R.status_for_cycles(sub["status"], sub.get("remaining_billing_cycles"), st.cancel_scheduled)
    return out


# ==== term ends, activation, reactivation ==================================================================

def renew(sub: Doc, st: State, customer: Doc, catalog: Catalog, settings: Settings, at: int, *,
          include_delayed: bool = True) -> Decision:
    """The subscription renewed at ``at`` (its term end) and the renewal bill. Changes scheduled
    for the term end apply first; a new billing period restarts the anchor."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    before = catalog.plan(sub["plan_id"])
    changed = apply_scheduled(sub, st)
    plan = catalog.plan(sub["plan_id"])
    period, unit = _period(plan)
    if st.anchor is None or _period(before) != (period, unit):
        st.anchor = at
    drop_spent_coupons(catalog, sub, at)
    sub["current_term_start"] = at
    sub["current_term_end"] = P.term_end_after(st.anchor, period, unit, at)
    remaining, last = R.start_term(sub.get("remaining_billing_cycles"))
    if remaining is not None:
        sub["remaining_billing_cycles"] = remaining
    if last:
        sub["status"] = "non_renewing"
    charges = R.term_charges(items(catalog, plan, sub["plan_quantity"], _addon_rows(sub)), at,
                             sub["current_term_end"])
    if include_delayed:
        charges += R.one_time_charges(delayed_items(catalog, st), at)
        st.charges = []
    b, _ = bill(sub, customer, plan, charges, catalog, at=at, first=False, pending=settings.metered_billing)
    out = Decision(sub, st, plan, bill=b)
    if changed:
        out.events.append("subscription_changed")
    return out


def activate(sub: Doc, st: State, customer: Doc, catalog: Catalog, at: int) -> Decision:
    """A trial ends or a future subscription starts (without trial) at ``at``: the changes
    scheduled for then apply, and the first term starts with its bill."""
    out = Decision(copy.deepcopy(sub), copy.deepcopy(st), catalog.plan(sub["plan_id"]))
    if apply_scheduled(out.sub, out.st):
        out.events.append("subscription_changed")
    out.plan = catalog.plan(out.sub["plan_id"])
    out.sub["status"] = "active"
    _start_first_term(out, customer, catalog, at)
    return out


def reactivate(sub: Doc, st: State, params: Doc, customer: Doc, catalog: Catalog, now: int) -> Decision:
    """reactivate_a_subscription: a cancelled subscription starts again now (active, with a new
    term and its bill) or in a trial until trial_end."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    plan = catalog.plan(sub["plan_id"])
    out = Decision(sub, st, plan)
    if sub["status"] == "non_renewing":  # deprecated: acts as remove_scheduled_cancellation, cycles forever
        for name in ("trial_end", "billing_cycles"):
            if name in params:
                raise ParamError(f"{name} : not applicable when reactivating a non_renewing subscription", param=name)
        sub.pop("remaining_billing_cycles", None)
        st.cancel_scheduled = False
        R.transition(sub, "active")
        return out
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
    drop_spent_coupons(catalog, sub, now)
    trial_end = params.get("trial_end")
    if trial_end is not None:
        if trial_end <= now:
            raise ParamError("trial_end : must be in the future", param="trial_end")
        R.transition(sub, "in_trial")
        sub.update({"trial_start": now, "trial_end": trial_end, "current_term_start": now,
                    "current_term_end": trial_end})
        return out
    R.transition(sub, "active")
    _start_first_term(out, customer, catalog, now)
    return out


def bill_delayed(sub: Doc, st: State, customer: Doc, catalog: Catalog, at: int) -> Decision:
    """A term end that renews nothing: only the charges waiting for it are billed (if any)."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    plan = catalog.plan(sub["plan_id"])
    waiting = delayed_items(catalog, st)
    out = Decision(sub, st, plan)
    if waiting:
        out.bill, _ = bill(sub, customer, plan, R.one_time_charges(waiting, at), catalog, at=at, first=False,
                           pending=False)
    st.charges = []
    return out


# ==== the charges of a term ==================================================================================

def check_total(existing: list[Item], added: list[tuple[Item, str]]) -> None:
    """A term's charges - the ``existing`` items and those this request ``added``, each with the
    parameter it comes from - stay within money.MAX_AMOUNT, so no invoice of the subscription
    (renewals included) goes beyond it. The error names the parameter of the added item that takes
    the sum over (existing items count first). A request that adds nothing is not held to it."""
    if not added:
        return
    parts = [*((i.amount, None) for i in existing), *((i.amount, param) for i, param in added)]
    money.total_of(parts, "the charges of a term")


def renewal_items(sub: Doc, st: State, catalog: Catalog) -> list[Item]:
    """What the next renewal charges before discounts: the plan and addons (after scheduled
    changes) and the charges waiting for the term end."""
    nxt = copy.deepcopy(sub)
    if st.scheduled:
        take_scheduled(nxt, st.scheduled)
    return [*items(catalog, catalog.plan(nxt["plan_id"]), nxt["plan_quantity"], _addon_rows(nxt)),
            *delayed_items(catalog, st)]


def items(catalog: Catalog, plan: Doc, plan_quantity: int, addons: list[Doc]) -> list[Item]:
    """The plan's and the recurring addons' items (an addon no longer in the catalog is skipped)."""
    out = [R.plan_item(plan, plan_quantity)]
    for row in addons:
        addon = catalog.addon(row["id"])
        if addon is not None:
            out.append(R.addon_item(addon, int(row.get("quantity", 1))))
    return out


def delayed_items(catalog: Catalog, st: State) -> list[Item]:
    """Charges waiting for the term end (add_charge_at_term_end, charge_addon_at_term_end)."""
    out = []
    for c in st.charges:
        if "addon_id" in c:
            addon = catalog.addon(c["addon_id"])
            if addon is not None:
                out.append(R.addon_item(addon, int(c.get("quantity", 1))))
        else:
            out.append(R.adhoc_item(int(c["amount"]), c["description"]))
    return out


def check_addons(plan: Doc, given: list[tuple[Doc, Doc]]) -> tuple[list[Doc], list[Item]]:
    """addons[id][i] / addons[quantity][i] (each row with its addon): (recurring rows for the
    subscription, one-time items)."""
    recurring: list[Doc] = []
    once: list[Item] = []
    for i, (row, addon) in enumerate(given):
        pid = f"addons[id][{i}]"
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


def split_given(items: list[Item], params: Doc) -> tuple[list[Item], list[tuple[Item, str]]]:
    """(items this request does not touch, [(item, parameter)] for those it gives): the plan by
    plan_quantity / plan_id, addons by addons[quantity][i] / addons[id][i]."""
    given = {row.get("id"): i for i, row in enumerate(params.get("addons") or ())}
    existing, added = [], []
    for item in items:
        param: str | None = None
        if item.entity_type == "plan":
            param = next((k for k in ("plan_quantity", "plan_id") if params.get(k) is not None), None)
        elif item.entity_type == "addon" and item.entity_id in given:
            i = given[item.entity_id]
            param = f"addons[quantity][{i}]" if "quantity" in params["addons"][i] else f"addons[id][{i}]"
        if param is None:
            existing.append(item)
        else:
            added.append((item, param))
    return existing, added


def merge_addons(current: list[Doc], given: list[Doc], replace: bool) -> list[Doc]:
    """The subscription's addon rows after a change: the given rows replace the list
    (replace_addon_list) or are merged into it by id."""
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


def policies(catalog: Catalog, addons: list[Doc]) -> dict[tuple[str, str | None], str]:
    """Each addon's proration for a mid-term change: the request's proration_type, else the
    addon's own (site_default = partial_term)."""
    out: dict[tuple[str, str | None], str] = {}
    for row in addons:
        kind = row.get("proration_type")
        if kind is None:
            addon = catalog.addon(row["id"]) or {}
            kind = addon.get("proration_type", "site_default")
        out[("addon", row["id"])] = "partial_term" if kind == "site_default" else kind
    return out


# ==== scheduled changes and coupons ===========================================================================

def apply_scheduled(sub: Doc, st: State) -> bool:
    """Scheduled changes take effect (at a term end). Returns whether there were any."""
    if not st.scheduled:
        return False
    take_scheduled(sub, st.scheduled)
    st.scheduled = None
    sub["has_scheduled_changes"] = False
    return True


def take_scheduled(sub: Doc, sc: Doc) -> None:
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


def drop_spent_coupons(catalog: Catalog, sub: Doc, at: int) -> None:
    """Coupons whose duration is over leave the subscription (at a term start)."""
    sub["coupons"] = [e for e, _ in _coupons_in_effect(catalog, sub, at)]


# ==== the bill ===============================================================================================

def bill(sub: Doc, customer: Doc, plan: Doc | None, charges: list[Charge], catalog: Catalog, *, at: int,
         first: bool, pending: bool, credit: int = 0) -> tuple[Bill, int]:
    """The bill for these charges: the subscription's coupons in effect at ``at`` discount it
    (their applied_count goes up on ``sub``), then up to ``credit`` of prorated credits
    (credit_adjustment). Returns (bill, credit left over)."""
    lines = [c.line() for c in charges]
    in_effect = _coupons_in_effect(catalog, sub, at)
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
    notes = _notes(sub, plan, customer, [c for _, c in in_effect if c["id"] in used])
    return Bill(at, lines, discounts, first, pending, notes, sub.get("po_number") or None), credit - adjust


# ---- helpers ---------------------------------------------------------------------------------------------

def _start_first_term(d: Decision, customer: Doc, catalog: Catalog, at: int, extra: list[Item] | None = None) -> None:
    """The subscription becomes active at ``at``: its first term and first bill (full term, the
    setup cost and charges waiting for it). ``d.sub["status"]`` is already the target status."""
    sub, st, plan = d.sub, d.st, d.plan
    st.anchor = at
    sub["activated_at"] = at
    sub["current_term_start"] = at
    sub["current_term_end"] = P.term_end(at, 1, *_period(plan))
    remaining, last = R.start_term(sub.get("remaining_billing_cycles"))
    if remaining is not None:
        sub["remaining_billing_cycles"] = remaining
    if last and sub["status"] == "active":
        sub["status"] = "non_renewing"
    charges = R.term_charges(items(catalog, plan, sub["plan_quantity"], _addon_rows(sub)), at,
                             sub["current_term_end"])
    if st.setup_pending:
        setup = R.setup_charge(plan, at)
        if setup is not None:
            charges.append(setup)
        st.setup_pending = False
    charges += R.one_time_charges([*(extra or []), *delayed_items(catalog, st)], at)
    st.charges = []
    d.bill, _ = bill(sub, customer, plan, charges, catalog, at=at, first=True, pending=False)


def _change_unbilled(sub: Doc, st: State, params: Doc, plan: Doc, plan_changed: bool, now: int) -> None:
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


def _check_period(catalog: Catalog, plan: Doc, addons: list[Doc]) -> None:
    for row in addons:
        addon = catalog.addon(row["id"])
        if addon and addon.get("charge_type", "recurring") == "recurring" and _period(addon) != _period(plan):
            raise InvalidRequest(f"plan_id : the subscription's addon {addon['id']} is billed every "
                                 f"{addon.get('period', 1)} {addon.get('period_unit')}(s), the plan {plan['id']} every "
                                 f"{plan.get('period', 1)} {plan.get('period_unit')}(s)", param="plan_id")


def _coupons_in_effect(catalog: Catalog, sub: Doc, at: int) -> list[tuple[Doc, Doc]]:
    out = []
    for entry in sub.get("coupons") or []:
        coupon = catalog.coupon(entry["coupon_id"])
        if coupon is not None and CR.in_effect(entry, coupon, at):
            out.append((entry, coupon))
    return out


def _notes(sub: Doc, plan: Doc | None, customer: Doc, coupons: list[Doc]) -> list[Doc]:
    notes = []
    for entity_type, doc in (("subscription", sub), ("plan", plan), ("customer", customer)):
        if doc and doc.get("invoice_notes"):
            notes.append({"note": doc["invoice_notes"], "entity_type": entity_type, "entity_id": doc["id"]})
    for c in coupons:
        if c.get("invoice_notes"):
            notes.append({"note": c["invoice_notes"], "entity_type": "coupon", "entity_id": c["id"]})
    return notes


def _addon_rows(sub: Doc) -> list[Doc]:
    return list(sub.get("addons") or [])


def _period(doc: Doc) -> tuple[int, str]:
    return int(doc.get("period", 1)), doc.get("period_unit", "month")
