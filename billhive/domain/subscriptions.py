"""Subscription rules: the status machine, recurring items, term charges, proration and billing
cycles. Pure: works on plan/addon/subscription documents (API shape) and integers.

Status machine (Chargebee v1):

    future ──start──> in_trial | active | non_renewing
    in_trial ──trial end──> active | non_renewing          (or cancelled: cancellation scheduled)
    active ──cancel end_of_term / last billing cycle──> non_renewing
    non_renewing ──remove_scheduled_cancellation / more billing cycles──> active
    any but cancelled ──cancel──> cancelled ──reactivate──> active | in_trial | non_renewing

Money: every line is ``unit_amount x billable quantity``; proration is ``amount x remaining /
term length`` rounded once per line (``money.prorate``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from billhive.domain.document import Doc
from billhive.domain.money import prorate
from billhive.errors import InvalidRequest, InvalidState, ParamError

STATUSES = ("future", "in_trial", "active", "non_renewing", "cancelled")
LIVE = ("future", "in_trial", "active", "non_renewing")

TRANSITIONS: dict[str, frozenset[str]] = {
    "future": frozenset({"in_trial", "active", "non_renewing", "cancelled"}),
    "in_trial": frozenset({"active", "non_renewing", "cancelled"}),
    "active": frozenset({"non_renewing", "cancelled"}),
    "non_renewing": frozenset({"active", "cancelled"}),
    "cancelled": frozenset({"active", "in_trial", "non_renewing"}),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def transition(sub: Doc, target: str) -> None:
    """Move the subscription to ``target``; an illegal move is 409 invalid_state_for_request."""
    current = sub["status"]
    if not can_transition(current, target):
        raise InvalidState(f"Subscription {sub['id']} is {current}; it cannot become {target}")
    sub["status"] = target


_ID = re.compile(r"^[^\s/\\?#%]+$")


def check_id(value: str, param: str) -> None:
    """A subscription's (or its new customer's) id travels in URL paths."""
    if not _ID.match(value):
        raise ParamError(f"{param} : may not contain whitespace, '/', '\\', '?', '#' or '%'", param=param)


def require_status(sub: Doc, allowed: tuple[str, ...], action: str) -> None:
    """Operation precondition: 409 unless the subscription is in one of ``allowed``."""
    if sub["status"] not in allowed:
        raise InvalidState(f"Subscription {sub['id']} is {sub['status']}; cannot {action}")


# ---- the lifecycle operations that bill nothing (each returns the changed copies) ------------------

def schedule_cancellation(sub: Doc, st: State, *, explicit: bool = True) -> tuple[Doc, State]:
    """cancel_a_subscription with end_of_term (``explicit``), or update_scheduled_changes
    action_type=cancel (no error when already scheduled): cancelled at the end of the term."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    if explicit:
        if sub["status"] == "future":
            raise InvalidState(f"Subscription {sub['id']} has not started; cancel it without end_of_term")
        if st.cancel_scheduled or sub["status"] == "non_renewing":
            raise InvalidState(f"Subscription {sub['id']} is already scheduled to cancel at the end of its term")
    st.cancel_scheduled = True
    if sub["status"] == "active":
        transition(sub, "non_renewing")
    return sub, st


def remove_cancellation(sub: Doc, st: State, cycles: int | None) -> tuple[Doc, State]:
    """remove_scheduled_cancellation: the subscription goes on after its term end, for ``cycles``
    more billing cycles (None: forever)."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    if not (sub["status"] == "non_renewing" or (sub["status"] == "in_trial" and st.cancel_scheduled)):
        raise InvalidState(f"Subscription {sub['id']} has no scheduled cancellation")
    if cycles is None:
        sub.pop("remaining_billing_cycles", None)
    else:
        sub["remaining_billing_cycles"] = cycles
    st.cancel_scheduled = False
    if sub["status"] == "non_renewing":
        if cycles == 0:
            raise ParamError("billing_cycles : must be at least 1 to remove the scheduled cancellation",
                             param="billing_cycles")
        transition(sub, "active")
    return sub, st


def keep_after_term(sub: Doc, st: State) -> tuple[Doc, State]:
    """update_scheduled_changes action_type=reactivate: the scheduled cancellation is removed
    (a non_renewing subscription renews forever)."""
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    if not st.cancel_scheduled and sub["status"] != "non_renewing":
        raise InvalidState(f"Subscription {sub['id']} has no scheduled cancellation")
    st.cancel_scheduled = False
    if sub["status"] == "non_renewing":
        sub.pop("remaining_billing_cycles", None)
        transition(sub, "active")
    return sub, st


def check_scheduled_action(sub: Doc, action: str | None) -> str:
    """update_scheduled_changes' action_type: cancel or reactivate (pause is not part of v1 billing)."""
    if action is None:
        raise ParamError("action_type : cannot be blank", param="action_type")
    if action == "pause":
        raise InvalidRequest("action_type : pausing subscriptions is not supported", param="action_type")
    require_status(sub, ("in_trial", "active", "non_renewing"), "schedule an action")
    return action


