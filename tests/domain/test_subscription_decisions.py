"""Subscription billing decisions (billhive.domain.subscription_billing): create, change,
proration, renewal, activation, reactivation and the term-end bill, as values. Pure: no
database, no HTTP - milliseconds. The HTTP tests (tests/http/test_subscription*.py) hold the
same rules end to end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import subscription_billing as B
from billhive.domain import subscriptions as R
from billhive.domain.money import MAX_AMOUNT, AmountTooLarge, prorate
from billhive.domain.subscriptions import State
from billhive.errors import InvalidRequest, InvalidState, ParamError

DAY = 86400
T0, T1, T2 = 1_767_225_600, 1_769_904_000, 1_772_323_200  # 2026-01-01, 2026-02-01, 2026-03-01 (UTC)
BASIC = {"id": "basic", "name": "Basic", "price": 1000, "period": 1, "period_unit": "month", "status": "active"}
PRO = {"id": "pro", "name": "Pro", "price": 3000, "period": 1, "period_unit": "month", "status": "active"}
YEARLY = {"id": "yearly", "name": "Yearly", "price": 10000, "period": 1, "period_unit": "year", "status": "active"}
SEAT = {"id": "seat", "name": "Seat", "price": 200, "type": "quantity", "charge_type": "recurring", "period": 1,
        "period_unit": "month", "status": "active"}
SETUP_KIT = {"id": "kit", "name": "Kit", "price": 500, "type": "on_off", "charge_type": "non_recurring",
             "status": "active"}
CUSTOMER = {"id": "cust", "object": "customer", "auto_collection": "on"}
CATALOG = B.Catalog({p["id"]: p for p in (BASIC, PRO, YEARLY)}, {a["id"]: a for a in (SEAT, SETUP_KIT)})
SETTINGS = B.Settings()


def create(params: dict, *, plan: dict = BASIC, given: list | None = None, coupon=None, catalog=CATALOG,
           now: int = T0) -> B.Decision:
    return B.create({"plan_id": plan["id"], **params}, "sub", CUSTOMER, plan, given or [], coupon, catalog, now)


def active(plan: dict = BASIC, quantity: int = 1, addons: list | None = None, **extra) -> tuple[dict, State]:
    sub = {"id": "sub", "plan_id": plan["id"], "plan_quantity": quantity, "status": "active", "customer_id": "cust",
           "current_term_start": T0, "current_term_end": T1, "addons": addons or [], **extra}
    return sub, State(anchor=T0)


def change(sub: dict, state: State, params: dict, *, plan: dict | None = None, given: list | None = None,
           coupon=None, settings: B.Settings = SETTINGS, now: int = T0 + 10 * DAY) -> B.Decision:
    plan = plan or CATALOG.plan(params.get("plan_id", sub["plan_id"]))
    return B.change(sub, state, params, CUSTOMER, plan, given or [], coupon, CATALOG, settings, now)


def amounts(bill: B.Bill) -> list[tuple[str, int]]:
    return [(li["type"], li["amount"]) for li in bill.lines]


# ---- create ----------------------------------------------------------------------------------------------

def test_create_bills_the_first_term_at_once():
    d = create({"plan_quantity": 3})
    assert d.sub["status"] == "active" and d.sub["current_term_end"] == T1
    assert d.bill is not None and d.bill.first and not d.bill.pending
    assert amounts(d.bill) == [("charge", 3000)]
    assert d.st.anchor == T0


def test_create_bills_the_setup_cost_and_one_time_addons_with_the_first_invoice():
    d = create({}, plan={**BASIC, "setup_cost": 700}, given=[({"id": "kit"}, SETUP_KIT)])
    assert amounts(d.bill) == [("charge", 1000), ("setup_charge", 700), ("charge", 500)]
    assert not d.st.setup_pending and d.st.charges == []


def test_a_trial_bills_nothing_and_keeps_one_time_addons_for_its_end():
    d = create({"trial_end": T0 + 14 * DAY}, given=[({"id": "kit"}, SETUP_KIT)])
    assert d.sub["status"] == "in_trial" and d.bill is None
    assert d.sub["current_term_end"] == T0 + 14 * DAY
    assert d.st.charges == [{"addon_id": "kit", "quantity": 1}]


def test_a_future_start_bills_nothing():
    d = create({"start_date": T1})
    assert d.sub["status"] == "future" and d.sub["start_date"] == T1 and d.bill is None


def test_the_last_billing_cycle_makes_the_subscription_non_renewing():
    # spec, create_a_subscription billing_cycles: "The number of billing cycles the subscription runs before canceling"
    d = create({"billing_cycles": 1})
    assert d.sub["status"] == "non_renewing" and d.sub["remaining_billing_cycles"] == 0


@pytest.mark.parametrize("params, error, param", [
    ({"start_date": T0 - 40 * DAY}, ParamError, "start_date"),
    ({"trial_end": T0 - 1}, ParamError, "trial_end"),
])
def test_create_rules_name_their_parameter(params, error, param):
    with pytest.raises(error) as exc:
        create(params)
    assert exc.value.param == param


def test_a_recurring_addon_must_share_the_plans_period():
    with pytest.raises(InvalidRequest) as exc:
        create({}, plan=YEARLY, given=[({"id": "seat"}, SEAT)])
    assert exc.value.param == "addons[id][0]"


def test_a_coupon_must_apply_to_the_plan_or_its_addons():
    coupon = {"id": "pro-only", "apply_on": "each_specified_item", "plan_constraint": "specific", "plan_ids": ["pro"],
              "discount_type": "percentage", "discount_percentage": 10}
    with pytest.raises(InvalidRequest) as exc:
        create({"coupon": "pro-only"}, coupon=(coupon, None))
    assert exc.value.param == "coupon"


def test_a_coupon_discounts_the_first_invoice_and_counts_its_use():
    coupon = {"id": "half", "apply_on": "invoice_amount", "discount_type": "percentage", "discount_percentage": 50,
              "duration_type": "forever", "invoice_notes": "Half off"}
    catalog = B.Catalog(CATALOG.plans, CATALOG.addons, {"half": coupon})
    d = create({"coupon": "half"}, coupon=(coupon, None), catalog=catalog)
    assert d.bill.total == 500 and d.coupon == (coupon, None)
    assert d.sub["coupons"][0]["applied_count"] == 1
    assert {"note": "Half off", "entity_type": "coupon", "entity_id": "half"} in d.bill.notes


def test_a_term_beyond_the_maximum_amount_names_the_parameter_that_took_it_over():
    huge = {**BASIC, "price": MAX_AMOUNT}
    with pytest.raises(AmountTooLarge) as exc:
        create({"plan_quantity": 2}, plan=huge)
    assert exc.value.param == "plan_quantity"


# ---- change ------------------------------------------------------------------------------------------------

def test_an_upgrade_mid_term_charges_the_new_plan_for_the_rest_and_credits_the_old():
    # spec, update_a_subscription prorate: "Prorated credits or charges are created as applicable"
    # (chargebee.com/docs/1.0/proration.html#proration-mechanism)
    sub, state = active()
    now = T0 + 10 * DAY
    d = change(sub, state, {"plan_id": "pro"}, now=now)
    length, left = T1 - T0, T1 - now
    charge, credit = prorate(3000, left, length), prorate(1000, left, length)
    assert amounts(d.bill) == [("prorated_charge", charge)]
    assert [x["amount"] for x in d.bill.discounts if x["type"] == "credit_adjustment"] == [credit]
    assert d.credit_left == 0 and d.sub["plan_id"] == "pro"


def test_a_downgrade_leaves_the_credit_beyond_the_charge_to_the_customer():
    sub, state = active(PRO)
    d = change(sub, state, {"plan_id": "basic"})
    assert d.bill.total == 0
    left, length = T1 - (T0 + 10 * DAY), T1 - T0
    assert d.credit_left == prorate(3000, left, length) - prorate(1000, left, length)


def test_without_proration_a_change_bills_nothing_now():
    sub, state = active()
    d = change(sub, state, {"plan_id": "pro"}, settings=B.Settings(prorate_changes=False))
    assert d.bill is None and d.credit_left == 0 and d.sub["plan_id"] == "pro"
    d = change(sub, state, {"plan_id": "pro", "prorate": False})
    assert d.bill is None


def test_a_change_to_another_period_restarts_the_term_and_bills_it_in_full():
    sub, state = active()
    now = T0 + 10 * DAY
    d = change(sub, state, {"plan_id": "yearly"}, now=now)
    assert d.sub["current_term_start"] == now and d.st.anchor == now
    assert amounts(d.bill) == [("charge", 10000)]


def test_a_change_at_the_end_of_term_is_scheduled_and_bills_nothing():
    # spec, update_a_subscription end_of_term: "applied at the end of the current subscription billing cycle"
    sub, state = active()
    d = change(sub, state, {"plan_id": "pro", "end_of_term": True})
    assert d.bill is None and d.sub["plan_id"] == "basic" and d.sub["has_scheduled_changes"]
    assert d.st.scheduled["plan_id"] == "pro"
    assert sub.get("has_scheduled_changes") is None and state.scheduled is None  # the inputs are not changed


def test_a_cancelled_subscription_cannot_change():
    sub, state = active(status="cancelled")
    with pytest.raises(InvalidState):
        change(sub, state, {"plan_quantity": 2})


def test_a_trial_changes_without_billing():
    sub, state = active(status="in_trial")
    d = change(sub, state, {"plan_quantity": 4, "trial_end": T1 + DAY})
    assert d.bill is None and d.sub["plan_quantity"] == 4 and d.sub["current_term_end"] == T1 + DAY


def test_only_future_and_trial_subscriptions_move_their_trial_end():
    sub, state = active()
    with pytest.raises(ParamError) as exc:
        change(sub, state, {"trial_end": T1})
    assert exc.value.param == "trial_end"


@given(start_offset=st.integers(0, 27 * DAY), term_days=st.integers(1, 366), old=st.integers(0, 10**9),
       new=st.integers(0, 10**9), elapsed=st.floats(0, 1))
def test_proration_nets_to_the_new_price_less_the_old_for_the_time_left(start_offset, term_days, old, new, elapsed):
    start = T0 + start_offset
    end = start + term_days * DAY
    now = start + int((end - start) * elapsed)
    catalog = B.Catalog({"a": {**BASIC, "id": "a", "price": old}, "b": {**BASIC, "id": "b", "price": new}})
    sub = {"id": "sub", "plan_id": "a", "plan_quantity": 1, "status": "active", "customer_id": "cust",
           "current_term_start": start, "current_term_end": end}
    d = B.change(sub, State(anchor=start), {"plan_id": "b"}, CUSTOMER, catalog.plan("b"), [], None, catalog,
                 SETTINGS, now)
    charge, credit = prorate(new, end - now, end - start), prorate(old, end - now, end - start)
    billed = d.bill.total if d.bill is not None else 0
    assert billed - d.credit_left == charge - credit  # what is billed now, less what is credited back
    assert 0 <= d.credit_left <= credit and 0 <= billed <= charge


# ---- renewal, activation, reactivation, the term end ---------------------------------------------------------------

def test_a_renewal_bills_the_next_term_with_the_charges_that_waited():
    sub, state = active(quantity=2)
    state.charges = [{"amount": 250, "description": "Extra"}]
    d = B.renew(sub, state, CUSTOMER, CATALOG, SETTINGS, T1)
    assert d.sub["current_term_start"] == T1 and d.sub["current_term_end"] == T2
    assert amounts(d.bill) == [("charge", 2000), ("charge", 250)] and d.st.charges == []
    assert not d.bill.first and not d.bill.pending


def test_under_metered_billing_a_renewal_is_pending():
    # SEMANTICS.md: subscription renewals create the invoice as pending when metered billing is on
    sub, state = active()
    assert B.renew(sub, state, CUSTOMER, CATALOG, B.Settings(metered_billing=True), T1).bill.pending


def test_scheduled_changes_apply_at_the_renewal():
    sub, state = active()
    state.scheduled = {"plan_id": "pro", "plan_quantity": 1, "addons": []}
    d = B.renew(sub, state, CUSTOMER, CATALOG, SETTINGS, T1)
    assert d.sub["plan_id"] == "pro" and amounts(d.bill) == [("charge", 3000)]
    assert d.events == ["subscription_changed"] and d.st.scheduled is None


def test_a_trial_end_bills_the_first_term_with_the_setup_cost():
    sub, state = active({**BASIC, "setup_cost": 300}, status="in_trial")
    state.setup_pending = True
    catalog = B.Catalog({"basic": {**BASIC, "setup_cost": 300}})
    d = B.activate(sub, state, CUSTOMER, catalog, T1)
    assert d.sub["status"] == "active" and d.bill.first
    assert amounts(d.bill) == [("charge", 1000), ("setup_charge", 300)]


def test_reactivation_needs_an_active_plan():
    sub, state = active(status="cancelled")
    catalog = B.Catalog({"basic": {**BASIC, "status": "archived"}})
    with pytest.raises(InvalidState):
        B.reactivate(sub, state, {}, CUSTOMER, catalog, T1)


def test_reactivation_starts_a_new_term_and_bills_it():
    sub, state = active(status="cancelled", cancelled_at=T0 + DAY)
    d = B.reactivate(sub, state, {}, CUSTOMER, CATALOG, T1)
    assert d.sub["status"] == "active" and "cancelled_at" not in d.sub
    assert d.sub["current_term_start"] == T1 and amounts(d.bill) == [("charge", 1000)]


def test_a_cancellation_bills_only_the_charges_that_waited():
    sub, state = active(status="non_renewing")
    state.charges = [{"addon_id": "kit", "quantity": 1}]
    d = B.bill_delayed(sub, state, CUSTOMER, CATALOG, T1)
    assert amounts(d.bill) == [("charge", 500)] and d.st.charges == []
    assert B.bill_delayed(sub, State(), CUSTOMER, CATALOG, T1).bill is None


def test_a_charge_for_the_term_end_is_held_to_the_maximum_with_the_renewal():
    sub, state = active({**BASIC, "price": MAX_AMOUNT - 10})
    catalog = B.Catalog({"basic": {**BASIC, "price": MAX_AMOUNT - 10}})
    items = B.renewal_items(sub, state, catalog)
    B.check_total(items, [(R.adhoc_item(10, "ok"), "amount")])
    with pytest.raises(AmountTooLarge) as exc:
        B.check_total(items, [(R.adhoc_item(11, "too much"), "amount")])
    assert exc.value.param == "amount"


# ---- lifecycle operations that bill nothing (domain.subscriptions) ---------------------------------------------

def test_a_cancellation_at_the_term_end_makes_an_active_subscription_non_renewing():
    sub, state = active()
    after, st2 = R.schedule_cancellation(sub, state)
    assert after["status"] == "non_renewing" and st2.cancel_scheduled and sub["status"] == "active"
    with pytest.raises(InvalidState):
        R.schedule_cancellation(after, st2)  # already scheduled
    with pytest.raises(InvalidState):
        R.schedule_cancellation({**sub, "status": "future"}, state)


def test_removing_a_scheduled_cancellation_needs_a_billing_cycle_left():
    sub, state = R.schedule_cancellation(*active())
    with pytest.raises(ParamError) as exc:
        R.remove_cancellation(sub, state, 0)
    assert exc.value.param == "billing_cycles"
    after, st2 = R.remove_cancellation(sub, state, None)
    assert after["status"] == "active" and not st2.cancel_scheduled and "remaining_billing_cycles" not in after


def test_moving_the_term_end_of_a_trial_later_extends_it():
    sub, state = active(status="in_trial")
    after, _, event = R.move_term_end(sub, state, T1 + DAY, T0)
    assert after["trial_end"] == after["current_term_end"] == T1 + DAY and event == "subscription_trial_extended"
    after, st2, event = R.move_term_end(active()[0], state, T1 + DAY, T0)
    assert st2.anchor == T1 + DAY and event == "subscription_changed"
    with pytest.raises(ParamError):
        R.move_term_end(sub, state, T0, T0)


def test_only_non_recurring_addons_wait_for_the_term_end():
    with pytest.raises(InvalidRequest):
        R.addon_for_term_end(SEAT, 1)
    assert R.addon_for_term_end(SETUP_KIT, None)[1] == {"addon_id": "kit", "quantity": 1}
    with pytest.raises(ParamError):
        R.addon_for_term_end(SETUP_KIT, 2)
