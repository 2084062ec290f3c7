"""The checkout page behind a hosted page's ``url`` (services/hosted_pages/ decides everything):

    GET  /hosted_pages/{site}/{id}          open: what will be billed and a card form (created -> requested)
    POST /hosted_pages/{site}/{id}          submit the form: run the checkout, then go to redirect_url
                                            with ?id=...&state=succeeded (or show a thank-you page)
    POST /hosted_pages/{site}/{id}/cancel   cancel, then go to cancel_url with ?id=...&state=cancelled

Card numbers pass through to the gateway and are never stored or echoed back. Unknown pages are a
plain 404 page, expired ones 410.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from billhive import sites
from billhive.domain.money import format_amount
from billhive.errors import NotFound, PayloadTooLarge
from billhive.http.bodies import ClientDisconnected, read_body
from billhive.runtime import App
from billhive.services import hosted_pages as H
from billhive.work.context import Ctx

MAX_FORM_BYTES = 16 * 1024  # the form's seven fields; a larger body is refused (413) unread
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "table{border-collapse:collapse;width:100%;margin-bottom:1.5rem}"
          "td{padding:.35rem .5rem;border-bottom:1px solid #ddd}td.amount{text-align:right}"
          "tr.total td{font-weight:600;border-bottom:none}"
          "label{display:block;margin:.6rem 0 .2rem}input{width:100%;padding:.45rem;box-sizing:border-box}"
          ".row{display:flex;gap:.75rem}.row>div{flex:1}"
          "button{margin-top:1rem;padding:.55rem 1.2rem}.error{background:#fde8e8;color:#8a1c1c;padding:.6rem .8rem}"
          "form.cancel button{background:none;border:none;color:#555;text-decoration:underline;cursor:pointer}")
_LABELS = {"card[number]": "Card number", "card[expiry_month]": "Expiry month", "card[expiry_year]": "Expiry year",
           "card[cvv]": "CVV", "card[first_name]": "First name", "card[last_name]": "Last name",
           "customer[email]": "Email"}
_BUTTONS = {"checkout_new": "Subscribe", "checkout_existing": "Confirm", "checkout_onetime_charge": "Pay",
            "checkout_onetime_addons": "Pay"}


def _headers(embed: bool) -> dict[str, str]:
    # the URL is the page's secret: never cache it or leak it in a Referer; embeddable only when asked
    frame = "*" if embed else "'none'"
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": (f"default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:; "
                                    f"frame-ancestors {frame}"),
        "X-Content-Type-Options": "nosniff",
    }
    if not embed:
        headers["X-Frame-Options"] = "DENY"
    return headers


def _page(title: str, body: str, status: int = 200, *, embed: bool = False) -> HTMLResponse:
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style>'
            f"</head><body>{body}</body></html>")
    return HTMLResponse(html, status_code=status, headers=_headers(embed))


def _not_found() -> HTMLResponse:
    return _page("Checkout link not valid", "<h1>This checkout link is not valid</h1>"
                 "<p>Please ask for a new link.</p>", 404)


def _date(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def _with_result(url: str, page_id: str, state: str) -> str:
    """Chargebee's redirect: the page's id and state as query parameters of the given URL."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("id", "state")]
    query += [("id", page_id), ("state", state)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _summary(view: H.PageView) -> str:
    est = view.estimate
    if est is None:
        return ""
    cur = view.currency_code

    def row(label: str, amount: int, cls: str = "") -> str:
        return (f'<tr class="{cls}"><td>{escape(label)}</td>'
                f'<td class="amount">{escape(format_amount(amount, cur))}</td></tr>')

    rows = [row(f"{li['description']}" + (f" × {li['quantity']}" if li.get("quantity", 1) != 1 else ""),
                int(li["amount"])) for li in est.get("line_items", ())]
    rows += [row(d.get("description") or "Discount", -int(d["amount"])) for d in est.get("discounts", ())]
    if est.get("credits_applied"):
        rows.append(row("Credits", -int(est["credits_applied"])))
    if est["collect_now"]:
        rows.append(row("Due now", int(est["amount_due"]), "total"))
        later = ""
    else:
        rows.append(row("Due now", 0, "total"))
        first = (est.get("line_items") or [{}])[0].get("date_from")
        later = (f"<p>Then {escape(format_amount(int(est['amount_due']), cur))}"
                 + (f" on {escape(_date(int(first)))}" if first else "") + ".</p>")
    return f"<table><tbody>{''.join(rows)}</tbody></table>{later}"


def _field(name: str, label: str, value: str = "", *, kind: str = "text", autocomplete: str = "",
           required: bool = True, maxlength: int = 50) -> str:
    attrs = f' autocomplete="{autocomplete}"' if autocomplete else ""
    attrs += " required" if required else ""
    return (f'<label for="{name}">{escape(label)}</label><input id="{name}" name="{name}" type="{kind}" '
            f'value="{escape(value)}" maxlength="{maxlength}"{attrs}>')


def render_form(view: H.PageView, path: str, *, error: str | None = None, values: dict | None = None) -> str:
    page = view.page
    values = {**view.prefill, **(values or {})}
    parts = [f"<h1>{escape(view.title)}</h1>"]
    if error or view.error:
        parts.append(f'<p class="error" role="alert">{escape(error or view.error or "")}</p>')
    parts.append(_summary(view))
    if view.error is None:
        fields = []
        if page["type"] == "checkout_new":
            fields.append(_field("email", "Email", values.get("email", ""), kind="email", autocomplete="email",
                                 maxlength=70))
        fields.append('<div class="row"><div>' + _field("first_name", "First name", values.get("first_name", ""),
                                                         autocomplete="cc-given-name")
                      + "</div><div>" + _field("last_name", "Last name", values.get("last_name", ""),
                                               autocomplete="cc-family-name") + "</div></div>")
        fields.append(_field("number", "Card number", autocomplete="cc-number", maxlength=30))
        fields.append('<div class="row"><div>'
                      + _field("expiry_month", "Expiry month (MM)", autocomplete="cc-exp-month", maxlength=2)
                      + "</div><div>" + _field("expiry_year", "Expiry year (YYYY)", autocomplete="cc-exp-year",
                                               maxlength=4)
                      + "</div><div>" + _field("cvv", "CVV", autocomplete="cc-csc", maxlength=4, required=False)
                      + "</div></div>")
        parts.append(f'<form method="post" action="{escape(path)}">{"".join(fields)}'
                     f'<button type="submit">{_BUTTONS.get(page["type"], "Pay")}</button></form>')
    parts.append(f'<form class="cancel" method="post" action="{escape(path)}/cancel">'
                 '<button type="submit">Cancel</button></form>')
    return "".join(parts)


def _state_page(view: H.PageView) -> HTMLResponse:
    """A page that shows no form: completed, cancelled, expired, or a payment still being settled."""
    page, embed = view.page, bool(view.page.get("embed"))
    if page["state"] == "succeeded":
        return _page("Thank you", "<h1>Thank you</h1><p>Your checkout is complete.</p>", embed=embed)
    if page["state"] == "cancelled":
        return _page("Checkout cancelled", "<h1>Checkout cancelled</h1><p>Nothing was charged.</p>", embed=embed)
    if view.expired:
        return _page("Checkout expired", "<h1>This checkout link has expired</h1>"
                     "<p>Please ask for a new link.</p>", 410, embed=embed)
    return _page("Processing", "<h1>Your payment is being processed</h1>"
                 "<p>Reload this page in a moment.</p>", embed=embed)


def _respond(view: H.PageView, path: str, *, error: str | None = None, values: dict | None = None) -> Response:
    if not view.open:
        return _state_page(view)
    return _page(view.title, render_form(view, path, error=error, values=values), 400 if error else 200,
                 embed=bool(view.page.get("embed")))


def _redirect(url: str, page: dict, state: str) -> Response:
    return RedirectResponse(_with_result(url, page["id"], state), status_code=303,
                            headers=_headers(bool(page.get("embed"))))


async def _ctx(app: App, site_name: str) -> Ctx | None:
    if not sites.SITE_NAME.match(site_name):
        return None
    site = await app.db.read(lambda tx: sites.by_name(tx, site_name))
    return Ctx(app, site.pk, H.HOSTED_PAGE) if site else None


def _form(body: bytes) -> H.CheckoutForm:
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    names = ("number", "expiry_month", "expiry_year", "cvv", "first_name", "last_name", "email")
    return H.CheckoutForm(**{k: fields.get(k, "")[:200] for k in names})


def _error_text(message: str, param: str | None) -> str:
    label = _LABELS.get(param or "")
    if label and param and message.startswith(param + " : "):
        return f"{label}: {message[len(param) + 3:]}"
    return message


def routes(app: App) -> list[BaseRoute]:
    async def show(ctx: Ctx, page_id: str, path: str, *, error: str | None = None,
                   values: dict | None = None) -> Response:
        return _respond(await H.view_of(ctx, page_id), path, error=error, values=values)

    async def open_(request: Request) -> Response:
        site_name, page_id = request.path_params["site"], request.path_params["page_id"]
        ctx = await _ctx(app, site_name)
        if ctx is None:
            return _not_found()
        try:
            view = await H.open_page(ctx, page_id)
        except NotFound:
            return _not_found()
        return _respond(view, f"/hosted_pages/{site_name}/{page_id}")

    async def submit(request: Request) -> Response:
        site_name, page_id = request.path_params["site"], request.path_params["page_id"]
        ctx = await _ctx(app, site_name)
        if ctx is None:
            return _not_found()
        path = f"/hosted_pages/{site_name}/{page_id}"
        try:
            form = _form(await read_body(request.receive, MAX_FORM_BYTES, request.headers.get("content-length")))
        except PayloadTooLarge:
            return _page("Form too large", "<h1>The form sent was too large</h1>"
                         "<p>Please go back and submit the checkout form again.</p>", 413)
        except ClientDisconnected:
            return Response(status_code=400)  # the browser went away: nobody to answer, nothing done
        try:
            done = await H.submit(ctx, page_id, form, ip=request.client.host if request.client else None)
        except NotFound:
            return _not_found()
        except H.Closed:
            return await show(ctx, page_id, path)
        if done.error:
            values = {"email": form.email, "first_name": form.first_name, "last_name": form.last_name}
            return await show(ctx, page_id, path, error=_error_text(done.error, done.error_param), values=values)
        if done.page["state"] == "succeeded" and done.redirect_url:
            return _redirect(done.redirect_url, done.page, "succeeded")
        return await show(ctx, page_id, path)

    async def cancel(request: Request) -> Response:
        site_name, page_id = request.path_params["site"], request.path_params["page_id"]
        ctx = await _ctx(app, site_name)
        if ctx is None:
            return _not_found()
        path = f"/hosted_pages/{site_name}/{page_id}"
        try:
            done = await H.cancel(ctx, page_id)
        except NotFound:
            return _not_found()
        except H.Closed:
            return await show(ctx, page_id, path)
        if done.redirect_url:
            return _redirect(done.redirect_url, done.page, "cancelled")
        return await show(ctx, page_id, path)

    return [
        Route("/hosted_pages/{site}/{page_id}", open_, methods=["GET"]),
        Route("/hosted_pages/{site}/{page_id}", submit, methods=["POST"]),
        Route("/hosted_pages/{site}/{page_id}/cancel", cancel, methods=["POST"]),
    ]
