"""Invoice operations: /api/v1/invoices/...

collect (close a pending invoice) is the heart of billhive: ``collect`` -> ``_close_pending``
loads what closing needs (``invoicing.load_closing``: the customer's balances, earlier payments,
card), calls the decision (``domain.closing.close``), saves it (``invoicing.save_closing``: the
number, the balances, the in_progress charge), then charges after commit
(``payments.charge_and_settle``; the settlement is ``domain.settlement.settle``). Renewals and
one-time charges close through ``invoicing.close``, the same three steps. Payments, refunds and
dunning's actions are services/payments.py's; this module calls it, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable

from billhive import gateway as gateways
from billhive.domain import catalog as catalog_rules
from billhive.domain import closing, money, refunds
from billhive.domain import coupons as coupon_rules
from billhive.domain import invoices as D
from billhive.errors import (
    ConfigurationIncompatible,
    InvalidRequest,
    InvalidState,
    ParamError,
    ParamRequired,
    PaymentMethodNotPresent,
    PaymentProcessingFailed,
    not_found,
)
from billhive.gateway import Gateway, GatewayResult
from billhive.services import addons as catalog_addons
from billhive.services import charge_first, csv_tax_rules, dues, dunning, invoicing, payments, pdf
from billhive.services import coupons as catalog_coupons
from billhive.store.lists import Filter, ListRequest, fetch_page
from billhive.store.resources import CUSTOMERS, INVOICES, SUBSCRIPTIONS, TRANSACTIONS
from billhive.util import failpoints
from billhive.util.ids import txn_id
from billhive.work.context import Ctx, Work, site_first


def _require_invoice(w: Work, invoice_id: str, *, for_update: bool = False) -> dict:
    inv = INVOICES.get(w.tx, w.site_id, invoice_id, for_update=for_update)
    if inv is None:
        raise not_found("invoice", invoice_id)
    return inv


# ---- collect / close -------------------------------------------------------------------------

@site_first
def _close_pending(w: Work, invoice_id: str, params: dict) -> tuple[dict, invoicing.ChargePlan | None]:
    found = invoicing.lock_for_close(w, invoice_id)  # with the site, its customer and card, in one statement
    if found is None:
        w.require_site()  # site_first: the write guard before anything else
    inv = found.invoice if found is not None else INVOICES.get(w.tx, w.site_id, invoice_id, for_update=True)
    if inv is None:
        t = INVOICES.t
        closed = INVOICES.find(w.tx, w.site_id, t.c.draft_id == invoice_id, limit=1)
        if closed:  # a concurrent or earlier collect closed it under its new number
            raise InvalidState(f"Invoice {invoice_id} is not pending: it was closed as {closed[0]['id']}")
        raise not_found("invoice", invoice_id)
    if inv["status"] != "pending":
        raise InvalidState(f"Invoice {invoice_id} is {inv['status']}; only pending invoices can be closed")
    if params.get("invoice_note"):
        inv.setdefault("notes", []).append({"note": params["invoice_note"]})
    if "invoice_date" in params:
        if params["invoice_date"] > w.now or params["invoice_date"] < inv["start_date"]:
            raise ParamError("invoice_date : must lie between the invoice's start date and now",
                             param="invoice_date")
        inv["end_date"] = params["invoice_date"]
    _rediscount(w, inv)
    loaded = invoicing.load_closing(w, inv, found)  # the customer's balances, earlier payments, card
    decided = closing.close(inv, balances=loaded.balances, payer=loaded.payer, now=w.now,  # the decision
                            keep_end_date=loaded.keep_end_date, taxes=loaded.taxes)
    plan = invoicing.save_closing(w, inv, decided, loaded, old_id=invoice_id, expect_status="pending",
                                  held=True)
    if "invoice_date" in params:
        inv["end_date"] = params["invoice_date"]
        INVOICES.save(w.tx, w.site_id, inv, w.now)
    return inv, plan


async def collect(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """POST /invoices/{id}/collect — close a pending invoice (number, credits, auto-collection)."""
    inv, plan = await ctx.write(_close_pending, invoice_id, params, lane=True)  # group-commit numbering (PG)
    failpoints.hit("collect.closed")
    if plan is not None:
        inv = await payments.charge_and_settle(ctx, plan)
    failpoints.hit("collect.done")
    return {"invoice": inv}


close = collect  # POST /invoices/{id}/close — the v2 name (comment, invoice_date, invoice_note)


# ---- reads -----------------------------------------------------------------------------------

async def retrieve(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        doc = INVOICES.get_raw(w.tx, w.site_id, invoice_id)  # sent as stored: no parse, no re-encode
        if doc is None:
            raise not_found("invoice", invoice_id)
        return {"invoice": doc}
    return await ctx.read(run)


def _list(ctx: Ctx, req: ListRequest, *where, sort=("created_at", True), parent=None):
    def run(w: Work) -> dict:
        return fetch_page(w.tx, INVOICES, w.site_id, req, where=where, default_sort=sort, raw=True,
                          parent=parent).response("invoice")
    return ctx.read(run)


async def list_invoices(ctx: Ctx, params: dict) -> dict:
    req: ListRequest = params["_list"]
    if "paid_on_after" in params:  # the spec: paid at/after, sorted by paid_on ascending
        req = ListRequest(req.limit, req.offset, (*req.filters, Filter("paid_on", "gte", params["paid_on_after"])),
                          req.sort or ("paid_on", False))
    return await _list(ctx, req)


async def list_for_customer(ctx: Ctx, customer_id: str, params: dict) -> dict:
    return await _list(ctx, params["_list"], INVOICES.t.c.customer_id == customer_id,
                       parent=(CUSTOMERS, customer_id))


async def list_for_subscription(ctx: Ctx, subscription_id: str, params: dict) -> dict:
    return await _list(ctx, params["_list"], INVOICES.t.c.subscription_id == subscription_id,
                       parent=(SUBSCRIPTIONS, subscription_id))


# ---- pending invoices: add charges, delete -----------------------------------------------------

def _pending(w: Work, invoice_id: str) -> dict:
    inv = _require_invoice(w, invoice_id, for_update=True)
    if inv["status"] != "pending":
        raise InvalidState(f"Invoice {invoice_id} is {inv['status']}; charges can be added only to pending invoices")
    return inv


async def add_charge(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        inv = _pending(w, invoice_id)
        inv["line_items"].append(invoicing.line_item(
            date_from=w.now, date_to=w.now, unit_amount=params["amount"], description=params["description"],
            entity_type="adhoc"))
        _rediscount(w, inv)
        D.recompute(inv, "amount", taxes=csv_tax_rules.basis(w, inv))
        INVOICES.save(w.tx, w.site_id, inv, w.now)
        w.emit("invoice_updated", {"invoice": inv})
        return {"invoice": inv}
    return await ctx.write(run)


def _rediscount(w: Work, inv: dict) -> None:
    """A pending invoice's coupons discount its lines as they are now (domain/coupons.rediscount);
    the caller recomputes the totals and taxes after."""
    inv["discounts"] = coupon_rules.rediscount(inv.get("discounts", []), catalog_coupons.on_invoice(w, inv),
                                               inv["line_items"])


async def delete(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """Pending and unpaid invoices can be deleted (not with payments); credits applied go back."""
    def run(w: Work) -> dict:
        inv = _require_invoice(w, invoice_id, for_update=True)
        if inv["status"] == "paid" or int(inv.get("amount_paid", 0)) > 0:
            raise InvalidState("An invoice with successful payments cannot be deleted")
        if int(inv.get("amount_adjusted", 0)) > 0:
            raise InvalidState("An invoice with credit adjustments cannot be deleted")
        if inv["status"] in D.CLOSED_UNPAID:
            invoicing.release_for_void(w, inv)
            dunning.stop_jobs(w, inv)
        INVOICES.delete(w.tx, w.site_id, invoice_id)
        w.emit("invoice_deleted", {"invoice": inv})
        return {"invoice": inv}
    return await ctx.write(run)


# ---- void, stop dunning -------------------------------------------------------------------------

async def void(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        inv = _require_invoice(w, invoice_id, for_update=True)
        if inv["status"] == "pending":
            raise InvalidState("A pending invoice cannot be voided; delete it instead")
        if inv["status"] not in D.CLOSED_UNPAID:
            raise InvalidState(f"Invoice {invoice_id} is {inv['status']}; only unpaid invoices can be voided")
        if int(inv.get("amount_paid", 0)) > 0:
            raise InvalidState("An invoice with successful payments cannot be voided")
        if int(inv.get("amount_adjusted", 0)) > 0:
            raise InvalidState("An invoice with credit adjustments cannot be voided")
        invoicing.release_for_void(w, inv)
        dunning.stop_jobs(w, inv)
        D.transition(inv, "voided")
        INVOICES.save(w.tx, w.site_id, inv, w.now)
        dues.refresh(w, inv)
        w.emit("invoice_updated", {"invoice": inv})
        return {"invoice": inv}
    return await ctx.write(run)


async def stop_dunning(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    def run(w: Work) -> dict:
        inv = _require_invoice(w, invoice_id, for_update=True)
        if inv["status"] != "payment_due" or inv.get("dunning_status") != "in_progress":
            raise InvalidState(f"Dunning is not in progress for invoice {invoice_id}")
        dunning.stop(w, inv)
        INVOICES.save(w.tx, w.site_id, inv, w.now)
        w.emit("invoice_updated", {"invoice": inv})
        return {"invoice": inv}
    return await ctx.write(run)


# ---- payments ------------------------------------------------------------------------------------

def _unpaid(w: Work, invoice_id: str) -> dict:
    inv = _require_invoice(w, invoice_id, for_update=True)
    if inv["status"] not in D.CLOSED_UNPAID:
        raise InvalidState(f"Invoice {invoice_id} is {inv['status']}; payments apply to payment_due or "
                           "not_paid invoices")
    return inv


async def collect_payment(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """Charge the customer's card now for a payment_due/not_paid invoice (400 if it fails)."""
    def start(w: Work) -> invoicing.ChargePlan:
        inv = _unpaid(w, invoice_id)
        t = TRANSACTIONS.t
        busy = TRANSACTIONS.find(w.tx, w.site_id, t.c.customer_id == inv["customer_id"],
                                 t.c.status.in_(payments.UNSETTLED), limit=20)
        if any(tx["linked_invoices"][0]["invoice_id"] == inv["id"] for tx in busy if tx.get("linked_invoices")):
            raise InvalidState("A payment for this invoice is already in progress")
        amount = params.get("amount", inv["amount_due"])
        if amount > inv["amount_due"]:
            raise ParamError(f"amount : cannot be more than the amount due ({inv['amount_due']})", param="amount")
        customer = CUSTOMERS.require(w.tx, w.site_id, inv["customer_id"])
        card = invoicing.usable_card(w, customer)
        if card is None:
            raise PaymentMethodNotPresent("The customer has no usable payment method (card) on file")
        due = inv["amount_due"]
        inv["amount_due"] = amount  # charge this much
        plan = invoicing.start_charge(w, inv, customer, card, "collect_payment")
        inv["amount_due"] = due
        return plan

    plan = await ctx.write(start)
    inv = await payments.collect_now(ctx, plan)
    txn = await ctx.read(lambda w: TRANSACTIONS.require(w.tx, w.site_id, plan.txn_id))
    return {"invoice": inv, "transaction": txn}


