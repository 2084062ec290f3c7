"""The browser checkout: the page's form is submitted (or cancelled) and the checkout's operation
runs - the one the API would run: create_a_subscription (or create_subscription_for_customer for
an existing ``customer[id]``), update_a_subscription, POST /invoices/charge, POST /invoices - with
the card the form gives (stored at the gateway before any transaction).

- The page succeeds exactly when the API call would have answered 200; its ``content`` is then the
  resources (subscription, customer, card, invoice). A declined card (or any refusal) is shown on
  the page, which stays ``requested``; cancelling marks it ``cancelled``.
- Subscription checkouts run like the API's operation (``charge_first.run``): an immediate charge
  is made first, and the operation and the page's success are committed in one transaction once it
  succeeded; a decline creates nothing and is shown on the page.
- A one-off invoice exists only if its charge does not fail (the API voids it and answers 400), so
  the page records the charge in flight and succeeds or reopens in the settling transaction; a
  page found with a charge in flight (a crash before the settlement) is finished as soon as the
  transaction is settled (payment recovery), when the page is opened or retrieved.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from billhive.errors import BillhiveError, ParamError, params_renamed
from billhive.gateway import GatewayResult
from billhive.services import cards, charge_first, customers, invoices, invoicing, payments
from billhive.services import subscriptions as subs
from billhive.services.hosted_pages import pages
from billhive.store.resources import INVOICES, PLANS, TRANSACTIONS
from billhive.work.context import Ctx, Origin, Work

HOSTED_PAGE = Origin(source="hosted_page")  # who opens, submits and cancels pages (http/hosted.py)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# event types this module emits through a variable (the card a one-off checkout gives the customer)
EMITS = ("card_added", "card_updated")


async def submit(ctx: Ctx, page_id: str, form: CheckoutForm, *, ip: str | None) -> Submitted:
    """The page's form was posted: store the card, run the checkout's operation. Raises Closed
    when the page can no longer be submitted, NotFound for an unknown page."""
    await _resolve(ctx, page_id)
    page, checkout = await ctx.read(lambda w: _open_for_submit(w, page_id, lock=False))
    op = Ctx(ctx.app, ctx.site_id, _origin(checkout, ip))
    try:
        if page["type"] == "checkout_new":
            _customer_params(page, checkout, form)  # the form's own checks, before the card goes anywhere
        pay = await subs.prepare_payment(op, {"card": _card_params(form, checkout.get("gateway"))})
        if page["type"] in ("checkout_new", "checkout_existing"):
            # charged first, as the API does: a declined card creates nothing, the page stays requested
            done = await charge_first.run(op, _subscription_unit, page_id, form, pay, ip)
            content = await subs.finish(op, done)
            return await op.write(_submitted, page_id, content, bool(done.charges or done.settled))
        # charged first, as POST /invoices/charge is: a declined card creates no invoice
        done = await charge_first.run(op, _one_off_unit, page_id, pay, allowed=("create",))
        if done.charges:  # one_off_charge_failure=dunning: the invoice first, its charge in flight
            plan = done.charges[0]
            result = await payments.call_gateway(op.app, op.site_id, plan)
            settled = await op.write(_settle_charge, page_id, plan, result)
            return Submitted(settled.page, error=settled.error)
        return await op.write(_submitted, page_id, done.body, done.settled, False)
    except BillhiveError as exc:
        return Submitted(page, error=exc.message, error_param=exc.param)


async def cancel(ctx: Ctx, page_id: str) -> Submitted:
    """The customer cancelled the checkout: cancelled (content empty, as Chargebee documents); the
    browser goes to cancel_url. Raises Closed when the page is no longer open."""
    def run(w: Work) -> Submitted:
        page, checkout = _open_for_submit(w, page_id)
        before = page["state"]
        page["state"] = "cancelled"
        page["content"] = {}
        pages.save(w, page, checkout, before)
        return Submitted(page, checkout.get("cancel_url"))
    await _resolve(ctx, page_id)
    return await ctx.write(run)


def settle_in_flight(w: Work, page_id: str) -> dict:
    """A page with a one-off charge in flight: finished if the charge was settled meanwhile."""
    page, checkout = pages.require(w, page_id, for_update=True)
    if checkout.get("in_flight"):
        _finish_in_flight(w, page, checkout)
    return page


@dataclass(frozen=True)
class CheckoutForm:
    """What the customer typed into the page (strings, as posted)."""

    number: str = ""
    expiry_month: str = ""
    expiry_year: str = ""
    cvv: str = ""
    first_name: str = ""
    last_name: str = ""
    email: str = ""


class FormError(ParamError):
    """A field of the page's form is not acceptable."""


class Closed(Exception):
    """The page can no longer be submitted (completed, cancelled, expired, or a charge in flight)."""


@dataclass
class Submitted:
    """What a submission did: the page afterwards and where the browser goes next, or an error."""

    page: dict
    redirect_url: str | None = None
    error: str | None = None
    error_param: str | None = None


