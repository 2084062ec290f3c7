"""The customer portal page behind a portal session's ``access_url``: read-only (the customer's
name, email, subscriptions and invoices) with a logout button.

    GET  /portal/{site}/{token}          open (the first visit logs in and sets a browser cookie)
    POST /portal/{site}/{token}/logout   log out, then go to the session's redirect_url

Who may see it is decided by services/portal_sessions.py; anything else is a plain 404 page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from billhive import sites
from billhive.domain.money import format_amount
from billhive.errors import NotFound
from billhive.runtime import App
from billhive.services import portal_sessions
from billhive.work.context import Ctx

COOKIE = "billhive_portal"
# the URL carries the session's secret: never cache the page or leak it in a Referer
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:",
    "X-Content-Type-Options": "nosniff",
}
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "table{border-collapse:collapse;width:100%;margin-bottom:2rem}"
          "th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #ddd}"
          "header{display:flex;justify-content:space-between;align-items:center}")


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style>'
            f"</head><body>{body}</body></html>")
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _not_found() -> HTMLResponse:
    return _page("Portal link not valid", "<h1>This portal link is not valid</h1>"
                 "<p>It may have expired or been used already. Please request a new link.</p>", 404)


def _date(ts: int | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]], empty: str) -> str:
    if not rows:
        return f"<p>{escape(empty)}</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(view: portal_sessions.PortalView, logout_path: str) -> str:
    c = view.customer
    name = " ".join(p for p in (c.get("first_name"), c.get("last_name")) if p) or c.get("company") or c["id"]
    subs = [(s["id"], s.get("plan_id", ""), s.get("status", ""), _date(s.get("current_term_end")))
            for s in view.subscriptions]
    invoices = []
    for inv in view.invoices:
        cur = inv.get("currency_code") or view.currency_code
        invoices.append((inv["id"], _date(inv.get("end_date") or inv.get("start_date")), inv.get("status", ""),
                         format_amount(int(inv.get("amount", 0)), cur),
                         format_amount(int(inv.get("amount_due", 0)), cur)))
    return (
        f'<header><h1>{escape(name)}</h1><form method="post" action="{escape(logout_path)}">'
        f'<button type="submit">Log out</button></form></header>'
        f"<p>{escape(c.get('email') or '')}</p>"
        "<h2>Subscriptions</h2>"
        + _table(("Subscription", "Plan", "Status", "Current term ends"), subs, "No subscriptions.")
        + "<h2>Invoices</h2>"
        + _table(("Invoice", "Date", "Status", "Amount", "Amount due"), invoices, "No invoices.")
    )


async def _ctx(app: App, site_name: str) -> Ctx | None:
    if not sites.SITE_NAME.match(site_name):
        return None
    site = await app.db.read(lambda tx: sites.by_name(tx, site_name))
    return Ctx(app, site.pk, portal_sessions.PORTAL) if site else None


def routes(app: App) -> list[BaseRoute]:
    secure = app.config.base_url.lower().startswith("https://")

    async def view(request: Request) -> Response:
        site_name, token = request.path_params["site"], request.path_params["token"]
        ctx = await _ctx(app, site_name)
        if ctx is None:
            return _not_found()
        path = f"/portal/{site_name}/{token}"
        try:
            v = await portal_sessions.open_portal(ctx, token, ip=request.client.host if request.client else None,
                                                  browser_secret=request.cookies.get(COOKIE))
        except NotFound:
            return _not_found()
        response = _page("Your account", render(v, path + "/logout"))
        if v.new_browser_secret:
            response.set_cookie(COOKIE, v.new_browser_secret, path=path, httponly=True, samesite="lax",
                                secure=secure)
        return response

    async def logout(request: Request) -> Response:
        site_name, token = request.path_params["site"], request.path_params["token"]
        ctx = await _ctx(app, site_name)
        if ctx is None:
            return _not_found()
        path = f"/portal/{site_name}/{token}"
        try:
            session = await portal_sessions.logout_portal(
                ctx, token, ip=request.client.host if request.client else None,
                browser_secret=request.cookies.get(COOKIE))
        except NotFound:
            return _not_found()
        if session.get("redirect_url"):
            response: Response = RedirectResponse(session["redirect_url"], status_code=303, headers=_HEADERS)
        else:
            response = _page("Logged out", "<h1>You have been logged out</h1>")
        response.delete_cookie(COOKIE, path=path, httponly=True, samesite="lax", secure=secure)
        return response

    return [
        Route("/portal/{site}/{token}", view, methods=["GET"]),
        Route("/portal/{site}/{token}/logout", logout, methods=["POST"]),
    ]