async def record_payment(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """An offline payment. More than the amount due becomes an excess payment on the customer."""
    def run(w: Work) -> dict:
        inv = _unpaid(w, invoice_id)
        return payments.record_offline(w, inv, amount=params.get("amount"), payment_method=params["payment_method"],
                                       paid_at=params["paid_at"], reference_number=params.get("reference_number"),
                                       memo=params.get("memo"))
    return await ctx.write(run)


def _refundable(w: Work, inv: dict) -> tuple[list[dict], int]:
    """The invoice's successful payments and how much of them can still be refunded."""
    return refunds.refundable(inv, [TRANSACTIONS.get(w.tx, w.site_id, i) for i in refunds.payment_ids(inv)])


def _record_refund(w: Work, inv: dict, original: dict, refund: dict) -> None:
    TRANSACTIONS.insert(w.tx, w.site_id, refund, w.now, columns={"idempotency_key": refund["id"],
                                                                  "purpose": "refund"})
    original.setdefault("linked_refunds", []).append(refunds.refund_link(refund))
    TRANSACTIONS.save(w.tx, w.site_id, original, w.now)
    invoicing.link_transaction(w, inv, refund, refund["amount"])
    INVOICES.save(w.tx, w.site_id, inv, w.now)


async def refund(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """Refund through the gateway to the invoice's card payment(s), fully or in part."""
    def start(w: Work) -> tuple[str, Gateway, str, int, str]:
        inv = _require_invoice(w, invoice_id, for_update=True)
        if inv["status"] != "paid":
            raise InvalidState(f"Invoice {invoice_id} is {inv['status']}; only paid invoices can be refunded")
        payments_, left = _refundable(w, inv)
        card_payments = [p for p in payments_ if p.get("gateway") not in (None, "not_applicable")]
        if not card_payments:
            raise InvalidRequest("This invoice was paid offline; use record_refund to record a refund")
        if left <= 0:
            raise InvalidRequest("This invoice has been refunded in full")
        amount = params.get("refund_amount", left)
        if amount > left:
            raise ParamError(f"refund_amount : cannot be more than the refundable amount ({left})",
                             param="refund_amount")
        original = refunds.original(card_payments, amount)
        if original is None:
            raise ParamError("refund_amount : must fit within one card payment", param="refund_amount")
        gateway = gateways.for_site(w.app.gateways, w.site)  # a site without a gateway refunds nothing through one
        if gateway.name != original["gateway"]:
            raise ConfigurationIncompatible(f"The payment was made through the {original['gateway']} gateway, "
                                            f"which no longer serves this site")
        r = refunds.new_refund(inv, original, amount, refund_id=txn_id(), now=w.now, status="in_progress",
                               payment_method="card", gateway=original["gateway"], date=w.now)
        _record_refund(w, inv, original, r)
        return r["id"], gateway, original.get("id_at_gateway", ""), amount, inv["currency_code"]

    refund_id, gateway, charge_ref, amount, currency = await ctx.write(start)
    out = await payments.refund_and_settle(ctx, gateway, refund_id, charge_ref, amount, currency)
    if out["transaction"]["status"] == "failure":  # recorded; reported to the caller as Chargebee does
        raise PaymentProcessingFailed(f"Refund failed: ({out['transaction'].get('error_code')}) "
                                      f"{out['transaction'].get('error_text')}")
    return out


async def record_refund(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """Record a refund made outside billhive (cash, check, chargeback...)."""
    def run(w: Work) -> dict:
        inv = _require_invoice(w, invoice_id, for_update=True)
        if inv["status"] != "paid" and int(inv.get("amount_paid", 0)) <= 0:
            raise InvalidState(f"Invoice {invoice_id} has no payments to refund")
        payments_, left = _refundable(w, inv)
        if not payments_ or left <= 0:
            raise InvalidRequest("This invoice has nothing left to refund")
        t = params.get("transaction", {})
        amount = t.get("amount", left)
        if amount < 1:
            raise ParamError("transaction[amount] : must be at least 1", param="transaction[amount]")
        if amount > left:
            raise ParamError(f"transaction[amount] : cannot be more than the refundable amount ({left})",
                             param="transaction[amount]")
        if t["date"] > w.now:
            raise ParamError("transaction[date] : cannot be in the future", param="transaction[date]")
        original = refunds.original(payments_, amount) or payments_[-1]
        r = refunds.new_refund(inv, original, amount, refund_id=txn_id(), now=w.now, status="success",
                               payment_method=t["payment_method"], gateway="not_applicable", date=t["date"],
                               reference_number=t.get("reference_number"))
        _record_refund(w, inv, original, r)
        w.emit("transaction_created", {"transaction": r})
        w.emit("payment_refunded", {"transaction": r, "invoice": inv,
                                    **invoicing.snapshot(w, inv["customer_id"], inv.get("subscription_id"))})
        return {"invoice": inv, "transaction": r}
    return await ctx.write(run)


# ==== invoice creation, non-recurring addons, PDFs ===============================================
# create (POST /invoices), charge (POST /invoices/charge), charge_addon (POST /invoices/charge_addon):
# a one-off invoice built here and closed at creation by invoicing.close(insert=True) — number,
# credits and excess payments, auto-collection. Like Chargebee, an invoice whose automatic charge
# fails is never created: the charge is made first (services/charge_first.py) and a decline answers
# 400 payment_processing_failed with nothing written; the site setting one_off_charge_failure=dunning
# creates it first and keeps it payment_due with dunning instead. (Settling a charge of purpose
# ``create`` still voids its invoice: a hosted one-time page left in flight by an earlier version.)
# Auto-collection on, an amount due and no usable card: 400 payment_method_not_present, nothing
# written (with one_off_charge_failure=dunning: payment_due).

def _catalog_addon(w: Work, addon_id: str, param: str, *, use: bool = True) -> dict:
    """A non-recurring, active addon of the catalog (404 / 400 naming ``param``), marked as used
    (``use``; estimates only look)."""
    if use:
        addon = catalog_addons.use_addon(w, addon_id, param=param)
    else:
        addon = catalog_addons.get_addon(w, addon_id, param=param)
        if addon["status"] != "active":
            raise ParamError(f"{param} : The addon {addon_id} is {addon['status']} and cannot be used", param=param)
    if addon.get("charge_type") != "non_recurring":
        raise ParamError(f"{param} : The addon {addon_id} is recurring; only non-recurring addons can be charged "
                         "this way", param=param)
    return addon


def _addon_line(w: Work, addon: dict, quantity: int | None, qparam: str) -> dict:
    """The line item for ``quantity`` units of a non-recurring addon (quantity addons need one)."""
    if addon.get("type") == "quantity":
        if quantity is None:
            raise ParamRequired(f"{qparam} : cannot be blank (the addon {addon['id']} is quantity based)",
                                param=qparam)
    elif quantity not in (None, 1):
        raise ParamError(f"{qparam} : not applicable for the on_off addon {addon['id']}", param=qparam)
    return invoicing.line_item(date_from=w.now, date_to=w.now, unit_amount=int(addon.get("price", 0)),
                               quantity=quantity or 1, description=addon.get("invoice_name") or addon["name"],
                               entity_type="addon", entity_id=addon["id"], param=qparam)


def _one_time_coupon(w: Work, value: str, lines: list[dict], *, redeem: bool = True) -> dict:
    """Redeem a one-time coupon (id or coupon code) for these lines; returns the invoice's discount.
    Without ``redeem`` (estimates) the coupon is only checked redeemable."""
    coupon, code = catalog_coupons.resolve(w, value, param="coupon")
    if coupon.get("duration_type") != "one_time":
        raise ParamError(f"coupon : The coupon {coupon['id']} is {coupon.get('duration_type')}; only one_time "
                         "coupons apply to one-off invoices", param="coupon")
    entry = coupon_rules.discount(coupon, lines)
    if entry is None and coupon.get("apply_on") == "each_specified_item":
        raise ParamError(f"coupon : The coupon {coupon['id']} applies to none of this invoice's items", param="coupon")
    if redeem:
        catalog_coupons.redeem(w, coupon["id"], code, param="coupon")
    else:
        catalog_rules.check_redeemable(coupon, w.now, param="coupon")
    return entry or {"amount": 0, "description": coupon.get("invoice_name") or coupon.get("name") or coupon["id"],
                     "type": "coupon", "entity_id": coupon["id"]}


def _owner(w: Work, params: dict) -> tuple[dict, str | None]:
    """(customer, subscription id) of a one-off invoice: customer_id or subscription_id."""
    customer_id, sub_id = params.get("customer_id"), params.get("subscription_id")
    if not customer_id and not sub_id:
        raise ParamRequired("customer_id : cannot be blank (give customer_id or subscription_id)", param="customer_id")
    if sub_id:
        sub = SUBSCRIPTIONS.get(w.tx, w.site_id, sub_id)
        if sub is None:
            raise not_found("subscription", sub_id, param="subscription_id")
        if customer_id and customer_id != sub["customer_id"]:
            raise ParamError(f"subscription_id : The subscription {sub_id} belongs to another customer",
                             param="subscription_id")
        customer_id = sub["customer_id"]
    if params.get("coupon") and not params.get("customer_id"):
        raise ParamError("coupon : a coupon applies only to an invoice created for customer_id", param="coupon")
    customer = CUSTOMERS.get(w.tx, w.site_id, customer_id)
    if customer is None:
        raise not_found("customer", customer_id, param="customer_id")
    return customer, sub_id


# builds an invoice's line items; ``use`` marks the addons in use (the real operation), else only looks
Build = Callable[[Work, bool], list[dict]]


def compose_one_off(w: Work, params: dict, build: Build, *, use: bool = True) -> tuple[dict, dict]:
    """(invoice, customer): the one-off invoice these parameters make, in memory — not numbered,
    no balances applied, not saved. ``use`` marks addons in use and redeems the coupon (the real
    operation, inside its transaction); without it (estimates) nothing is written."""
    customer, sub_id = _owner(w, params)
    lines = build(w, use)
    found = [_one_time_coupon(w, params["coupon"], lines, redeem=use)] if params.get("coupon") else []
    inv = invoicing.new_invoice(w, customer=customer, start_date=w.now, line_items=lines, recurring=False,
                                subscription_id=sub_id, discounts=found,
                                shipping_address=params.get("shipping_address"),
                                first_invoice=invoicing.is_first_for_customer(w, customer["id"]))
    if params.get("po_number"):
        inv["po_number"] = params["po_number"]
    return inv, customer


def create_one_off(w: Work, params: dict, build: Build) -> tuple[dict, invoicing.ChargePlan | None]:
    """Compose and close (number, balances, auto-collection) a one-off invoice, in the caller's
    transaction; returns the charge to make after commit, if any."""
    inv, customer = compose_one_off(w, params, build)
    void_on_failure = w.site.setting("one_off_charge_failure") == "void"
    plan = invoicing.close(w, inv, insert=True, purpose="create" if void_on_failure else "close")
    if plan is None and void_on_failure and inv["status"] == "payment_due" \
            and invoicing.effective_auto_collection(w, inv, customer) == "on":
        raise PaymentMethodNotPresent("Charge operation failed: auto collection is on and the customer has no usable "
                                      "payment method (card) on file")
    return inv, plan


def voided_by_failure(result: GatewayResult, plan: invoicing.ChargePlan) -> bool:
    """Whether settling this charge voided its one-off invoice (the operation then answers 400)."""
    return result.status == "failure" and plan.purpose == "create"


def failure_error(result: GatewayResult, invoice_id: str) -> PaymentProcessingFailed:
    return PaymentProcessingFailed(f"Payment failed: ({result.error_code}) {result.error_text}; the invoice "
                                   f"{invoice_id} was voided")


def _one_off_unit(w: Work, params: dict, build: Build) -> charge_first.Outcome:
    inv, plan = create_one_off(w, params, build)
    return charge_first.Outcome({"invoice": inv}, [plan] if plan is not None else [])


async def _one_off(ctx: Ctx, params: dict, build: Build) -> dict:
    """Charged first (charge_first.run): a declined charge creates no invoice and answers 400;
    under one_off_charge_failure=dunning (purpose ``close``) the invoice is kept payment_due."""
    out = await charge_first.run(ctx, _one_off_unit, params, build, allowed=("create",))
    inv = out.body["invoice"]
    for plan in out.charges:
        result = await payments.call_gateway(ctx.app, ctx.site_id, plan)
        failpoints.hit("charge.answered")
        inv = await ctx.write(payments.settle, plan.txn_id, result, plan.purpose)
        if voided_by_failure(result, plan):
            raise failure_error(result, inv["id"])
    return {"invoice": inv}


def charge_lines(params: dict) -> Build:
    """POST /invoices/charge's line: one ad-hoc charge (``amount``, ``description``)."""
    if "amount" not in params:
        raise ParamRequired("amount : cannot be blank", param="amount")

    def build(w: Work, use: bool) -> list[dict]:
        return [invoicing.line_item(date_from=w.now, date_to=w.now, unit_amount=params["amount"],
                                    description=params["description"], entity_type="adhoc")]
    return build


async def charge(ctx: Ctx, params: dict) -> dict:
    """POST /invoices/charge — an invoice for a one-time (ad-hoc) charge."""
    return await _one_off(ctx, params, charge_lines(params))


async def charge_addon(ctx: Ctx, params: dict) -> dict:
    """POST /invoices/charge_addon — an invoice for a non-recurring addon."""
    def build(w: Work, use: bool) -> list[dict]:
        addon = _catalog_addon(w, params["addon_id"], "addon_id", use=use)
        return [_addon_line(w, addon, params.get("addon_quantity"), "addon_quantity")]
    return await _one_off(ctx, params, build)


def create_lines(params: dict) -> Build:
    """POST /invoices's lines (non-recurring addons, then ad-hoc charges), after the checks that
    need no database."""
    addons, charges = params.get("addons", []), params.get("charges", [])
    if not addons and not charges:
        raise InvalidRequest("An invoice needs at least one addon (addons[id][0]) or charge (charges[amount][0])",
                             param="addons[id][0]")
    if params.get("payment_intent"):
        raise InvalidRequest("payment_intent : 3DS payment intents are not supported by billhive; create the "
                             "invoice without one", param="payment_intent[id]")
    seen: set[str] = set()
    for i, a in enumerate(addons):
        if "id" not in a:
            raise ParamRequired(f"addons[id][{i}] : cannot be blank", param=f"addons[id][{i}]")
        if a["id"] in seen:
            raise ParamError(f"addons[id][{i}] : the addon {a['id']} is given more than once", param=f"addons[id][{i}]")
        seen.add(a["id"])
    for i, c in enumerate(charges):
        for name in ("amount", "description"):
            if name not in c:
                raise ParamRequired(f"charges[{name}][{i}] : cannot be blank", param=f"charges[{name}][{i}]")

    def build(w: Work, use: bool) -> list[dict]:
        lines = [_addon_line(w, _catalog_addon(w, a["id"], f"addons[id][{i}]", use=use), a.get("quantity"),
                             f"addons[quantity][{i}]") for i, a in enumerate(addons)]
        lines += [invoicing.line_item(date_from=w.now, date_to=w.now, unit_amount=c["amount"],
                                      description=c["description"], entity_type="adhoc") for c in charges]
        blame = [f"addons[quantity][{i}]" for i in range(len(addons))]
        blame += [f"charges[amount][{i}]" for i in range(len(charges))]
        money.total_of(zip((li["amount"] for li in lines), blame), "the invoice sub_total")
        return lines
    return build


async def create(ctx: Ctx, params: dict) -> dict:
    """POST /invoices — a one-off invoice for non-recurring addons and ad-hoc charges."""
    return await _one_off(ctx, params, create_lines(params))


async def add_addon_charge(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """POST /invoices/{id}/add_addon_charge — a non-recurring addon on a pending invoice."""
    def run(w: Work) -> dict:
        inv = _pending(w, invoice_id)
        addon = _catalog_addon(w, params["addon_id"], "addon_id")
        inv["line_items"].append(_addon_line(w, addon, params.get("addon_quantity"), "addon_quantity"))
        _rediscount(w, inv)
        D.recompute(inv, "addon_quantity", taxes=csv_tax_rules.basis(w, inv))
        INVOICES.save(w.tx, w.site_id, inv, w.now)
        w.emit("invoice_updated", {"invoice": inv})
        return {"invoice": inv}
    return await ctx.write(run)


async def retrieve_pdf(ctx: Ctx, invoice_id: str, params: dict) -> dict:
    """POST /invoices/{id}/pdf — a signed link to the invoice's PDF, valid for 60 minutes."""
    found = await ctx.read(lambda w: (_require_invoice(w, invoice_id)["id"], w.now))
    return {"download": await pdf.download_link(ctx.app, ctx.site_id, *found)}