@dataclass
class Settled:
    page: dict
    error: str | None = None  # the charge failed: the page is open again


# ---- running the checkout's operation -----------------------------------------------------------

def _complete_subscription(w: Work, page_id: str, form: CheckoutForm, pay: subs.PaymentIn,
                           ip: str | None) -> tuple[Submitted, subs.Outcome]:
    page, checkout = _open_for_submit(w, page_id)
    if page["type"] == "checkout_new":
        params = copy.deepcopy(checkout["params"])
        customer_id, existing = pages.checkout_customer(w, checkout)
        if ip:
            params["created_from_ip"] = ip[:50]
        if existing is None:
            params["customer"] = _customer_params(page, checkout, form)
            if customer_id:
                params["customer"]["id"] = customer_id
            with params_renamed(pages.NEW_NAMES):
                done = subs.create_unit(w, params, None, pay)
        else:
            with params_renamed(pages.NEW_NAMES):
                done = subs.create_unit(w, params, existing["id"], pay)
    else:
        with params_renamed(pages.EXISTING_NAMES):
            done = subs.update_unit(w, checkout["subscription_id"], copy.deepcopy(checkout["params"]), pay)
    _succeed(w, page, checkout, done.body)
    return Submitted(page, _redirect_target(w, page, checkout, done.body)), done


def _subscription_unit(w: Work, page_id: str, form: CheckoutForm, pay: subs.PaymentIn,
                       ip: str | None) -> subs.Outcome:
    """A subscription checkout's write unit (for charge_first.run): the operation and the page's success."""
    return _complete_subscription(w, page_id, form, pay, ip)[1]


def _submitted(w: Work, page_id: str, content: dict, refresh: bool, redirect: bool = True) -> Submitted:
    """The page after its checkout's operation; ``refresh``: its content gets the settled invoice
    (the operation's commit showed it before its charge settled)."""
    page, checkout = pages.require(w, page_id, for_update=refresh)
    if refresh and page["state"] == "succeeded":
        page["content"] = copy.deepcopy(content)
        pages.save(w, page, checkout, "succeeded")
    if not redirect:
        return Submitted(page)
    return Submitted(page, _redirect_target(w, page, checkout, page.get("content") or content))


def _one_off_unit(w: Work, page_id: str, pay: subs.PaymentIn) -> charge_first.Outcome:
    """A one-off checkout's write unit for charge_first.run: the customer gets the card, the invoice
    is created, and the page succeeds in the same transaction - unless its charge is kept on failure
    (one_off_charge_failure=dunning: purpose ``close``), then the charge is in flight as in
    ``complete_one_off``."""
    page, checkout = _open_for_submit(w, page_id)
    inv, plan = _one_off_invoice(w, page, checkout, pay)
    content = _one_off_content(w, inv)
    if plan is not None and plan.purpose != "create":
        checkout["in_flight"] = plan.txn_id
        pages.save(w, page, checkout, page["state"])
    else:
        _succeed(w, page, checkout, content)
    return charge_first.Outcome(content, [plan] if plan is not None else [])


def complete_one_off(w: Work, page_id: str, pay: subs.PaymentIn
                     ) -> tuple[Submitted, invoicing.ChargePlan | None]:
    """A one-off checkout's invoice created first with its charge recorded in flight (the page
    succeeds once it is settled; a failure voids the invoice and reopens the page). The checkout
    itself charges first (``_one_off_unit``); this remains what a page in flight was made by."""
    page, checkout = _open_for_submit(w, page_id)
    inv, plan = _one_off_invoice(w, page, checkout, pay)
    if plan is None:  # nothing to charge now: the API answers 200 at once
        _succeed(w, page, checkout, _one_off_content(w, inv))
        return Submitted(page), None
    checkout["in_flight"] = plan.txn_id
    pages.save(w, page, checkout, page["state"])
    return Submitted(page), plan


def _one_off_invoice(w: Work, page: dict, checkout: dict, pay: subs.PaymentIn
                     ) -> tuple[dict, invoicing.ChargePlan | None]:
    with params_renamed(pages.ONE_OFF_NAMES):
        p = pages.one_off_params(w, checkout)
        customer = customers.get_customer(w, p["customer_id"], for_update=True)
        card_events = subs.apply_payment(w, customer, pay)
        if card_events:
            cards.save_customer(w, customer)
            for event, card in card_events:
                w.emit(event, cards.content(customer, card))
        return invoices.create_one_off(w, p, pages.one_off_build(page["type"], p))


async def _resolve(ctx: Ctx, page_id: str) -> None:
    """Finish a one-off checkout whose charge was settled after all (recovery after a crash)."""
    _, checkout = await ctx.read(pages.require, page_id)
    if checkout.get("in_flight"):
        await ctx.write(settle_in_flight, page_id)


def _open_for_submit(w: Work, page_id: str, *, lock: bool = True) -> tuple[dict, dict]:
    page, checkout = pages.require(w, page_id, for_update=lock)
    if page["state"] not in pages.OPEN or pages.is_expired(page, w.now) or checkout.get("in_flight"):
        raise Closed()
    return page, checkout