def move_term_end(sub: Doc, st: State, new_end: int, now: int) -> tuple[Doc, State, str]:
    """change_term_end: the current term ends at ``new_end`` (trial end, next billing or
    cancellation date), no proration; later terms count from it. Returns the event to record."""
    require_status(sub, ("in_trial", "active", "non_renewing"), "change its term end")
    if new_end <= now:
        raise ParamError("term_ends_at : must be in the future", param="term_ends_at")
    if new_end <= int(sub["current_term_start"]):
        raise ParamError("term_ends_at : must be after the current term's start", param="term_ends_at")
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    old_end = int(sub["current_term_end"])
    sub["current_term_end"] = new_end
    if sub["status"] == "in_trial":
        sub["trial_end"] = new_end
    else:
        st.anchor = new_end
    extended = sub["status"] == "in_trial" and new_end > old_end
    return sub, st, "subscription_trial_extended" if extended else "subscription_changed"


def drop_scheduled_changes(sub: Doc, st: State) -> tuple[Doc, State]:
    """remove_scheduled_changes."""
    if not st.scheduled:
        raise InvalidState(f"Subscription {sub['id']} has no scheduled changes")
    sub, st = copy.deepcopy(sub), copy.deepcopy(st)
    st.scheduled = None
    sub["has_scheduled_changes"] = False
    return sub, st


def addon_for_term_end(addon: Doc, quantity: int | None) -> tuple[Item, Doc]:
    """charge_addon_at_term_end: (the item, the waiting charge) of a non-recurring addon."""
    if addon.get("charge_type", "recurring") != "non_recurring":
        raise InvalidRequest(f"addon_id : {addon['id']} is a recurring addon; only non-recurring addons can be "
                             "charged", param="addon_id")
    if addon.get("type") == "quantity":
        if quantity is None:
            raise ParamError("addon_quantity : cannot be blank for quantity type addons", param="addon_quantity")
    elif quantity not in (None, 1):
        raise ParamError("addon_quantity : applicable only for quantity type addons", param="addon_quantity")
    return addon_item(addon, quantity or 1), {"addon_id": addon["id"], "quantity": quantity or 1}


def adhoc_for_term_end(amount: int | None, description: str) -> tuple[Item, Doc]:
    """add_charge_at_term_end: (the item, the waiting charge) of an ad-hoc charge."""
    if amount is None:
        raise ParamError("amount : cannot be blank", param="amount")
    return adhoc_item(amount, description), {"amount": amount, "description": description}


# ---- what billhive keeps beside the document -----------------------------------------------------

@dataclass
class State:
    """What billhive keeps about a subscription beyond its API fields (stored as JSON beside the
    document: services/subscriptions/state.py)."""

    anchor: int | None = None  # term boundaries are anchor + k periods
    cancel_scheduled: bool = False  # cancel at the end of the current term (or trial)
    scheduled: Doc | None = None  # changes for the term end: plan_id, plan_quantity, addons, coupons, cycles
    charges: list[Doc] = field(default_factory=list)  # for the term end: {amount, description} | {addon_id, quantity}
    setup_pending: bool = False  # the plan's setup cost is billed with the first invoice

    def to_dict(self) -> Doc:
        return {"anchor": self.anchor, "cancel_scheduled": self.cancel_scheduled, "scheduled": self.scheduled,
                "charges": self.charges, "setup_pending": self.setup_pending}

    @classmethod
    def from_dict(cls, d: Doc) -> State:
        return cls(d.get("anchor"), bool(d.get("cancel_scheduled")), d.get("scheduled"), list(d.get("charges") or []),
                   bool(d.get("setup_pending")))


# ---- recurring items -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One priced item of an invoice-to-be: a plan, an addon, or an ad-hoc charge."""

    entity_type: str  # plan | addon | adhoc
    entity_id: str | None
    unit_amount: int
    quantity: int
    description: str
    billable: int | None = None  # quantity charged for (plan free_quantity deducted); default quantity

    @property
    def amount(self) -> int:
        return self.unit_amount * (self.quantity if self.billable is None else self.billable)

    @property
    def key(self) -> tuple[str, str | None]:
        return self.entity_type, self.entity_id


def _name(doc: Doc) -> str:
    name: str = doc.get("invoice_name") or doc.get("name") or doc["id"]
    return name


def plan_item(plan: Doc, quantity: int) -> Item:
    """The plan's line: price x quantity; per_unit plans do not charge their free_quantity."""
    billable = quantity
    if plan.get("charge_model") == "per_unit":
        billable = max(0, quantity - int(plan.get("free_quantity", 0) or 0))
    return Item("plan", plan["id"], int(plan.get("price", 0) or 0), quantity, _name(plan), billable)


def addon_item(addon: Doc, quantity: int) -> Item:
    return Item("addon", addon["id"], int(addon.get("price", 0) or 0), quantity, _name(addon))


def adhoc_item(amount: int, description: str) -> Item:
    return Item("adhoc", None, amount, 1, description)


