"""The console's routes and pages.

    GET  /admin/signin, POST /admin/signin, POST /admin/signout
    GET  /admin/sites                               sites; POST: create a test site
    GET  /admin/sites/{site}                        overview, settings, keys (hints), webhook endpoints
    GET  /admin/sites/{site}/customers?q=           search by id, email, first or last name
    GET  /admin/sites/{site}/customers/{id}         subscriptions, invoices, transactions, credits ledger
    GET  /admin/sites/{site}/subscriptions|invoices|transactions|events   v2-style filters (status[is]=...)
    GET  /admin/sites/{site}/invoices/{id}          and /pdf (a download link, then redirected to it)
    GET  /admin/sites/{site}/events/{id}            webhook and email attempts; POST .../resend
    GET  /admin/sites/{site}/time_machine           POST .../travel, .../start_afresh

Every page needs a session (else: to the sign-in page); every POST its CSRF token and, but for
signing in and out, the admin role. Pages refresh themselves (a ``Refresh`` header) only while
a time travel is in progress: there is no JavaScript."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from billhive import sites
from billhive.domain.money import format_amount
from billhive.errors import BillhiveError, SettingError
from billhive.http.console import session as sessions
from billhive.runtime import App
from billhive.services import observe
from billhive.work.context import Ctx
from billhive.work.origin import Origin

log = logging.getLogger("billhive.console")
PAGE_SIZE = 25
MAX_FORM = 16 * 1024  # bytes of a posted form
ORIGIN = Origin(source="admin_console", user="admin console")
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# list pages: (title, API path, response key, columns)
LISTS = {
    "subscriptions": ("/subscriptions", "subscription", ("id", "customer_id", "plan_id", "status",
                                                        "current_term_end")),
    "invoices": ("/invoices", "invoice", ("id", "customer_id", "subscription_id", "status", "date", "total",
                                          "amount_due")),
    "transactions": ("/transactions", "transaction", ("id", "customer_id", "type", "status", "date", "amount")),
    "events": ("/events", "event", ("id", "event_type", "occurred_at", "webhook_status", "source")),
}
# the filter fields each list page offers (any v2-style filter the API takes also works in the URL)
FILTERS = {
    "subscriptions": ("id", "customer_id", "plan_id", "status"),
    "invoices": ("id", "customer_id", "subscription_id", "status"),
    "transactions": ("id", "customer_id", "status", "type"),
    "events": ("event_type",),
}

_env = jinja2.Environment(loader=jinja2.PackageLoader("billhive", "templates/console"),
                          autoescape=jinja2.select_autoescape(default=True))


def routes(app: App, api: Any) -> list[BaseRoute]:
    """The console's routes; ``api``: the ApiEndpoint whose operations the pages call."""
    console = Console(app, api)
    get, post = ["GET"], ["POST"]
    return [
        Route("/admin", console.home, methods=get),
        Route("/admin/", console.home, methods=get),
        Route("/admin/console.css", console.css, methods=get),
        Route("/admin/signin", console.signin_form, methods=get),
        Route("/admin/signin", console.signin, methods=post),
        Route("/admin/signout", console.signout, methods=post),
        Route("/admin/sites", console.page(console.site_list), methods=get),
        Route("/admin/sites", console.action(console.create_site), methods=post),
        Route("/admin/sites/{site}", console.page(console.overview), methods=get),
        Route("/admin/sites/{site}/customers", console.page(console.customers), methods=get),
        Route("/admin/sites/{site}/customers/{id}", console.page(console.customer), methods=get),
        Route("/admin/sites/{site}/invoices/{id}", console.page(console.invoice), methods=get),
        Route("/admin/sites/{site}/invoices/{id}/pdf", console.page(console.invoice_pdf), methods=get),
        Route("/admin/sites/{site}/events/{id}", console.page(console.event), methods=get),
        Route("/admin/sites/{site}/events/{id}/resend", console.action(console.resend), methods=post),
        Route("/admin/sites/{site}/time_machine", console.page(console.time_machine), methods=get),
        Route("/admin/sites/{site}/time_machine/travel", console.action(console.travel), methods=post),
        Route("/admin/sites/{site}/time_machine/start_afresh", console.action(console.start_afresh), methods=post),
        Route("/admin/sites/{site}/{kind:str}", console.page(console.listing), methods=get),
    ]


