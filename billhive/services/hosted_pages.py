"""Hosted pages: /api/v1/hosted_pages/... — checkout pages that billhive serves itself
(billhive/http/hosted.py), in place of Chargebee's.

Creating a page (checkout_new, checkout_existing, checkout_onetime_charge, checkout_onetime_addons)
checks the checkout up front with the code of the operation it will run, composed as an estimate
(nothing is written, nothing redeemed), stores the request beside the page (the ``checkout``
column) and answers the page: ``url`` = ``{public URL}/hosted_pages/{site}/{id}``.

The page's life (states per Chargebee: created -> requested -> succeeded | cancelled):
- opening the url marks it ``requested`` and shows a form with what will be billed (the
  operation's estimate);
- submitting the form stores the card at the gateway (never here, and before any transaction),
  then runs the operation the API would run — create_a_subscription (or
  create_subscription_for_customer for an existing ``customer[id]``), update_a_subscription,
  POST /invoices/charge, POST /invoices — with that card. The page succeeds exactly when the API
  call would have answered 200; its ``content`` is then the resources (subscription, customer,
  card, invoice);
- a declined card (or any refusal) is shown on the page, which stays ``requested``;
- cancelling marks it ``cancelled``;
- after ``expires_at`` (created_at + 3 h on the site clock, Chargebee's figure for checkout
  pages) the url no longer opens; the state stays as it was (Chargebee has no expired state).

Subscription checkouts commit the operation and the page's success in one transaction (the
first invoice is charged after commit, as the API does; the page's content is then refreshed).
A one-off invoice exists only if its charge does not fail (the API voids it and answers 400), so
the page records the charge in flight and succeeds or reopens in the settling transaction; a
page found with a charge in flight (a crash before the settlement) is finished as soon as the
transaction is settled (payment recovery), when the page is opened or retrieved.
"""

from __future__ import annotations

import copy
import re
import secrets
from dataclasses import dataclass, field

from sqlalchemy import select

from billhive import gateway as gateways
from billhive.domain import subscriptions as R
from billhive.errors import (
    BillhiveError,
    DuplicateEntry,
    InvalidState,
    ParamError,
    ParamRequired,
    not_found,
    params_renamed,
)
from billhive.gateway import GatewayResult
from billhive.services import cards, customers, estimates, invoices, invoicing, payments
from billhive.services import subscriptions as subs
from billhive.store.resources import (
    CUSTOMERS,
    HOSTED_PAGES,
    INVOICES,
    PLANS,
    SUBSCRIPTIONS,
    TRANSACTIONS,
)
from billhive.util.jsonutil import dumps, loads
from billhive.work.context import Ctx, Origin, Work

