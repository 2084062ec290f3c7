"""What a subscription operation bills: the subscription after it and the invoice it makes now,
composed on copies and in memory (built by ``services/invoicing``), never saved here.

The operations (operations.py) and scheduled jobs (jobs.py) commit what these functions compose;
estimates (services/estimates.py) show it and commit nothing — so an estimate cannot drift from
the operation it estimates.

- ``compose_create``       create_a_subscription / create_subscription_for_customer
- ``compose_update``       update_a_subscription (prorated now, or scheduled for the term end)
- ``compose_renewal``      a term end that renews (scheduled changes apply first)
- ``compose_activation``   a trial ends or a future subscription starts
- ``compose_reactivation`` reactivate_a_subscription
- ``compose_delayed_only`` a term end that only bills the charges waiting for it
- ``compose_next``         whichever of these the subscription's next billing is
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from billhive.domain import coupons as CR
from billhive.domain import estimates as E
from billhive.domain import money
from billhive.domain import periods as P
from billhive.domain import subscriptions as R
from billhive.errors import InvalidRequest, InvalidState, ParamError
from billhive.services import credits, invoicing
from billhive.services.subscriptions import catalog
from billhive.services.subscriptions.state import State, take_scheduled, with_scheduled
from billhive.util.ids import random_id
from billhive.work.context import Work


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


# ==== create ==========================================================================================

def compose_create(w: Work, params: dict, customer: dict, *, use: bool = True) -> Composed:
    """The subscription create_a_subscription / create_subscription_for_customer would make for
    ``customer`` now, with its first invoice when one is due now. Reads only (``use`` marks the
    plan and addons in use, as the real operation does)."""
    now = w.now
    sub_id = params.get("id") or random_id()
    R.check_id(sub_id, "id")
    plan = catalog.usable_plan(w, params["plan_id"], "plan_id", use=use)
    quantity = params.get("plan_quantity", 1)
    recurring, once = _check_addons(w, plan, params.get("addons") or [], use=use)
    setup = R.setup_charge(plan, now)
    check_total(*_split_given([*_items(w, plan, quantity, recurring), *once, *([setup.item] if setup else [])],
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
        sub["shipping_address"] = dict(params["shipping_address"])
    sub.update({"created_at": now, "has_scheduled_changes": False, "object": "subscription",
                "customer_id": customer["id"]})
    if recurring:
        sub["addons"] = recurring
    st = State(setup_pending=bool(plan.get("setup_cost")))

    coupon = None
    if params.get("coupon"):
        c, code = catalog.redeemable_coupon(w, params["coupon"], "coupon")
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


# ==== update ============================================================================================

def compose_update(w: Work, sub: dict, st: State, params: dict, *, use: bool = True) -> Composed:
    """update_a_subscription on copies: the subscription after the change and the invoice the
    change bills now (prorated), if any. Reads only."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    if sub["status"] == "cancelled":
        raise InvalidState(f"Subscription {sub['id']} is cancelled; reactivate it before changing it")
    now = w.now
    customer = catalog.get_customer(w, sub["customer_id"])
    current = catalog.current_plan(w, sub["plan_id"])
    plan = current
    if params.get("plan_id") is not None and params["plan_id"] != sub["plan_id"]:
        plan = catalog.usable_plan(w, params["plan_id"], "plan_id", use=use)
    plan_changed = plan["id"] != current["id"]
    quantity = params.get("plan_quantity", sub["plan_quantity"])
    recurring, once = _check_addons(w, plan, params.get("addons") or [], use=use)
    addons = _merge_addons(_addon_rows(sub), recurring, bool(params.get("replace_addon_list")))
    existing, added = _split_given([*_items(w, plan, quantity, addons), *once], params)
    check_total([*existing, *_delayed_items(w, st)], added)
    if plan_changed:
        _check_period(w, plan, addons)
    cycles_given = "billing_cycles" in params
    cycles = params["billing_cycles"] if cycles_given else (plan.get("billing_cycles") if plan_changed else None)
    coupons = list(sub.get("coupons") or [])
    coupon = None
    if params.get("coupon"):
        c, code = catalog.redeemable_coupon(w, params["coupon"], "coupon")
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
        remaining, _ = R.start_term(sub.get("remaining_billing_cycles"))
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


# ==== term ends, activation, reactivation ==================================================================