class Denied(Exception):
    """A request the console refuses (status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Console:
    def __init__(self, app: App, api: Any):
        self.app = app
        self.api = api
        self.travels: set[asyncio.Task] = set()  # time travels started here, running in the background

    # ---- sign-in ----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        self._enabled()
        return RedirectResponse("/admin/sites", 303)

    async def css(self, request: Request) -> Response:
        self._enabled()
        return Response(_env.get_template("console.css").render(), media_type="text/css",
                        headers={"Cache-Control": "max-age=3600"})

    async def signin_form(self, request: Request) -> Response:
        self._enabled()
        return self._html("signin.html", None, error=None)

    async def signin(self, request: Request) -> Response:
        self._enabled()
        form = await _form(request)
        found = sessions.sign_in(self.app.config, str(form.get("token") or ""), self.app.wall())
        if found is None:
            log.warning("console sign-in refused", extra={"client": request.client.host if request.client else None})
            return self._html("signin.html", None, status=403, error="That token is not valid.")
        session, cookie = found
        response = RedirectResponse("/admin/sites", 303)
        response.set_cookie(sessions.COOKIE, cookie, max_age=sessions.LIFETIME, path="/admin", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        log.info("console sign-in", extra={"role": session.role})
        return response

    async def signout(self, request: Request) -> Response:
        self._enabled()
        response = RedirectResponse("/admin/signin", 303)
        response.delete_cookie(sessions.COOKIE, path="/admin")
        return response

    # ---- page plumbing ----------------------------------------------------------------------

    def page(self, view: Callable[[Request, sessions.Session], Awaitable[Response]]) -> Callable:
        async def handle(request: Request) -> Response:
            self._enabled()
            session = sessions.from_cookie(self.app.config, request.cookies.get(sessions.COOKIE), self.app.wall())
            if session is None:
                return RedirectResponse("/admin/signin", 303)
            try:
                return await view(request, session)
            except Denied as exc:
                return self._html("error.html", session, status=exc.status, message=exc.message)
            except BillhiveError as exc:
                return self._html("error.html", session, status=exc.http_status, message=exc.message)
        return handle

    def action(self, view: Callable[[Request, sessions.Session, Any], Awaitable[Response]]) -> Callable:
        async def handle(request: Request) -> Response:
            self._enabled()
            session = sessions.from_cookie(self.app.config, request.cookies.get(sessions.COOKIE), self.app.wall())
            if session is None:
                return RedirectResponse("/admin/signin", 303)
            form = await _form(request)
            if not sessions.csrf_ok(self.app.config, session, form.get("csrf")):
                return self._html("error.html", session, status=403,
                                  message="This form has expired or did not come from the console. Reload the page.")
            if not session.can_change:
                return self._html("error.html", session, status=403,
                                  message="You are signed in read-only: you can look, not change.")
            try:
                return await view(request, session, form)
            except Denied as exc:
                return self._html("error.html", session, status=exc.status, message=exc.message)
            except BillhiveError as exc:
                return self._html("error.html", session, status=exc.http_status, message=exc.message)
        return handle

    def _enabled(self) -> None:
        if not sessions.enabled(self.app.config):
            raise HTTPException(404)

    def _html(self, template: str, session: sessions.Session | None, status: int = 200,
              headers: dict[str, str] | None = None, **values: Any) -> HTMLResponse:
        csrf = sessions.csrf_token(self.app.config, session) if session else ""
        html = _env.get_template(template).render(session=session, csrf=csrf, **values)
        return HTMLResponse(html, status_code=status, headers={**_HEADERS, **(headers or {})})

    async def _site(self, request: Request) -> sites.Site:
        name = request.path_params["site"]
        site = await self.app.db.read(lambda tx: sites.by_name(tx, name))
        if site is None:
            raise Denied(404, f"No site named {name!r}")
        request.scope["billhive.site"] = site.name  # for the request's log line
        return site

    def _ctx(self, site: sites.Site) -> Ctx:
        return Ctx(self.app, site.pk, ORIGIN)

    # ---- sites ------------------------------------------------------------------------------

    async def site_list(self, request: Request, session: sessions.Session) -> Response:
        health = await observe.all_sites(self.app)
        all_sites = await self.app.db.read(sites.all_sites)
        by_name = {h.site: h for h in health}
        return self._html("sites.html", session, sites=all_sites, health=by_name, created=None, error=None)

    async def create_site(self, request: Request, session: sessions.Session, form: Any) -> Response:
        name = str(form.get("name") or "").strip().lower()
        if not name.endswith("-test"):
            name += "-test"  # the console makes test sites only (a live site: billhive site create)
        currency = str(form.get("currency") or "USD").strip().upper()
        now = int(self.app.wall())
        try:
            _, keys = await self.app.db.write(lambda tx: sites.create(tx, name, now=now, currency=currency))
        except SettingError as exc:
            all_sites = await self.app.db.read(sites.all_sites)
            return self._html("sites.html", session, status=400, sites=all_sites, health={}, created=None,
                              error=str(exc))
        log.info("console created site %s", name, extra={"site": name})
        all_sites = await self.app.db.read(sites.all_sites)
        return self._html("sites.html", session, sites=all_sites, health={},
                          created={"name": name, "key": keys["full"]}, error=None)

    async def overview(self, request: Request, session: sessions.Session) -> Response:
        site = await self._site(request)
        health = await observe.overview(self.app, site.pk)
        described = await observe.describe_site(self.app, site.pk)
        return self._html("overview.html", session, site=site, health=health, described=described)

    # ---- customers --------------------------------------------------------------------------

    async def customers(self, request: Request, session: sessions.Session) -> Response:
        site = await self._site(request)
        q = (request.query_params.get("q") or "").strip()
        ctx = self._ctx(site)
        found: dict[str, dict] = {}
        next_offset = None
        if not q:
            page = await self.api.call(ctx, "GET", "/customers", self._paging(request))
            found = {e["customer"]["id"]: e["customer"] for e in page["list"]}
            next_offset = page.get("next_offset")
        else:
            found = {c["id"]: c for c in await observe.search_customers(self.app, site.pk, q, PAGE_SIZE)}
        return self._html("customers.html", session, site=site, q=q, customers=list(found.values()),
                          next_url=self._next_url(request, next_offset))

    async def customer(self, request: Request, session: sessions.Session) -> Response:
        site = await self._site(request)
        ctx = self._ctx(site)
        cid = request.path_params["id"]
        customer = (await self.api.call(ctx, "GET", f"/customers/{cid}"))["customer"]
        limit = [("limit", str(PAGE_SIZE))]
        subs = await self.api.call(ctx, "GET", "/subscriptions", [("customer_id[is]", cid), *limit])
        invoices = await self.api.call(ctx, "GET", f"/customers/{cid}/invoices", limit)
        txns = await self.api.call(ctx, "GET", "/transactions", [("customer_id[is]", cid), *limit])
        ledger = await observe.credit_ledger(self.app, site.pk, cid)
        return self._html("customer.html", session, site=site, customer=customer,
                          subscriptions=[e["subscription"] for e in subs["list"]],
                          invoices=[e["invoice"] for e in invoices["list"]],
                          transactions=[e["transaction"] for e in txns["list"]], ledger=ledger)

    # ---- lists ------------------------------------------------------------------------------

    async def listing(self, request: Request, session: sessions.Session) -> Response:
        kind = request.path_params["kind"]
        if kind not in LISTS:
            raise Denied(404, "No such page")
        site = await self._site(request)
        path, key, columns = LISTS[kind]
        filters = [(k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "limit") and v != ""]
        error = None
        try:
            page = await self.api.call(self._ctx(site), "GET", path, [*filters, *self._paging(request)])
        except BillhiveError as exc:
            page, error = {"list": []}, exc.message
        return self._html("list.html", session, site=site, kind=kind, columns=columns,
                          rows=[e[key] for e in page["list"]], filter_fields=FILTERS[kind],
                          values=dict(filters), error=error,
                          next_url=self._next_url(request, page.get("next_offset")),
                          status=400 if error else 200)

    def _paging(self, request: Request) -> list[tuple[str, str]]:
        out = [("limit", str(PAGE_SIZE))]
        if request.query_params.get("offset"):
            out.append(("offset", request.query_params["offset"]))
        return out

    def _next_url(self, request: Request, offset: str | None) -> str | None:
        if not offset:
            return None
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "offset"]
        return f"{request.url.path}?{urlencode([*query, ('offset', offset)])}"

    # ---- invoices ---------------------------------------------------------------------------

    async def invoice(self, request: Request, session: sessions.Session) -> Response:
        site = await self._site(request)
        ctx = self._ctx(site)
        iid = request.path_params["id"]
        inv = (await self.api.call(ctx, "GET", f"/invoices/{iid}"))["invoice"]
        txns = await self.api.call(ctx, "GET", f"/invoices/{iid}/transactions", [("limit", str(PAGE_SIZE))])
        return self._html("invoice.html", session, site=site, invoice=inv,
                          transactions=[e["transaction"] for e in txns["list"]])

    async def invoice_pdf(self, request: Request, session: sessions.Session) -> Response:
        site = await self._site(request)
        download = await self.api.call(self._ctx(site), "POST", f"/invoices/{request.path_params['id']}/pdf")
        return RedirectResponse(download["download"]["download_url"], 303)

    # ---- events -----------------------------------------------------------------------------

    async def event(self, request: Request, session: sessions.Session) -> Response:
        site = await self._site(request)
        eid = request.path_params["id"]
        event = (await self.api.call(self._ctx(site), "GET", f"/events/{eid}"))["event"]
        deliveries = await observe.event_deliveries(self.app, site.pk, eid)
        return self._html("event.html", session, site=site, event=event, deliveries=deliveries,
                          resent=request.query_params.get("resent") == "1")

    async def resend(self, request: Request, session: sessions.Session, form: Any) -> Response:
        site = await self._site(request)
        eid = request.path_params["id"]
        await self.api.call(self._ctx(site), "POST", f"/events/{eid}/resend")
        log.info("console resent event %s", eid, extra={"site": site.name, "event_id": eid})
        return RedirectResponse(f"/admin/sites/{site.name}/events/{eid}?resent=1", 303)

    # ---- time machine -----------------------------------------------------------------------

    async def time_machine(self, request: Request, session: sessions.Session) -> Response:
        site = await self._site(request)
        if not site.is_test:
            raise Denied(400, "The time machine is available only on test sites")
        travelling = site.tm_status == "in_progress"
        progress = None
        if travelling and site.tm_destination_time and site.tm_now is not None and site.tm_genesis_time is not None:
            span = max(1, site.tm_destination_time - site.tm_genesis_time)
            progress = max(0, min(100, round(100 * (site.tm_now - site.tm_genesis_time) / span)))
        return self._html("time_machine.html", session, site=site, now=site.now(self.app.wall), progress=progress,
                          travelling=travelling, headers={"Refresh": "1"} if travelling else None)

    async def travel(self, request: Request, session: sessions.Session, form: Any) -> Response:
        site = await self._site(request)
        destination = parse_time(str(form.get("destination") or ""))
        ctx = self._ctx(site)
        now = site.now(self.app.wall)
        if destination is None or destination <= now:
            raise Denied(400, "Give a destination later than the site's current time "
                              f"({format_time(now)}), as YYYY-MM-DDTHH:MM (UTC) or a Unix timestamp")
        if site.tm_status == "in_progress":
            raise Denied(409, "A time travel is already in progress on this site")
        task = asyncio.create_task(self._travel(ctx, site, destination))
        self.travels.add(task)
        task.add_done_callback(self.travels.discard)
        await asyncio.sleep(0.05)  # let it mark the site in progress before the page is drawn
        return RedirectResponse(f"/admin/sites/{site.name}/time_machine", 303)

    async def _travel(self, ctx: Ctx, site: sites.Site, destination: int) -> None:
        try:
            await self.api.call(ctx, "POST", "/time_machines/delorean/travel_forward",
                                [("destination_time", str(destination))])
            log.info("console time travel on %s done", site.name, extra={"site": site.name})
        except Exception:
            log.exception("console time travel on %s failed", site.name, extra={"site": site.name})

    async def start_afresh(self, request: Request, session: sessions.Session, form: Any) -> Response:
        site = await self._site(request)
        pairs = []
        genesis = parse_time(str(form.get("genesis") or ""))
        if genesis is not None:
            pairs.append(("genesis_time", str(genesis)))
        await self.api.call(self._ctx(site), "POST", "/time_machines/delorean/start_afresh", pairs)
        return RedirectResponse(f"/admin/sites/{site.name}/time_machine", 303)


async def _form(request: Request) -> dict[str, str]:
    """A posted form (application/x-www-form-urlencoded; the console's forms send nothing else)."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise Denied(413, "That form is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def parse_time(raw: str) -> int | None:
    """A Unix timestamp, or an ISO date/time taken as UTC (``2026-05-01``, ``2026-05-01T10:30``)."""
    raw = raw.strip()
    if not raw:
        return None
    if raw.isdigit():
        return int(raw)
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def format_time(ts: Any) -> str:
    if ts is None or ts == "" or isinstance(ts, jinja2.Undefined):
        return ""
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _money(amount: Any, currency: str) -> str:
    if amount is None or isinstance(amount, jinja2.Undefined):
        return ""
    return format_amount(int(amount), currency)


_env.filters["ts"] = format_time
_env.filters["money"] = _money