@dataclass(frozen=True)
class Charge:
    """A line item's numbers (services turn it into an invoice line)."""

    item: Item
    date_from: int
    date_to: int
    amount: int
    type: str  # charge | prorated_charge | setup_charge

    def line_fields(self) -> Doc:
        return {"date_from": self.date_from, "date_to": self.date_to, "unit_amount": self.item.unit_amount,
                "quantity": self.item.quantity, "amount": self.amount, "description": self.item.description,
                "type": self.type, "entity_type": self.item.entity_type, "entity_id": self.item.entity_id}

    def line(self) -> Doc:
        """The invoice line item (untaxed; no entity_id for ad-hoc charges)."""
        li = {"date_from": self.date_from, "date_to": self.date_to, "unit_amount": self.item.unit_amount,
              "quantity": self.item.quantity, "amount": self.amount, "is_taxed": False, "tax": 0,
              "description": self.item.description, "type": self.type, "entity_type": self.item.entity_type}
        if self.item.entity_id is not None:
            li["entity_id"] = self.item.entity_id
        return li


def term_charges(items: list[Item], date_from: int, date_to: int) -> list[Charge]:
    """Full-term lines for a term (signup, renewal, reactivation)."""
    return [Charge(i, date_from, date_to, i.amount, "charge") for i in items]


def one_time_charges(items: list[Item], at: int) -> list[Charge]:
    """Lines charged once, on the day (non-recurring addons, ad-hoc charges)."""
    return [Charge(i, at, at, i.amount, "charge") for i in items]


def setup_charge(plan: Doc, at: int) -> Charge | None:
    """The plan's setup cost, billed with the subscription's first invoice."""
    cost = int(plan.get("setup_cost", 0) or 0)
    if cost <= 0:
        return None
    item = Item("plan", plan["id"], cost, 1, f"{_name(plan)} - Setup Fee")
    return Charge(item, at, at, cost, "setup_charge")


def unused(amount: int, now: int, term_start: int, term_end: int) -> int:
    """The part of a term's amount for the time left in the term (rounded once)."""
    length = term_end - term_start
    left = min(max(term_end - now, 0), length)
    if length <= 0 or left == 0:
        return 0
    return prorate(amount, left, length)


@dataclass(frozen=True)
class Proration:
    """What an immediate mid-term change bills: charges for what is new (for the rest of the
    term), and a credit for the unused part of what it replaces."""

    charges: list[Charge]
    credit: int
    credited: list[tuple[Item, int]] = field(default_factory=list)  # (item, its unused amount), the credit's parts

    @property
    def charge_total(self) -> int:
        return sum(c.amount for c in self.charges)


PRORATION_TYPES = ("partial_term", "full_term", "none")


def prorate_change(old: list[Item], new: list[Item], now: int, term_start: int, term_end: int,
                   policies: dict[tuple[str, str | None], str] | None = None) -> Proration:
    """Items unchanged between old and new bill nothing; a changed or removed item is credited
    for the unused time; a changed or added item is charged for the rest of the term
    (``partial_term``, the default), for the whole term (``full_term``) or not at all (``none``),
    as ``policies`` says per item key (addons' proration_type)."""
    old_by = {i.key: i for i in old}
    new_by = {i.key: i for i in new}
    charges = []
    credited = []
    for key, item in old_by.items():
        if new_by.get(key) != item:
            credited.append((item, unused(item.amount, now, term_start, term_end)))
    for key, item in new_by.items():
        if old_by.get(key) != item:
            policy = (policies or {}).get(key, "partial_term")
            if policy == "none":
                continue
            if policy == "full_term":
                charges.append(Charge(item, now, term_end, item.amount, "charge"))
            else:
                charges.append(Charge(item, now, term_end, unused(item.amount, now, term_start, term_end),
                                      "prorated_charge"))
    return Proration(charges, sum(a for _, a in credited), credited)


def reset_term_change(old: list[Item], new: list[Item], now: int, term_start: int, old_end: int,
                      new_end: int) -> Proration:
    """A change to a plan with another billing period restarts the term now: the whole new term
    is charged, the unused part of the old one credited."""
    credited = [(i, unused(i.amount, now, term_start, old_end)) for i in old]
    return Proration(term_charges(new, now, new_end), sum(a for _, a in credited), credited)


# ---- billing cycles ---------------------------------------------------------------------------------

def start_term(remaining: int | None) -> tuple[int | None, bool]:
    """A term starts: (remaining billing cycles after it, whether this is the last term).

    Chargebee decrements the remaining cycles at each term start; at 0 the subscription is
    non_renewing and is cancelled at the end of that term."""
    if remaining is None:
        return None, False
    left = max(0, remaining - 1)
    return left, left == 0


def status_for_cycles(status: str, remaining: int | None, cancel_scheduled: bool) -> str:
    """active <-> non_renewing as the remaining billing cycles say (unless a cancellation was
    explicitly scheduled, which keeps non_renewing)."""
    if status == "active" and remaining == 0:
        return "non_renewing"
    if status == "non_renewing" and not cancel_scheduled and (remaining is None or remaining > 0):
        return "active"
    return status
