"""The ASGI application.

``/api/v1/...`` is served by a lean dispatcher (``ApiEndpoint``): route trie -> site and
key -> spec-compiled parameter decoding -> service function -> JSON. Everything else
(``/health``, ``/openapi.json``, downloads, metrics) is a small Starlette app.

Every failure becomes Chargebee's error JSON here, and only here: services raise
``BillhiveError``s; anything else is logged and answered with 500 ``internal_error``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from billhive import spec
from billhive.errors import (
    AuthorizationFailed,
    BillhiveError,
    DuplicateEntry,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ParamError,
    StoreError,
)
from billhive.http import admin_api, console, idempotency, requests
from billhive.http import extra_routes as pages
from billhive.http.auth import Authenticator
from billhive.http.bodies import ClientDisconnected, read_body
from billhive.http.faults import FaultGate
from billhive.http.metrics import render as metrics_text
from billhive.http.params import Decoder, parse_pairs
from billhive.http.ratelimit import RateLimiter
from billhive.http.router import Router
from billhive.http.routes import ROUTES, Route
from billhive.runtime import App
from billhive.services import observe
from billhive.store.db import is_unique_violation
from billhive.store.lists import (
    ALL_OPS,
    MAX_FILTERS,
    ListRequest,
    filter_fields,
    parse_filter,
)
from billhive.work.context import Ctx, Origin

log = logging.getLogger("billhive.http")
PREFIX = "/api/v1"
CLIENT_CLOSED = 499
_JSON_HEADERS = [(b"content-type", b"application/json;charset=utf-8")]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
LOOP_FAILURES_DOWN = 3  # failed passes in a row after which /health counts a background loop as down


class Compiled:
    """A route with its decoder, built once."""

    __slots__ = ("route", "decoder", "is_list", "fn")

    def __init__(self, route: Route):
        self.route = route
        op = route.op
        if op.method == "GET":
            props = dict(op.query_params)
            required = op.required_query
        else:
            body = op.body_schema or {}
            props = dict(body.get("properties") or {})
            required = tuple(body.get("required") or ())
        self.decoder = Decoder(props, required)
        self.is_list = route.list_table is not None
        self.fn = route.fn


def _origin(headers: dict[bytes, bytes], key_name: str) -> Origin:
    def h(name: str) -> str | None:
        v = headers.get(name.encode())
        return v.decode("latin-1") if v is not None else None

    user = h("chargebee-request-origin-user")
    encoded = h("chargebee-request-origin-user-encoded")
    if encoded is not None:
        try:
            user = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ParamError("chargebee-request-origin-user-encoded : must be the Base64 encoding of an email "
                             "address", param="chargebee-request-origin-user-encoded") from None
        if not _EMAIL.match(user):
            raise ParamError("chargebee-request-origin-user-encoded : must encode an email address",
                             param="chargebee-request-origin-user-encoded")
    elif user is not None and not _EMAIL.match(user):
        raise ParamError("chargebee-request-origin-user : must be an email address",
                         param="chargebee-request-origin-user")
    ip = h("chargebee-request-origin-ip")
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ParamError("chargebee-request-origin-ip : must be an IP address",
                             param="chargebee-request-origin-ip") from None
    device = h("chargebee-request-origin-device")
    if device is not None and len(device) > 500:
        raise ParamError("chargebee-request-origin-device : cannot be more than 500 characters",
                         param="chargebee-request-origin-device")
    skips = {}
    for name in spec.EVENT_SKIP_HEADERS:
        v = h(name)
        if v is not None and v != "all-disabled":
            raise ParamError(f"{name} : the only supported value is all-disabled", param=name)
        skips[name] = v is not None
    return Origin(
        source="api",
        user=key_name,
        origin_user=user,
        origin_ip=ip,
        origin_device=device,
        skip_actions=skips["chargebee-event-actions"],
        skip_webhooks=skips["chargebee-event-webhook"],
        skip_emails=skips["chargebee-event-email"],
    )


def _list_request(compiled: Compiled, pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], ListRequest]:
    """Split list extension params (field[op], sort_by[dir]) from the spec's own: each filter at
    most once, at most MAX_FILTERS of them."""
    table = compiled.route.list_table
    declared = compiled.decoder.fields
    rest, filters = [], []
    seen: set[str] = set()
    sort = None
    for key, value in pairs:
        if "[" in key and key.endswith("]"):
            top, _, op = key[:-1].partition("[")
            # a declared scalar (event_type) can still take a v2 operator (event_type[in])
            if (top not in declared or declared[top].kind == "scalar") and "[" not in op:
                if top == "sort_by" and op in ("asc", "desc"):
                    if sort is not None:
                        raise ParamError("sort_by : give one sort order", param=key)
                    sortable = filter_fields(table).get(value)
                    if sortable is None or sortable.kind == "string":
                        raise ParamError(f"{key} : cannot sort by {value!r}", param=key)
                    sort = (value, op == "desc")
                    continue
                if op in ALL_OPS:
                    if key in seen:
                        raise ParamError(f"{key} : is specified more than once", param=key)
                    if len(filters) == MAX_FILTERS:
                        raise ParamError(f"{key} : a list request takes at most {MAX_FILTERS} filters", param=key)
                    seen.add(key)
                    filters.append(parse_filter(table, top, op, value))
                    continue
        rest.append((key, value))
    return rest, ListRequest(filters=tuple(filters), sort=sort)


class ApiEndpoint:
    def __init__(self, app: App, routes: list[Route]):
        self.app = app
        self.auth = Authenticator(app.db, app.config.domain, ttl=app.config.cache_ttl)
        self.rate = RateLimiter(app.db, ttl=app.config.cache_ttl)
        self.faults = FaultGate(app, ttl=app.config.cache_ttl)  # faults on purpose (admin API)
        self.max_body = app.config.max_body_bytes
        self.router = Router()
        # (operationId, status) -> [requests, seconds]: read by /metrics (plain dict: no
        # per-request cost beyond two additions)
        self.request_stats: dict[tuple[str, int], list] = {}
        for r in routes:
            self.router.add(r.op.method, r.op.path, Compiled(r))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        status, body, extra_headers = await self.handle(scope, receive)
        key = (scope.get("billhive.op", "unknown"), status)
        stat = self.request_stats.get(key)
        if stat is None:
            stat = self.request_stats[key] = [0, 0.0]
        stat[0] += 1
        stat[1] += time.perf_counter() - started
        headers = _JSON_HEADERS + extra_headers
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def handle(self, scope: dict, receive: Callable) -> tuple[int, bytes, list]:
        try:
            return await self._handle(scope, receive)
        except StoreError as exc:  # 503: the database's condition, not the request's
            log.warning("%s %s: %s (%s)", scope.get("method"), scope.get("path"), exc.api_error_code, exc.message)
            return exc.http_status, orjson.dumps(exc.to_json()), [(b"retry-after", b"1")]
        except BillhiveError as exc:
            return exc.http_status, orjson.dumps(exc.to_json()), list(exc.headers)
        except ClientDisconnected:
            # nobody to answer, and nothing was done; counted as nginx's 499 "client closed request"
            return CLIENT_CLOSED, b"", []
        except Exception as exc:
            if is_unique_violation(exc):
                # two requests created the same id at once: the loser gets what a sequential one would
                log.warning("unique violation answered as duplicate_entry: %s", exc)
                dup = DuplicateEntry("An object with this id already exists")
                return dup.http_status, orjson.dumps(dup.to_json()), []
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            err = InternalError("Sorry, something went wrong when trying to process the request.")
            return 500, orjson.dumps(err.to_json()), []

    async def _handle(self, scope: dict, receive: Callable) -> tuple[int, bytes, list]:
        method = scope["method"]
        # match on the raw path: scope["path"] is already percent-decoded, and ids may contain
        # an encoded "/" or "%" that must be decoded exactly once, per segment
        raw = scope.get("raw_path")
        path = raw.decode("latin-1").split("?", 1)[0][len(PREFIX):] if raw else scope["path"][len(PREFIX):]
        compiled, args, exists = self.router.match(method, path)
        if compiled is None:
            if exists:
                # RFC 9110: a 405 lists the methods the resource does support
                allow = ", ".join(self.router.methods(path)).encode()
                err = MethodNotAllowed(f"The HTTP method {method} is not supported for this URL")
                return 405, orjson.dumps(err.to_json()), [(b"allow", allow)]
            raise NotFound("Sorry, we couldn't find that resource (no such API URL)")
        scope["billhive.op"] = compiled.route.op.operation_id
        headers = dict(scope["headers"])
        body = await read_body(receive, self.max_body, headers.get(b"content-length")) if method != "GET" else b""
        host = headers.get(b"host")
        authz = headers.get(b"authorization")
        principal = await self.auth.authenticate(host.decode("latin-1") if host else None,
                                                 authz.decode("latin-1") if authz else None)
        scope["billhive.site"] = principal.site_name
        if not self.rate.unlimited(principal.site_pk):
            await self.rate.admit(principal.site_pk)
        route = compiled.route
        if route.op.writes and principal.read_only:
            raise AuthorizationFailed("Sorry, your API key does not have the privilege to perform this operation")
        if any("\x00" in a for a in args):
            # no id holds NUL (and PostgreSQL could not even compare one)
            raise NotFound("Sorry, we couldn't find that resource")
        # faults on purpose: before the operation runs, so a faulted call changes nothing
        await self.faults.check(principal.site_pk, route.op.operation_id)
        origin = _origin(headers, principal.key_name)
        qs = scope.get("query_string", b"")
        pairs = parse_pairs(qs) if qs else []
        if method != "GET" and body:
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if ctype != b"application/x-www-form-urlencoded":
                raise ParamError("Content-Type must be application/x-www-form-urlencoded")
            pairs += parse_pairs(body)
        pairs, params = _decode(compiled, pairs)
        ikey = headers.get(b"chargebee-idempotency-key")
        claim = idempotency.Claim(principal.site_pk, ikey.decode("latin-1")) if ikey is not None \
            and method == "POST" else None
        ctx = Ctx(self.app, principal.site_pk, origin, claim)
        call = compiled.fn(ctx, *args, params)
        if claim is not None:
            return await idempotency.run(self.app, claim, method, path, pairs, call)
        result = await call
        return 200, orjson.dumps(result), []

    async def call(self, ctx: Ctx, method: str, path: str, pairs: Sequence[tuple[str, str]] = ()) -> dict:
        """An API operation run on the site of ``ctx`` as if requested (path under /api/v1,
        unencoded ids; parameters decoded and validated from the spec, list filters included), for
        the admin console: no key, no rate limit, no idempotency key. Raises what the operation
        raises (``BillhiveError``s); returns the response as plain JSON values."""
        compiled, args, _ = self.router.match(method, "/".join(quote(seg, safe="") for seg in path.split("/")))
        if compiled is None:
            raise NotFound(f"no API operation {method} {path}")
        _, params = _decode(compiled, list(pairs))
        return orjson.loads(orjson.dumps(await compiled.fn(ctx, *args, params)))


def _decode(compiled: Any, pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict]:
    """The operation's parameters from the request's pairs (decoded and validated from the spec); a
    list operation's filters and sort taken out first, its page request under ``_list``. Returns
    the pairs the decoder saw (the idempotency journal keys on them) and the parameters."""
    list_req = None
    if compiled.is_list:
        pairs, list_req = _list_request(compiled, pairs)
    params = compiled.decoder.decode(pairs)
    if list_req is not None:
        list_req.limit = params.get("limit", 10)
        list_req.offset = params.get("offset")
        params["_list"] = list_req
    return pairs, params


def served_openapi(base_url: str, routes: list[Route] = ROUTES) -> dict:
    """billhive's /openapi.json: the v1 spec and billhive's extensions, restricted to the
    operations these routes serve."""
    return spec.served(base_url, {r.op.operation_id for r in routes})


def build(app: App, *, background: Callable[[App], Coroutine[Any, Any, None]] | None = None,
          extra_routes: Sequence[Route] = ()) -> Callable:
    """The ASGI callable for billhive serve (and the tests). ``extra_routes``: API routes beyond
    ROUTES (the benchmark's ceiling, tests' own)."""
    routes = [*ROUTES, *extra_routes]
    api = ApiEndpoint(app, routes)
    latency = requests.Latency()
    openapi_bytes: dict[str, bytes] = {}

    async def health(request: Request) -> Response:
        """200 when the store is reachable and writable and every background loop and store
        thread of this process is alive; else 503 with the same body, "problems" listing why."""
        store = await app.db.health()
        now = app.wall()
        loops = {name: state.report(now) for name, state in app.loops.items()}
        problems = []
        if not store["reachable"]:
            problems.append(f"database unreachable: {store['error']}")
        elif not store["writable"]:
            problems.append(f"database not writable: {store['error']}")
        problems += [f"store thread {name} stopped" for name, alive in store["threads"].items() if not alive]
        if app.background == "running":
            for name, state in app.loops.items():
                if not state.running:
                    problems.append(f"background loop {name} stopped")
                elif state.failures >= LOOP_FAILURES_DOWN:
                    problems.append(f"background loop {name} failing: {state.last_error}")
        if app.fatal_error:
            problems.append(f"stopping: {app.fatal_error}")
        body: dict = {"status": "unavailable" if problems else "ok", "database": app.db.dialect}
        if app.db.dialect == "sqlite":
            body["group_commit"] = dict(app.db.stats)  # batches committed, units in them
        body["store"] = store
        body["background"] = {"state": app.background, "loops": loops}
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=503 if problems else 200)

    async def openapi(request: Request) -> Response:
        base = app.config.public_url or f"{request.url.scheme}://{request.url.netloc}"
        if base not in openapi_bytes:
            openapi_bytes[base] = orjson.dumps(served_openapi(base, routes))
        return Response(openapi_bytes[base], media_type="application/json")

    async def store_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)  # hosted pages, portal, downloads: the same 503 JSON as the API
        log.warning("%s %s: %s (%s)", request.method, request.url.path, exc.api_error_code, exc.message)
        return JSONResponse(exc.to_json(), status_code=exc.http_status, headers={"retry-after": "1"})

    async def not_found(request: Request, exc: Exception) -> Response:
        err = NotFound("Sorry, we couldn't find that resource (no such URL)")
        return JSONResponse(err.to_json(), status_code=404)

    def background_done(task: asyncio.Task) -> None:
        if not task.cancelled():
            exc = task.exception()
            app.fatal(f"background work stopped: {exc}" if exc else "background work stopped")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        task = asyncio.create_task(background(app)) if background else None
        if task:
            task.add_done_callback(background_done)
        try:
            yield
        finally:
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def metrics(request: Request) -> Response:
        try:
            health = await observe.all_sites(app)
        except StoreError as exc:  # the process's own figures still tell something; /health says the rest
            log.warning("/metrics without the per-site figures: %s", exc.message)
            health = []
        return Response(metrics_text(app, api, latency, health), media_type="text/plain; version=0.0.4")

    def admin_changed() -> None:  # what the API caches of sites, keys and fault rules is stale
        api.auth.clear()
        api.faults.clear()

    starlette = Starlette(
        routes=[StarletteRoute("/health", health), StarletteRoute("/openapi.json", openapi),
                StarletteRoute("/metrics", metrics),
                *admin_api.routes(app, on_change=admin_changed, call=api.call),
                *pages.routes(app), *console.routes(app, api)],
        exception_handlers={404: not_found, StoreError: store_error},
        lifespan=lifespan,
    )

    async def route(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["path"].startswith(PREFIX + "/"):
            await api(scope, receive, send)
        else:
            await starlette(scope, receive, send)

    async def asgi(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            await requests.serve(scope, receive, send, route, latency)
        else:
            await starlette(scope, receive, send)

    asgi.api = api  # type: ignore[attr-defined]
    asgi.app = app  # type: ignore[attr-defined]
    return asgi

