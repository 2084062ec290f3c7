"""Portal sessions: /api/v1/portal_sessions — single sign-on into billhive's customer portal.

The API creates a session for a customer; its ``access_url`` (served by billhive, see
billhive/http/portal.py) must be opened within an hour and only once: opening it logs the
customer in, and the browser that opened it keeps access through a cookie until logout.
The state machine is in domain/portal_sessions.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from billhive.domain import portal_sessions as D
from billhive.errors import InvalidState, NotFound, ParamError, ParamRequired
from billhive.store.resources import CUSTOMERS, INVOICES, PORTAL_SESSIONS, SUBSCRIPTIONS
from billhive.util.ids import random_id
from billhive.util.jsonutil import loads
from billhive.work.context import Ctx, Origin, Work

PORTAL = Origin(source="portal")  # who acts when the customer uses the portal page
PORTAL_ITEMS_SHOWN = 50  # newest subscriptions / invoices on the portal page
_URL = re.compile(r"^https?://[^\s]+$", re.IGNORECASE)


def access_url(base_url: str, site_name: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/portal/{site_name}/{token}"


def _browser_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _has_live_subscription(w: Work, customer_id: str) -> bool:
    t = SUBSCRIPTIONS.t
    return bool(SUBSCRIPTIONS.find(w.tx, w.site_id, t.c.customer_id == customer_id,
                                   t.c.status.in_(D.LIVE_SUBSCRIPTION_STATUSES), limit=1))


def _linked_customers(w: Work, customer: dict) -> list[dict]:
    """The session's customers: billhive has no account hierarchy, so the customer itself."""
    return [D.linked_customer(customer, _has_live_subscription(w, customer["id"]))]


def _save(w: Work, session: dict, before: str, columns: dict | None = None) -> None:
    """Write a transition; a concurrent one that won first makes this one fail cleanly."""
    if not PORTAL_SESSIONS.update(w.tx, w.site_id, session, w.now, expect={"status": before}, columns=columns):
        raise InvalidState(f"Portal session {session['id']} was changed by another request; retry")


def _refresh_linked(w: Work, session: dict) -> None:
    customer = CUSTOMERS.get(w.tx, w.site_id, session["customer_id"])
    if customer is not None:
        session["linked_customers"] = _linked_customers(w, customer)


# ---- API operations ---------------------------------------------------------------------------

async def create(ctx: Ctx, params: dict) -> dict:
    customer_id = (params.get("customer") or {}).get("id")
    if not customer_id:
        raise ParamRequired("customer[id] : cannot be blank", param="customer[id]")
    redirect_url = params.get("redirect_url")
    if redirect_url is not None and not _URL.match(redirect_url):
        raise ParamError("redirect_url : must be an http or https URL", param="redirect_url")
    base_url = ctx.app.config.base_url

    def run(w: Work) -> dict:
        customer = CUSTOMERS.require(w.tx, w.site_id, customer_id, param="customer[id]")
        token = secrets.token_urlsafe(32)
        session: dict[str, Any] = {
            "id": random_id("portal_", 20),
            "token": token,
            "access_url": access_url(base_url, w.site.name, token),
        }
        if redirect_url is not None:
            session["redirect_url"] = redirect_url
        session.update({
            "status": "created",
            "created_at": w.now,
            "expires_at": w.now + D.ACCESS_URL_TTL,
            "customer_id": customer["id"],
            "linked_customers": _linked_customers(w, customer),
            "object": "portal_session",
        })
        PORTAL_SESSIONS.insert(w.tx, w.site_id, session, w.now)
        return {"portal_session": session}

    return await ctx.write(run)


async def retrieve(ctx: Ctx, session_id: str, params: dict) -> dict:
    return await ctx.read(lambda w: {"portal_session": PORTAL_SESSIONS.require(w.tx, w.site_id, session_id)})


async def activate(ctx: Ctx, session_id: str, params: dict) -> dict:
    """Validate a session's token (your server, after the customer came back): -> activated."""
    def run(w: Work) -> dict:
        session = PORTAL_SESSIONS.require(w.tx, w.site_id, session_id, for_update=True)
        if not hmac.compare_digest(session["token"].encode(), params["token"].encode()):
            raise ParamError("token : does not match this portal session", param="token")
        before = session["status"]
        D.transition(session, "activated", w.now)
        _refresh_linked(w, session)
        _save(w, session, before)
        return {"portal_session": session}

    return await ctx.write(run)