def _redirect_target(w: Work, page: dict, checkout: dict, content: dict) -> str | None:
    """The request's redirect_url, else (subscription checkouts) the plan's (Chargebee's plan setting)."""
    if checkout.get("redirect_url") or page["type"] not in ("checkout_new", "checkout_existing"):
        return checkout.get("redirect_url")
    sub = content.get("subscription")
    plan = PLANS.get(w.tx, w.site_id, sub["plan_id"]) if sub else None
    url = (plan or {}).get("redirect_url")
    return url if url and pages.URL.match(url) else None


def _succeed(w: Work, page: dict, checkout: dict, content: dict) -> None:
    before = page["state"]
    page["state"] = "succeeded"
    page["content"] = copy.deepcopy(content)
    checkout.pop("in_flight", None)
    pages.save(w, page, checkout, before)


def _one_off_content(w: Work, inv: dict) -> dict:
    out = invoicing.snapshot(w, inv["customer_id"], inv.get("subscription_id"))
    ordered = {k: out[k] for k in ("subscription", "customer", "card") if k in out}
    ordered["invoice"] = inv
    return ordered


def _finish_in_flight(w: Work, page: dict, checkout: dict) -> Settled:
    """A one-off checkout's charge was settled: succeed as the API would have answered 200, or reopen."""
    txn = TRANSACTIONS.get(w.tx, w.site_id, checkout["in_flight"])
    if txn is not None and txn["status"] == "in_progress":
        return Settled(page)  # the gateway's answer is not recorded yet
    inv = INVOICES.get(w.tx, w.site_id, txn["linked_invoices"][0]["invoice_id"]) if txn is not None else None
    if inv is None or inv["status"] == "voided":
        checkout.pop("in_flight")
        pages.save(w, page, checkout, page["state"])
        why = f"({txn.get('error_code')}) {txn.get('error_text')}" if txn is not None else "the charge was lost"
        return Settled(page, f"Payment failed: {why}. Please use another card.")
    _succeed(w, page, checkout, _one_off_content(w, inv))
    return Settled(page)


def _settle_charge(w: Work, page_id: str, plan: invoicing.ChargePlan, result: GatewayResult) -> Settled:
    payments.settle(w, plan.txn_id, result, plan.purpose)
    page, checkout = pages.require(w, page_id, for_update=True)
    if checkout.get("in_flight") != plan.txn_id:
        return Settled(page)
    return _finish_in_flight(w, page, checkout)


# ---- the form -----------------------------------------------------------------------------------

def _card_params(form: CheckoutForm, gateway: str | None) -> dict:
    def number(value: str, name: str, label: str) -> int:
        if not value.strip().isdigit():
            raise FormError(f"card[{name}] : {label} must be a number", param=f"card[{name}]")
        return int(value.strip())

    for value, name, limit in ((form.first_name, "first_name", 50), (form.last_name, "last_name", 50),
                               (form.cvv, "cvv", 4), (form.number, "number", 30)):
        if len(value) > limit:
            raise FormError(f"card[{name}] : cannot be more than {limit} characters", param=f"card[{name}]")
    if not form.number.strip():
        raise FormError("card[number] : cannot be blank", param="card[number]")
    month = number(form.expiry_month, "expiry_month", "the expiry month")
    if not 1 <= month <= 12:
        raise FormError("card[expiry_month] : must be between 1 and 12", param="card[expiry_month]")
    year = number(form.expiry_year, "expiry_year", "the expiry year")
    if year < 100:
        year += 2000
    out: dict = {"number": form.number, "expiry_month": month, "expiry_year": year}
    if form.cvv.strip():
        out["cvv"] = form.cvv.strip()
    for k in ("first_name", "last_name"):
        if getattr(form, k).strip():
            out[k] = getattr(form, k).strip()
    if gateway:
        out["gateway"] = gateway
    return out


def _customer_params(page: dict, checkout: dict, form: CheckoutForm) -> dict:
    """customer[...] of a new customer: the request's, with the form's email and names."""
    given = dict(checkout["customer"])
    email = form.email.strip()
    if email:
        if len(email) > 70 or not _EMAIL.match(email):
            raise FormError("customer[email] : invalid email address", param="customer[email]")
        given["email"] = email
    for k in ("first_name", "last_name"):
        if not given.get(k) and getattr(form, k).strip():
            given[k] = getattr(form, k).strip()
    return given


def _origin(checkout: dict, ip: str | None) -> Origin:
    """Who completes a page: the customer's browser, on behalf of the key that created it; the
    creation's event headers (chargebee-event-*) still apply."""
    o = checkout.get("origin") or {}
    return Origin(source="hosted_page", user=o.get("user"), origin_user=o.get("origin_user"), origin_ip=ip,
                  origin_device=o.get("origin_device"), skip_actions=bool(o.get("skip_actions")),
                  skip_webhooks=bool(o.get("skip_webhooks")), skip_emails=bool(o.get("skip_emails")))