def compose_renewal(w: Work, sub: dict, st: State, at: int, *, include_delayed: bool = True) -> Composed:
    """The subscription renewed at ``at`` (its term end) and the renewal invoice, on copies.
    Changes scheduled for the term end apply first; a new billing period restarts the anchor."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    customer = catalog.get_customer(w, sub["customer_id"])
    before = catalog.current_plan(w, sub["plan_id"])
    changed = _apply_scheduled(sub, st)
    plan = catalog.current_plan(w, sub["plan_id"])
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


def compose_activation(w: Work, sub: dict, st: State, at: int, customer: dict | None = None) -> Composed:
    """A trial ends or a future subscription starts (without trial) at ``at``, on copies: the
    changes scheduled for then apply, and the first term starts with its invoice."""
    customer = customer or catalog.get_customer(w, sub["customer_id"])
    c = Composed(copy.deepcopy(sub), copy.deepcopy(st), customer, catalog.current_plan(w, sub["plan_id"]))
    if _apply_scheduled(c.sub, c.st):
        c.events.append("subscription_changed")
    c.plan = catalog.current_plan(w, c.sub["plan_id"])
    c.sub["status"] = "active"
    _start_first_term(w, c, at)
    return c


def compose_reactivation(w: Work, sub: dict, st: State, params: dict) -> Composed:
    """reactivate_a_subscription on copies: a cancelled subscription starts again now (active,
    with a new term and its invoice) or in a trial until trial_end."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    customer = catalog.get_customer(w, sub["customer_id"])
    plan = catalog.current_plan(w, sub["plan_id"])
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


def compose_delayed_only(w: Work, sub: dict, st: State, at: int) -> Composed:
    """A non-renewing subscription's term end: only the charges waiting for it are billed."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    customer = catalog.get_customer(w, sub["customer_id"])
    plan = catalog.current_plan(w, sub["plan_id"])
    items = _delayed_items(w, st)
    c = Composed(sub, st, customer, plan)
    if items:
        c.invoice, _ = _invoice(w, sub, customer, R.one_time_charges(items, at), at=at, first=False, pending=False,
                                plan=plan)
    st.charges = []
    return c


def compose_next(w: Work, sub: dict, st: State, *, include_delayed: bool,
                 customer: dict | None = None) -> tuple[dict | None, dict]:
    """(invoice, subscription after it) of the subscription's next billing, on copies."""
    status = sub["status"]
    if status == "cancelled":
        raise InvalidState(f"Subscription {sub['id']} is cancelled; it has no renewal to estimate")
    if status == "in_trial" and st.cancel_scheduled:  # cancelled at the trial end: only what waited
        c = compose_delayed_only(w, sub, st, int(sub["current_term_end"]))
        return c.invoice, c.sub
    if status in ("future", "in_trial"):  # the first invoice always carries what waited for it
        at = sub["current_term_end"] if status == "in_trial" else (sub.get("trial_end") or sub["start_date"])
        c = compose_activation(w, sub, st, int(at), customer)
        return c.invoice, c.sub
    at = int(sub["current_term_end"])
    if status == "non_renewing":
        if not include_delayed:
            return None, sub
        c = compose_delayed_only(w, sub, st, at)
        return c.invoice, c.sub
    c = compose_renewal(w, sub, st, at, include_delayed=include_delayed)
    return c.invoice, c.sub


# ==== estimates of what is composed ==========================================================================

def renewal_estimate(w: Work, sub: dict, st: State, *, include_delayed: bool = True,
                     use_balances: bool = False) -> dict:
    """The Estimate of the subscription's next billing (renewal_estimate, add_charge_at_term_end)."""
    inv, after = compose_next(w, sub, st, include_delayed=include_delayed)
    customer = catalog.get_customer(w, sub["customer_id"]) if use_balances else None
    return estimate_of(w, inv, after, collect_now=False, customer=customer, use_balances=use_balances)


def estimate_of(w: Work, inv: dict | None, sub: dict | None, *, collect_now: bool, customer: dict | None = None,
                use_balances: bool = False) -> dict:
    """The v1 Estimate of an invoice built in memory (or an empty one); ``use_balances`` applies
    the customer's credits."""
    balances = None
    if use_balances and customer is not None:
        balances = {kind: credits.balance(customer, kind) for kind in ("promotional", "refundable", "excess")}
    return E.estimate(inv, sub, w.now, collect_now=collect_now, balances=balances)


# ==== the charges of a term ==================================================================================