def _log_out(w: Work, session: dict, ip: str | None) -> None:
    if session["status"] == "logged_out":
        return  # "returns normally without changing any attribute"
    before = session["status"]
    D.transition(session, "logged_out", w.now)
    session["logout_at"] = w.now
    if ip:
        session["logout_ipaddress"] = ip[:50]
    _save(w, session, before)


async def logout(ctx: Ctx, session_id: str, params: dict) -> dict:
    """created / logged_in / activated -> logged_out (the access URL stops working)."""
    def run(w: Work) -> dict:
        session = PORTAL_SESSIONS.require(w.tx, w.site_id, session_id, for_update=True)
        _log_out(w, session, w.origin.origin_ip)  # the request-origin header names the customer's IP
        return {"portal_session": session}

    return await ctx.write(run)


# ---- the portal page (billhive/http/portal.py) ------------------------------------------------

@dataclass
class PortalView:
    session: dict
    customer: dict
    subscriptions: list[dict]
    invoices: list[dict]
    currency_code: str
    new_browser_secret: str | None = None  # set when this visit logged the customer in


def _gone() -> NotFound:
    return NotFound("This portal link is invalid, expired or already used")


def _usable_session(w: Work, token: str, browser_secret: str | None) -> dict:
    """The session behind an access URL, if this browser may use it; else NotFound.

    created (not expired): anyone holding the URL (it is the one-time secret);
    logged_in: only the browser that opened the URL (its cookie); activated: the URL holder;
    logged_out, expired, unknown: nobody.
    """
    t = PORTAL_SESSIONS.t
    row = w.tx.one(select(t.c.data, t.c.browser_key)
                   .where(t.c.site_id == w.site_id, t.c.token == token).with_for_update())
    if row is None:
        raise _gone()
    session, browser_key = loads(row[0]), row[1]
    status = session["status"]
    if status == "created" and not D.is_expired(session, w.now):
        return session
    if status == "activated":
        return session
    if status == "logged_in" and browser_secret and browser_key and \
            hmac.compare_digest(_browser_key(browser_secret), browser_key):
        return session
    raise _gone()


async def open_portal(ctx: Ctx, token: str, *, ip: str | None, browser_secret: str | None) -> PortalView:
    def run(w: Work) -> PortalView:
        session = _usable_session(w, token, browser_secret)
        customer = CUSTOMERS.get(w.tx, w.site_id, session["customer_id"])
        if customer is None:
            raise _gone()
        new_secret = None
        if session["status"] == "created":  # first visit: log in; the URL alone no longer works
            new_secret = secrets.token_urlsafe(32)
            D.transition(session, "logged_in", w.now)
            session["login_at"] = w.now
            if ip:
                session["login_ipaddress"] = ip[:50]
            session["linked_customers"] = _linked_customers(w, customer)
            _save(w, session, "created", columns={"browser_key": _browser_key(new_secret)})
        st, it = SUBSCRIPTIONS.t, INVOICES.t
        subs = SUBSCRIPTIONS.find(w.tx, w.site_id, st.c.customer_id == customer["id"],
                                  order_by=[st.c.created_at.desc(), st.c.pk.desc()], limit=PORTAL_ITEMS_SHOWN)
        invoices = INVOICES.find(w.tx, w.site_id, it.c.customer_id == customer["id"],
                                 it.c.status != "pending",  # drafts are not the customer's to see yet
                                 order_by=[it.c.created_at.desc(), it.c.pk.desc()], limit=PORTAL_ITEMS_SHOWN)
        return PortalView(session, customer, subs, invoices, w.site.currency_code, new_secret)

    return await ctx.write(run)


async def logout_portal(ctx: Ctx, token: str, *, ip: str | None, browser_secret: str | None) -> dict:
    """The portal's own logout button: same access rule as viewing, then logged_out."""
    def run(w: Work) -> dict:
        session = _usable_session(w, token, browser_secret)
        _log_out(w, session, ip)
        return session

    return await ctx.write(run)