TTL = 3 * 3600  # Chargebee: checkout pages expire 3 hours after they are created
OPEN = ("created", "requested")
HOSTED_PAGE = Origin(source="hosted_page")
_URL = re.compile(r"^https?://[^\s]+$", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SUBSCRIPTION_PARAMS = ("id", "plan_id", "plan_quantity", "trial_end", "start_date", "coupon")
# the parameters of the operation a page runs, as the page's own request names them
_NEW_NAMES = {k: f"subscription[{k}]" for k in _SUBSCRIPTION_PARAMS}
_EXISTING_NAMES = {k: f"subscription[{k}]" for k in _SUBSCRIPTION_PARAMS if k != "id"}
_ONE_OFF_NAMES = {"subscription_id": "subscription[id]", "customer_id": "subscription[id]"}
_T = HOSTED_PAGES.t
# event types this module emits through a variable (the card a one-off checkout gives the customer)
EMITS = ("card_added", "card_updated")


def page_url(base_url: str, site_name: str, page_id: str) -> str:
    return f"{base_url.rstrip('/')}/hosted_pages/{site_name}/{page_id}"


# ---- storage ------------------------------------------------------------------------------------

def _load(w: Work, page_id: str, *, for_update: bool = False) -> tuple[dict, dict] | None:
    stmt = select(_T.c.data, _T.c.checkout).where(_T.c.site_id == w.site_id, _T.c.id == page_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = w.tx.one(stmt)
    return (loads(row[0]), loads(row[1])) if row else None


def _require(w: Work, page_id: str, *, for_update: bool = False) -> tuple[dict, dict]:
    found = _load(w, page_id, for_update=for_update)
    if found is None:
        raise not_found("hosted_page", page_id)
    return found


def _save(w: Work, page: dict, checkout: dict, before: str) -> None:
    """Write a transition; a concurrent one that won first makes this one fail cleanly."""
    if not HOSTED_PAGES.update(w.tx, w.site_id, page, w.now, expect={"state": before},
                               columns={"checkout": dumps(checkout)}):
        raise InvalidState(f"Hosted page {page['id']} was changed by another request; reload it")


def is_expired(page: dict, now: int) -> bool:
    return now >= int(page["expires_at"])


# ---- creating pages (the API) ---------------------------------------------------------------------

def _check_url(params: dict, name: str) -> str | None:
    value = params.get(name)
    if value is not None and not _URL.match(value):
        raise ParamError(f"{name} : must be an http or https URL", param=name)
    return value


def _origin_json(origin: Origin) -> dict:
    return {"user": origin.user, "origin_user": origin.origin_user, "origin_device": origin.origin_device,
            "skip_actions": origin.skip_actions, "skip_webhooks": origin.skip_webhooks,
            "skip_emails": origin.skip_emails}


async def _create_page(ctx: Ctx, page_type: str, params: dict, checkout: dict) -> dict:
    """Store a checked checkout and answer its page (state ``created``)."""
    gateway = (params.get("card") or {}).get("gateway")
    await cards.site_gateway(ctx, gateway, "card[gateway]")  # a checkout takes a card: the site needs a gateway
    checkout.update({"gateway": gateway, "redirect_url": _check_url(params, "redirect_url"),
                     "cancel_url": _check_url(params, "cancel_url"),
                     "iframe_messaging": bool(params.get("iframe_messaging")), "origin": _origin_json(ctx.origin)})
    base_url = ctx.app.config.base_url

    def run(w: Work) -> dict:
        page_id = secrets.token_urlsafe(30)  # the url's secret: 240 random bits
        page: dict = {"id": page_id, "type": page_type, "url": page_url(base_url, w.site.name, page_id),
                      "state": "created"}
        if params.get("pass_thru_content") is not None:
            page["pass_thru_content"] = params["pass_thru_content"]
        page.update({"embed": params.get("embed", True), "created_at": w.now, "expires_at": w.now + TTL})
        if page_type in ("checkout_new", "checkout_existing"):
            page["layout"] = "in_app"  # v1's only layout
        page.update({"content": {}, "object": "hosted_page"})
        HOSTED_PAGES.insert(w.tx, w.site_id, page, w.now, columns={"checkout": dumps(checkout)})
        return {"hosted_page": page}
    return await ctx.write(run)


def _new_subscription_params(params: dict) -> dict:
    p = dict(params.get("subscription") or {})
    for k in ("billing_cycles", "addons"):
        if k in params:
            p[k] = params[k]
    return p


def _checkout_customer(w: Work, checkout: dict) -> tuple[str | None, dict | None]:
    """(customer id, the existing customer) of a checkout_new: ``customer[id]`` names an existing
    customer or a new one's id; without it the new customer takes ``subscription[id]`` (Chargebee's
    rule), else a generated id (None)."""
    given = checkout["customer"].get("id")
    if given:
        return given, CUSTOMERS.get(w.tx, w.site_id, given)
    return checkout["params"].get("id"), None


def _check_new(w: Work, checkout: dict) -> dict:
    """checkout_new's checks, by create_a_subscription's code: the estimate of the creation."""
    p = checkout["params"]
    if p.get("id"):
        R.check_id(p["id"], "id")
        if SUBSCRIPTIONS.exists(w.tx, w.site_id, p["id"]):
            raise DuplicateEntry(f"id : The value {p['id']} is already present.", param="id")
    customer_id, existing = _checkout_customer(w, checkout)
    if customer_id is not None and existing is None:
        R.check_id(customer_id, "customer[id]")
        if not checkout["customer"].get("id") and CUSTOMERS.exists(w.tx, w.site_id, customer_id):
            raise DuplicateEntry(f"customer[id] : The value {customer_id} is already present (a new customer takes "
                                 "subscription[id] as its id; give customer[id] to subscribe an existing customer)",
                                 param="customer[id]")
    customer = existing or {"id": customer_id or "__checkout__", "auto_collection": "on", "object": "customer"}
    return estimates.create_estimate_of(w, p, customer, existing is not None)


async def checkout_new(ctx: Ctx, params: dict) -> dict:
    """POST /hosted_pages/checkout_new — a page that creates a subscription (and its customer)."""
    checkout = {"params": _new_subscription_params(params), "customer": dict(params.get("customer") or {})}
    if "plan_id" not in checkout["params"]:  # the spec marks it required inside subscription[...]
        raise ParamRequired("subscription[plan_id] : cannot be blank", param="subscription[plan_id]")
    with params_renamed(_NEW_NAMES):
        await ctx.read(_check_new, checkout)
    return await _create_page(ctx, "checkout_new", params, checkout)


def _existing_params(params: dict) -> tuple[str, dict]:
    given = dict(params["subscription"])
    sub_id = given.pop("id")
    for k in ("replace_addon_list", "billing_cycles", "addons"):
        if k in params:
            given[k] = params[k]
    return sub_id, given


def _check_existing(w: Work, checkout: dict) -> dict:
    """checkout_existing's checks, by update_a_subscription's code: the estimate of the change."""
    sub_id = checkout["subscription_id"]
    if not SUBSCRIPTIONS.exists(w.tx, w.site_id, sub_id):
        raise not_found("subscription", sub_id, param="subscription[id]")
    return estimates.update_estimate_of(w, sub_id, checkout["params"], include_delayed=False, use_balances=True)


async def checkout_existing(ctx: Ctx, params: dict) -> dict:
    """POST /hosted_pages/checkout_existing — a page that changes a subscription (typically one in trial)."""
    sub_id, p = _existing_params(params)
    checkout = {"subscription_id": sub_id, "params": p}
    with params_renamed(_EXISTING_NAMES):
        await ctx.read(_check_existing, checkout)
    return await _create_page(ctx, "checkout_existing", params, checkout)


def _one_off_build(page_type: str, p: dict) -> invoices.Build:
    return invoices.charge_lines(p) if page_type == "checkout_onetime_charge" else invoices.create_lines(p)


def _one_off_params(w: Work, checkout: dict) -> dict:
    """POST /invoices(/charge) parameters for the subscription's customer, as of now."""
    sub_id = checkout["params"]["subscription_id"]
    sub = SUBSCRIPTIONS.get(w.tx, w.site_id, sub_id)
    if sub is None:
        raise not_found("subscription", sub_id, param="subscription[id]")
    return {**checkout["params"], "customer_id": sub["customer_id"]}


def _check_one_off(w: Work, page_type: str, checkout: dict) -> dict:
    p = _one_off_params(w, checkout)
    return estimates.invoice_estimate_of(w, p, _one_off_build(page_type, p), use_balances=True)


async def _checkout_one_off(ctx: Ctx, page_type: str, params: dict, p: dict) -> dict:
    checkout = {"params": p}
    _one_off_build(page_type, p)  # the checks that need no database
    with params_renamed(_ONE_OFF_NAMES):
        await ctx.read(_check_one_off, page_type, checkout)
    return await _create_page(ctx, page_type, params, checkout)


async def checkout_onetime_charge(ctx: Ctx, params: dict) -> dict:
    """POST /hosted_pages/checkout_onetime_charge — a page that pays an ad-hoc charge (POST /invoices/charge)."""
    p = {"subscription_id": params["subscription"]["id"], "amount": params["amount"],
         "description": params["description"]}
    return await _checkout_one_off(ctx, "checkout_onetime_charge", params, p)


async def checkout_onetime_addons(ctx: Ctx, params: dict) -> dict:
    """POST /hosted_pages/checkout_onetime_addons — a page that buys non-recurring addons (POST /invoices)."""
    if not params.get("addons"):  # the spec requires addons[id]
        raise ParamRequired("addons[id][0] : cannot be blank", param="addons[id][0]")
    p = {"subscription_id": params["subscription"]["id"], "addons": params["addons"]}
    if params.get("coupon"):
        p["coupon"] = params["coupon"]
    return await _checkout_one_off(ctx, "checkout_onetime_addons", params, p)


async def retrieve(ctx: Ctx, page_id: str, params: dict) -> dict:
    page, checkout = await ctx.read(_require, page_id)
    if checkout.get("in_flight"):
        page = await ctx.write(_settle_in_flight, page_id)
    return {"hosted_page": page}


# ---- completing a checkout ------------------------------------------------------------------------

def _succeed(w: Work, page: dict, checkout: dict, content: dict) -> None:
    before = page["state"]
    page["state"] = "succeeded"
    page["content"] = copy.deepcopy(content)
    checkout.pop("in_flight", None)
    _save(w, page, checkout, before)


def _one_off_content(w: Work, inv: dict) -> dict:
    out = invoicing.snapshot(w, inv["customer_id"], inv.get("subscription_id"))
    ordered = {k: out[k] for k in ("subscription", "customer", "card") if k in out}
    ordered["invoice"] = inv
    return ordered


@dataclass
class Settled:
    page: dict
    error: str | None = None  # the charge failed: the page is open again


def _finish_in_flight(w: Work, page: dict, checkout: dict) -> Settled:
    """A one-off checkout's charge was settled: succeed as the API would have answered 200, or reopen."""
    txn = TRANSACTIONS.get(w.tx, w.site_id, checkout["in_flight"])
    if txn is not None and txn["status"] == "in_progress":
        return Settled(page)  # the gateway's answer is not recorded yet
    inv = INVOICES.get(w.tx, w.site_id, txn["linked_invoices"][0]["invoice_id"]) if txn is not None else None
    if inv is None or inv["status"] == "voided":
        checkout.pop("in_flight")
        _save(w, page, checkout, page["state"])
        why = f"({txn.get('error_code')}) {txn.get('error_text')}" if txn is not None else "the charge was lost"
        return Settled(page, f"Payment failed: {why}. Please use another card.")
    _succeed(w, page, checkout, _one_off_content(w, inv))
    return Settled(page)


def _settle_in_flight(w: Work, page_id: str) -> dict:
    page, checkout = _require(w, page_id, for_update=True)
    if checkout.get("in_flight"):
        _finish_in_flight(w, page, checkout)
    return page


def _settle_charge(w: Work, page_id: str, plan: invoicing.ChargePlan, result: GatewayResult) -> Settled:
    payments.settle(w, plan.txn_id, result, plan.purpose)
    page, checkout = _require(w, page_id, for_update=True)
    if checkout.get("in_flight") != plan.txn_id:
        return Settled(page)
    return _finish_in_flight(w, page, checkout)


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


class Closed(Exception):
    """The page can no longer be submitted (completed, cancelled, expired, or a charge in flight)."""


def _open_for_submit(w: Work, page_id: str, *, lock: bool = True) -> tuple[dict, dict]:
    page, checkout = _require(w, page_id, for_update=lock)
    if page["state"] not in OPEN or is_expired(page, w.now) or checkout.get("in_flight"):
        raise Closed()
    return page, checkout


def _redirect_target(w: Work, page: dict, checkout: dict, content: dict) -> str | None:
    """The request's redirect_url, else (subscription checkouts) the plan's (Chargebee's plan setting)."""
    if checkout.get("redirect_url") or page["type"] not in ("checkout_new", "checkout_existing"):
        return checkout.get("redirect_url")
    sub = content.get("subscription")
    plan = PLANS.get(w.tx, w.site_id, sub["plan_id"]) if sub else None
    url = (plan or {}).get("redirect_url")
    return url if url and _URL.match(url) else None


@dataclass
class Submitted:
    """What a submission did: the page afterwards and where the browser goes next, or an error."""

    page: dict
    redirect_url: str | None = None
    error: str | None = None
    error_param: str | None = None


def _complete_subscription(w: Work, page_id: str, form: CheckoutForm, pay: subs.PaymentIn,
                           ip: str | None) -> tuple[Submitted, subs.Outcome]:
    page, checkout = _open_for_submit(w, page_id)
    if page["type"] == "checkout_new":
        params = copy.deepcopy(checkout["params"])
        customer_id, existing = _checkout_customer(w, checkout)
        if ip:
            params["created_from_ip"] = ip[:50]
        if existing is None:
            params["customer"] = _customer_params(page, checkout, form)
            if customer_id:
                params["customer"]["id"] = customer_id
            with params_renamed(_NEW_NAMES):
                done = subs.create_unit(w, params, None, pay)
        else:
            with params_renamed(_NEW_NAMES):
                done = subs.create_unit(w, params, existing["id"], pay)
    else:
        with params_renamed(_EXISTING_NAMES):
            done = subs.update_unit(w, checkout["subscription_id"], copy.deepcopy(checkout["params"]), pay)
    _succeed(w, page, checkout, done.body)
    return Submitted(page, _redirect_target(w, page, checkout, done.body)), done


def _refresh_content(w: Work, page_id: str, content: dict) -> dict:
    """The content after the first invoice's charge was settled (the commit showed it unpaid)."""
    page, checkout = _require(w, page_id, for_update=True)
    if page["state"] == "succeeded":
        page["content"] = copy.deepcopy(content)
        _save(w, page, checkout, "succeeded")
    return page


def _complete_one_off(w: Work, page_id: str, pay: subs.PaymentIn
                      ) -> tuple[Submitted, invoicing.ChargePlan | None]:
    page, checkout = _open_for_submit(w, page_id)
    with params_renamed(_ONE_OFF_NAMES):
        p = _one_off_params(w, checkout)
        customer = customers.get_customer(w, p["customer_id"], for_update=True)
        card_events = subs.apply_payment(w, customer, pay)
        if card_events:
            cards.save_customer(w, customer)
            for event, card in card_events:
                w.emit(event, cards.content(customer, card))
        inv, plan = invoices.create_one_off(w, p, _one_off_build(page["type"], p))
    if plan is None:  # nothing to charge now: the API answers 200 at once
        _succeed(w, page, checkout, _one_off_content(w, inv))
        return Submitted(page), None
    checkout["in_flight"] = plan.txn_id
    _save(w, page, checkout, page["state"])
    return Submitted(page), plan


async def _resolve(ctx: Ctx, page_id: str) -> None:
    """Finish a one-off checkout whose charge was settled after all (recovery after a crash)."""
    _, checkout = await ctx.read(_require, page_id)
    if checkout.get("in_flight"):
        await ctx.write(_settle_in_flight, page_id)


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
            submitted, done = await op.write(_complete_subscription, page_id, form, pay, ip)
            if done.charges:
                submitted.page = await op.write(_refresh_content, page_id, await subs.finish(op, done))
            return submitted
        submitted, plan = await op.write(_complete_one_off, page_id, pay)
        if plan is not None:
            result = await payments.call_gateway(op.app, op.site_id, plan)
            settled = await op.write(_settle_charge, page_id, plan, result)
            submitted.page, submitted.error = settled.page, settled.error
        return submitted
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
        _save(w, page, checkout, before)
        return Submitted(page, checkout.get("cancel_url"))
    await _resolve(ctx, page_id)
    return await ctx.write(run)


# ---- showing a page -------------------------------------------------------------------------------

@dataclass
class PageView:
    page: dict
    checkout: dict
    title: str = ""
    currency_code: str = "USD"
    estimate: dict | None = None  # what the checkout bills (the operation's estimate)
    error: str | None = None  # the checkout cannot be completed as it stands
    prefill: dict = field(default_factory=dict)
    expired: bool = False

    @property
    def open(self) -> bool:
        """Whether the page shows its form (else its state: done, cancelled, expired, processing)."""
        return self.page["state"] in OPEN and not self.expired and not self.checkout.get("in_flight")


def _title(w: Work, page: dict, checkout: dict) -> str:
    p = checkout["params"]
    if page["type"] == "checkout_new":
        plan = PLANS.get(w.tx, w.site_id, p["plan_id"]) or {}
        return f"Subscribe to {plan.get('invoice_name') or plan.get('name') or p['plan_id']}"
    if page["type"] == "checkout_existing":
        return "Update your subscription"
    if page["type"] == "checkout_onetime_charge":
        return f"Pay for {p['description']}"
    return "Buy add-ons"


def _estimate(w: Work, page: dict, checkout: dict) -> dict:
    if page["type"] == "checkout_new":
        return _check_new(w, checkout)
    if page["type"] == "checkout_existing":
        return _check_existing(w, checkout)
    return _check_one_off(w, page["type"], checkout)


def _view(w: Work, page: dict, checkout: dict) -> PageView:
    view = PageView(page, checkout, _title(w, page, checkout), w.site.currency_code,
                    expired=is_expired(page, w.now))
    if page["type"] == "checkout_new":
        c = checkout["customer"]
        view.prefill = {k: c[k] for k in ("email", "first_name", "last_name") if c.get(k)}
    if view.open:
        try:
            gateways.for_site(w.app.gateways, w.site)  # no card form on a site that cannot take cards
            view.estimate = _estimate(w, page, checkout)
        except BillhiveError as exc:  # e.g. the plan was archived since: say so instead of a form
            view.error = exc.message
    return view


async def open_page(ctx: Ctx, page_id: str) -> PageView:
    """The page as the browser sees it; the first visit marks it requested."""
    page, checkout = await ctx.read(_require, page_id)
    if checkout.get("in_flight"):
        await ctx.write(_settle_in_flight, page_id)
    elif page["state"] == "created":
        def request(w: Work) -> None:
            p, chk = _require(w, page_id, for_update=True)
            if p["state"] == "created" and not is_expired(p, w.now):
                p["state"] = "requested"
                _save(w, p, chk, "created")
        await ctx.write(request)
    page, checkout = await ctx.read(_require, page_id)
    return await ctx.read(_view, page, checkout)


async def view_of(ctx: Ctx, page_id: str) -> PageView:
    """The page as it is now, without visiting it (after a submission or cancellation)."""
    page, checkout = await ctx.read(_require, page_id)
    return await ctx.read(_view, page, checkout)