def check_total(existing: list[R.Item], added: list[tuple[R.Item, str]]) -> None:
    """A term's charges - the ``existing`` items and those this request ``added``, each with the
    parameter it comes from - stay within money.MAX_AMOUNT, so no invoice of the subscription
    (renewals included) goes beyond it. The error names the parameter of the added item that takes
    the sum over (existing items count first). A request that adds nothing is not held to it."""
    if not added:
        return
    parts = [*((i.amount, None) for i in existing), *((i.amount, param) for i, param in added)]
    money.total_of(parts, "the charges of a term")


def renewal_items(w: Work, sub: dict, st: State) -> list[R.Item]:
    """What the next renewal charges before discounts: the plan and addons (after scheduled
    changes) and the charges waiting for the term end."""
    nxt = with_scheduled(sub, st)
    return [*_items(w, catalog.current_plan(w, nxt["plan_id"]), nxt["plan_quantity"], _addon_rows(nxt)),
            *_delayed_items(w, st)]


def _start_first_term(w: Work, c: Composed, at: int, extra: list[R.Item] | None = None) -> None:
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
    charges += R.one_time_charges([*(extra or []), *_delayed_items(w, st)], at)
    st.charges = []
    c.invoice, _ = _invoice(w, sub, c.customer, charges, at=at, first=True, pending=False, plan=plan)
    c.first = True


def _apply_scheduled(sub: dict, st: State) -> bool:
    """Scheduled changes take effect (at a term end). Returns whether there were any."""
    if not st.scheduled:
        return False
    take_scheduled(sub, st.scheduled)
    st.scheduled = None
    sub["has_scheduled_changes"] = False
    return True


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


# ---- items -------------------------------------------------------------------------------------------

def _addon_rows(sub: dict) -> list[dict]:
    return list(sub.get("addons") or [])


def _items(w: Work, plan: dict, plan_quantity: int, addons: list[dict]) -> list[R.Item]:
    out = [R.plan_item(plan, plan_quantity)]
    for row in addons:
        addon = catalog.find_addon(w, row["id"])
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
        addon = catalog.usable_addon(w, row["id"], pid, use=use)
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
            addon = catalog.find_addon(w, c["addon_id"])
            if addon is not None:
                out.append(R.addon_item(addon, int(c.get("quantity", 1))))
        else:
            out.append(R.adhoc_item(int(c["amount"]), c["description"]))
    return out


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
            addon = catalog.find_addon(w, row["id"]) or {}
            kind = addon.get("proration_type", "site_default")
        out[("addon", row["id"])] = "partial_term" if kind == "site_default" else kind
    return out


def _check_period(w: Work, plan: dict, addons: list[dict]) -> None:
    for row in addons:
        addon = catalog.find_addon(w, row["id"])
        if addon and addon.get("charge_type", "recurring") == "recurring" and _period(addon) != _period(plan):
            raise InvalidRequest(f"plan_id : the subscription's addon {addon['id']} is billed every "
                                 f"{addon.get('period', 1)} {addon.get('period_unit')}(s), the plan {plan['id']} every "
                                 f"{plan.get('period', 1)} {plan.get('period_unit')}(s)", param="plan_id")


def _period(plan: dict) -> tuple[int, str]:
    return int(plan.get("period", 1)), plan.get("period_unit", "month")


# ---- coupons and the invoice ----------------------------------------------------------------------------

def _coupons_in_effect(w: Work, sub: dict, at: int) -> list[tuple[dict, dict]]:
    out = []
    for entry in sub.get("coupons") or []:
        coupon = catalog.find_coupon(w, entry["coupon_id"])
        if coupon is not None and CR.in_effect(entry, coupon, at):
            out.append((entry, coupon))
    return out


def _drop_spent_coupons(w: Work, sub: dict, at: int) -> None:
    """Coupons whose duration is over leave the subscription (at a term start)."""
    keep = []
    for entry in sub.get("coupons") or []:
        coupon = catalog.find_coupon(w, entry["coupon_id"])
        if coupon is not None and CR.in_effect(entry, coupon, at):
            keep.append(entry)
    sub["coupons"] = keep


def _notes(sub: dict, plan: dict | None, customer: dict, coupons: list[dict]) -> list[dict]:
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
    notes = _notes(sub, plan, customer, [c for _, c in in_effect if c["id"] in used])
    if notes:
        inv["notes"] = notes
    if sub.get("po_number"):
        inv["po_number"] = sub["po_number"]
    return inv, credit - adjust
