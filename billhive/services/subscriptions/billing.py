"""What a subscription operation bills: load what the decision needs, decide (pure:
domain/subscription_billing.py), and build the invoice it makes now in memory (services/invoicing)
- never saved here.

The operations (operations.py) and scheduled jobs (jobs.py) commit what these functions compose;
estimates (services/estimates.py) show it and commit nothing - so an estimate cannot drift from
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

from dataclasses import dataclass, field

from billhive.domain import estimates as E
from billhive.domain import subscription_billing as B
from billhive.domain import subscriptions as R
from billhive.domain.subscriptions import State
from billhive.errors import InvalidState
from billhive.services import credits, csv_tax_rules, invoicing
from billhive.services.subscriptions import catalog
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
    credited: list[dict] = field(default_factory=list)  # what the credits credit back (Decision.credited)
    coupon: tuple[dict, str | None] | None = None  # a coupon to redeem
    events: list[str] = field(default_factory=list)


# ==== the operations' compositions ===========================================================================

def compose_create(w: Work, params: dict, customer: dict, *, use: bool = True) -> Composed:
    """The subscription create_a_subscription / create_subscription_for_customer would make for
    ``customer`` now, with its first invoice when one is due now. Reads only (``use`` marks the
    plan and addons in use, as the real operation does)."""
    sub_id = params.get("id") or random_id()
    R.check_id(sub_id, "id")
    plan = catalog.usable_plan(w, params["plan_id"], "plan_id", use=use)
    given = catalog.given_addons(w, params.get("addons") or [], use=use)
    coupon = catalog.redeemable_coupon(w, params["coupon"], "coupon") if params.get("coupon") else None
    cat = catalog.load_catalog(w, plans=(plan,), addon_ids=tuple(row["id"] for row, _ in given),
                               coupon_ids=(coupon[0]["id"],) if coupon else ())
    return _composed(w, B.create(params, sub_id, customer, plan, given, coupon, cat, w.now), customer)


def compose_update(w: Work, sub: dict, st: State, params: dict, *, use: bool = True) -> Composed:
    """update_a_subscription on copies: the subscription after the change and the invoice the
    change bills now (prorated), if any. Reads only."""
    B.check_changeable(sub)
    customer = catalog.get_customer(w, sub["customer_id"])
    plan = current = catalog.current_plan(w, sub["plan_id"])
    if params.get("plan_id") is not None and params["plan_id"] != sub["plan_id"]:
        plan = catalog.usable_plan(w, params["plan_id"], "plan_id", use=use)
    given = catalog.given_addons(w, params.get("addons") or [], use=use)
    coupon = catalog.redeemable_coupon(w, params["coupon"], "coupon") if params.get("coupon") else None
    cat = catalog.load_catalog(w, sub, st, plans=(current,), addon_ids=tuple(row["id"] for row, _ in given),
                               coupon_ids=(coupon[0]["id"],) if coupon else ())
    decision = B.change(sub, st, params, customer, plan, given, coupon, cat, catalog.settings(w), w.now)
    return _composed(w, decision, customer)


def compose_renewal(w: Work, sub: dict, st: State, at: int, *, include_delayed: bool = True) -> Composed:
    """The subscription renewed at ``at`` (its term end) and the renewal invoice, on copies.
    Changes scheduled for the term end apply first; a new billing period restarts the anchor."""
    customer = catalog.get_customer(w, sub["customer_id"])
    cat = catalog.load_catalog(w, sub, st, scheduled=True)
    decision = B.renew(sub, st, customer, cat, catalog.settings(w), at, include_delayed=include_delayed)
    return _composed(w, decision, customer)


def compose_activation(w: Work, sub: dict, st: State, at: int, customer: dict | None = None) -> Composed:
    """A trial ends or a future subscription starts (without trial) at ``at``, on copies: the
    changes scheduled for then apply, and the first term starts with its invoice."""
    customer = customer or catalog.get_customer(w, sub["customer_id"])
    cat = catalog.load_catalog(w, sub, st, scheduled=True)
    return _composed(w, B.activate(sub, st, customer, cat, at), customer)


def compose_reactivation(w: Work, sub: dict, st: State, params: dict) -> Composed:
    """reactivate_a_subscription on copies: a cancelled subscription starts again now (active,
    with a new term and its invoice) or in a trial until trial_end."""
    customer = catalog.get_customer(w, sub["customer_id"])
    cat = catalog.load_catalog(w, sub, st)
    return _composed(w, B.reactivate(sub, st, params, customer, cat, w.now), customer)


def compose_delayed_only(w: Work, sub: dict, st: State, at: int) -> Composed:
    """A non-renewing subscription's term end: only the charges waiting for it are billed."""
    customer = catalog.get_customer(w, sub["customer_id"])
    cat = catalog.load_catalog(w, sub, st)
    return _composed(w, B.bill_delayed(sub, st, customer, cat, at), customer)


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


def check_renewal_total(w: Work, sub: dict, st: State, added: list[tuple[R.Item, str]]) -> None:
    """A charge for the term end keeps the next renewal's charges within money.MAX_AMOUNT."""
    B.check_total(B.renewal_items(sub, st, catalog.load_catalog(w, sub, st, scheduled=True)), added)


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
    balances = taxes = None
    if use_balances and customer is not None:
        balances = {kind: credits.balance(customer, kind) for kind in ("promotional", "refundable", "excess")}
        if inv is not None:
            taxes = csv_tax_rules.basis(w, inv, customer)
    return E.estimate(inv, sub, w.now, collect_now=collect_now, balances=balances, taxes=taxes,
                      price_type=w.site.setting("price_type"))


# ---- helpers ------------------------------------------------------------------------------------------

def _composed(w: Work, d: B.Decision, customer: dict) -> Composed:
    """The decision with its bill as an invoice document (in memory, not numbered)."""
    out = Composed(d.sub, d.st, customer, d.plan, credit_left=d.credit_left, credited=d.credited,
                   coupon=d.coupon, events=d.events)
    if d.bill is not None:
        out.invoice = _invoice(w, d.sub, customer, d.bill)
        out.first = d.bill.first
    return out


def _invoice(w: Work, sub: dict, customer: dict, bill: B.Bill) -> dict:
    inv = invoicing.new_invoice(w, customer=customer, start_date=bill.at, line_items=bill.lines, recurring=True,
                                first_invoice=bill.first, subscription_id=sub["id"], discounts=bill.discounts,
                                pending=bill.pending, shipping_address=sub.get("shipping_address"))
    if bill.notes:
        inv["notes"] = bill.notes
    if bill.po_number:
        inv["po_number"] = bill.po_number
    return inv
