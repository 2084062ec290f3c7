"""The admin API: JSON over HTTP under ``/admin/api`` for test suites and operators - test sites
with their keys (create, list, retrieve, delete, reset, rotate keys). Authenticated by the admin
token (billhive/http/admin_auth.py), never by a site key; off (404) when no token is set.
Documented in billhive's /openapi.json (billhive/spec/extensions.py, ``ADMIN_OPERATIONS``);
errors are Chargebee's error JSON. The work is done by billhive/services/site_admin.py.

    POST   /admin/api/sites                      {"name"?, "currency_code"?, "metered_billing"?}
    GET    /admin/api/sites
    GET    /admin/api/sites/{name}
    DELETE /admin/api/sites/{name}
    POST   /admin/api/sites/{name}/reset
    POST   /admin/api/sites/{name}/rotate_keys
    POST   /admin/api/sites/{name}/seed          a seed document (JSON, or YAML as application/yaml)
    GET    /admin/api/sites/{name}/snapshot
    POST   /admin/api/sites/{name}/restore       a snapshot document
    POST   /admin/api/sites/{name}/faults        {"operation", "status"?, "api_error_code"?, "type"?,
                                                  "message"?, "param"?, "probability"?, "seed"?,
                                                  "times"?, "latency_ms"?}
    GET    /admin/api/sites/{name}/faults
    DELETE /admin/api/sites/{name}/faults        (every rule and every endpoint's delivery modes)
    DELETE /admin/api/sites/{name}/faults/{id}
    GET|POST|DELETE /admin/api/sites/{name}/webhook_endpoints/{id}/fault
                                                 {"duplicate"?, "out_of_order"?, "window_seconds"?,
                                                  "delay_seconds"?, "fail_first_n"?}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from billhive.errors import AuthenticationFailed, BillhiveError, NotFound, ParamError
from billhive.http import admin_auth, seeds
from billhive.http.bodies import read_body
from billhive.http.routes import ROUTES
from billhive.runtime import App
from billhive.services import faults, site_admin, snapshots

PREFIX = "/admin/api"
MAX_BODY = 64 << 20  # seeds and snapshots can be large; still bounded

Handler = Callable[[App, Request, dict], Awaitable[dict]]


def routes(app: App, *, on_change: Callable[[], None], call: seeds.Call | None = None) -> list[BaseRoute]:
    """The admin API's routes. ``on_change``: called after an operation that changes sites or
    keys (the API's authentication cache forgets what it knew). ``call``: runs a v1 API
    operation in-process (``ApiEndpoint.call``), for seeds."""
    def route(path: str, method: str, handler: Handler, changes: bool = False) -> Route:
        async def endpoint(request: Request) -> Response:
            return await _serve(app, request, handler, on_change if changes else None)
        return Route(PREFIX + path, endpoint, methods=[method])

    return [
        route("/sites", "POST", _create, changes=True),
        route("/sites", "GET", _list),
        route("/sites/{name}", "GET", _retrieve),
        route("/sites/{name}", "DELETE", _delete, changes=True),
        route("/sites/{name}/reset", "POST", _reset, changes=True),
        route("/sites/{name}/rotate_keys", "POST", _rotate, changes=True),
        *([route("/sites/{name}/seed", "POST", _seeder(call), changes=True)] if call is not None else []),
        route("/sites/{name}/snapshot", "GET", _snapshot),
        route("/sites/{name}/restore", "POST", _restore, changes=True),
        route("/sites/{name}/faults", "POST", _add_fault, changes=True),
        route("/sites/{name}/faults", "GET", _list_faults),
        route("/sites/{name}/faults", "DELETE", _clear_faults, changes=True),
        route("/sites/{name}/faults/{id}", "DELETE", _delete_fault, changes=True),
        route("/sites/{name}/webhook_endpoints/{id}/fault", "POST", _set_webhook_fault),
        route("/sites/{name}/webhook_endpoints/{id}/fault", "GET", _get_webhook_fault),
        route("/sites/{name}/webhook_endpoints/{id}/fault", "DELETE", _clear_webhook_fault),
    ]


async def _create(app: App, request: Request, body: dict) -> dict:
    return {"site": await site_admin.create_site(
        app, name=_opt(body, "name", str), currency_code=_opt(body, "currency_code", str) or "USD",
        metered_billing=bool(_opt(body, "metered_billing", bool)))}


async def _list(app: App, request: Request, body: dict) -> dict:
    return {"list": [{"site": s} for s in await site_admin.list_sites(app)]}


async def _retrieve(app: App, request: Request, body: dict) -> dict:
    return {"site": await site_admin.get_site(app, request.path_params["name"])}


async def _delete(app: App, request: Request, body: dict) -> dict:
    return {"site": await site_admin.delete_site(app, request.path_params["name"])}


async def _reset(app: App, request: Request, body: dict) -> dict:
    return {"site": await site_admin.reset_site(app, request.path_params["name"])}


async def _rotate(app: App, request: Request, body: dict) -> dict:
    return {"site": await site_admin.rotate_keys(app, request.path_params["name"])}


def _seeder(call: seeds.Call) -> Handler:
    async def seed(app: App, request: Request, body: dict) -> dict:
        return await seeds.load(app, call, request.path_params["name"], body)
    return seed


async def _snapshot(app: App, request: Request, body: dict) -> dict:
    return await snapshots.snapshot(app, request.path_params["name"])


async def _restore(app: App, request: Request, body: dict) -> dict:
    return await snapshots.restore(app, request.path_params["name"], body)
# a fault rule names an operation by its operationId or as the spec writes it ("POST /invoices/{invoice-id}/collect")
_OPERATIONS = {**{r.op.operation_id: r.op.operation_id for r in ROUTES},
               **{f"{r.op.method} {r.op.path}": r.op.operation_id for r in ROUTES}}


async def _add_fault(app: App, request: Request, body: dict) -> dict:
    return {"fault_rule": await faults.add_rule(app, request.path_params["name"], body, _OPERATIONS)}


async def _list_faults(app: App, request: Request, body: dict) -> dict:
    name = request.path_params["name"]
    return {"list": [{"fault_rule": r} for r in await faults.list_rules(app, name)],
            "webhook_endpoints": await faults.webhook_faults(app, name)}


async def _clear_faults(app: App, request: Request, body: dict) -> dict:
    return {"faults": await faults.clear_all(app, request.path_params["name"])}


async def _delete_fault(app: App, request: Request, body: dict) -> dict:
    return {"fault_rule": await faults.delete_rule(app, request.path_params["name"], request.path_params["id"])}


async def _set_webhook_fault(app: App, request: Request, body: dict) -> dict:
    return {"webhook_endpoint_fault": await faults.set_webhook_fault(
        app, request.path_params["name"], request.path_params["id"], body)}


async def _get_webhook_fault(app: App, request: Request, body: dict) -> dict:
    return {"webhook_endpoint_fault": await faults.get_webhook_fault(
        app, request.path_params["name"], request.path_params["id"])}


async def _clear_webhook_fault(app: App, request: Request, body: dict) -> dict:
    return {"webhook_endpoint_fault": await faults.clear_webhook_fault(
        app, request.path_params["name"], request.path_params["id"])}


async def _serve(app: App, request: Request, handler: Handler, changed: Callable[[], None] | None) -> Response:
    try:
        if not admin_auth.enabled(app.config):
            raise NotFound("Sorry, we couldn't find that resource (no such URL)")
        if admin_auth.authenticate(request, app.config) is None:
            raise AuthenticationFailed("Sorry, authentication failed. Invalid admin token")
        result = await handler(app, request, await _body(request))
    except BillhiveError as exc:
        return _json(exc.to_json(), exc.http_status)
    finally:
        if changed is not None:
            changed()
    return _json(result, 200)


async def _body(request: Request) -> dict:
    raw = await read_body(request.receive, MAX_BODY, request.headers.get("content-length", "").encode() or None)
    if not raw.strip():
        return {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in seeds.YAML_TYPES:
        return seeds.parse(raw)
    if ctype != "application/json":
        raise ParamError("Content-Type must be application/json (or application/yaml)")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ParamError("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ParamError("The request body must be a JSON object")
    return body


def _opt(body: dict, name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise ParamError(f"{name} : must be a {'boolean' if kind is bool else 'string'}", param=name)
    return value


def _json(body: Any, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")

