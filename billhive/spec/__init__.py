"""The Chargebee API v1 OpenAPI document, and what billhive derives from it.

The spec file is the packaged copy of ../shared/chargebee-api-v1/openapi.json (MIT,
LICENSE-chargebee-openapi beside it). Parameter validation, response field lists,
enums and the served /openapi.json are all derived from it at start-up; nothing
about the wire contract is hand-copied.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billhive.spec import extensions

SPEC_PATH = Path(__file__).with_name("openapi.json")

# Headers billhive reads itself; they are described by the spec on every operation
# but are not request parameters.
REQUEST_ORIGIN_HEADERS = (
    "chargebee-request-origin-user",
    "chargebee-request-origin-user-encoded",
    "chargebee-request-origin-ip",
    "chargebee-request-origin-device",
)
API_PREFIX = "/api/v1"
EVENT_SKIP_HEADERS = ("chargebee-event-actions", "chargebee-event-webhook", "chargebee-event-email")


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str  # upper case
    path: str  # as in the spec, e.g. /invoices/{invoice-id}/collect
    path_params: tuple[str, ...]
    query_params: dict[str, dict]  # name -> resolved schema (an object's own "required" list intact)
    body_schema: dict | None  # resolved form body schema
    body_encoding: dict
    responses: dict[str, dict]  # status -> resolved JSON schema
    header_params: tuple[str, ...] = field(default=())
    summary: str = ""
    required_query: tuple[str, ...] = ()  # query parameters the operation requires
    extension: bool = False  # a billhive operation beyond the v1 spec (spec/extensions.py)

    @property
    def is_list(self) -> bool:
        schema = self.responses.get("200") or {}
        return "list" in (schema.get("properties") or {})

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    @property
    def resource_names(self) -> tuple[str, ...]:
        """Resource keys the 200 response may carry (e.g. ('invoice', 'customer'))."""
        schema = self.responses.get("200") or {}
        props = schema.get("properties") or {}
        if "list" in props:
            props = props["list"]["items"].get("properties") or {}
        return tuple(props)


@functools.lru_cache(maxsize=1)
def raw() -> dict:
    with SPEC_PATH.open("rb") as fh:
        return json.load(fh)


def resolve(node: Any, root: dict | None = None) -> Any:
    """Return a deep copy of node with every $ref replaced by its target."""
    root = root or raw()

    def walk(n: Any) -> Any:
        if isinstance(n, dict):
            if "$ref" in n and isinstance(n["$ref"], str) and n["$ref"].startswith("#/"):
                target: Any = root
                for part in n["$ref"][2:].split("/"):
                    target = target[part]
                merged = {k: v for k, v in n.items() if k != "$ref"}
                resolved = walk(target)
                if isinstance(resolved, dict):
                    return {**merged, **resolved}
                return resolved
            return {k: walk(v) for k, v in n.items()}
        if isinstance(n, list):
            return [walk(x) for x in n]
        return n

    return walk(node)


@functools.lru_cache(maxsize=1)
def operations() -> dict[str, Operation]:
    """The v1 spec's operations, by operationId."""
    return _operations(raw(), extension=False)


@functools.lru_cache(maxsize=1)
def extension_operations() -> dict[str, Operation]:
    """billhive's operations beyond the v1 spec (spec/extensions.py), by operationId."""
    return _operations(extended(), extension=True)


def _operations(doc: dict, *, extension: bool) -> dict[str, Operation]:
    ops: dict[str, Operation] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            if bool(op.get("x-billhive-extension")) != extension:
                continue  # the extended document holds the v1 operations too
            params = [resolve(p, doc) for p in op.get("parameters", [])]
            query = {}
            for p in params:
                if p.get("in") == "query":
                    # the parameter's required flag is kept apart: a deepObject parameter's schema
                    # has its own "required" list (subscription[plan_id] when subscription[...] is given)
                    query[p["name"]] = p["schema"]
            required_query = tuple(p["name"] for p in params if p.get("in") == "query" and p.get("required"))
            path_params = tuple(p["name"] for p in params if p.get("in") == "path")
            headers = tuple(p["name"] for p in params if p.get("in") == "header")
            body = None
            encoding: dict = {}
            rb = op.get("requestBody")
            if rb:
                form = rb["content"]["application/x-www-form-urlencoded"]
                body = resolve(form["schema"], doc)
                encoding = form.get("encoding", {})
            responses = {}
            for status, resp in op.get("responses", {}).items():
                content = (resp.get("content") or {}).get("application/json")
                if content:
                    responses[status] = resolve(content["schema"], doc)
            ops[op["operationId"]] = Operation(
                operation_id=op["operationId"],
                method=method.upper(),
                path=path,
                path_params=path_params,
                query_params=query,
                body_schema=body,
                body_encoding=encoding,
                responses=responses,
                header_params=headers,
                summary=op.get("summary", ""),
                required_query=required_query,
                extension=extension,
            )
    return ops


@functools.lru_cache(maxsize=1)
def extended() -> dict:
    """The v1 spec with billhive's extensions (spec/extensions.py): its operations added, its
    resource fields and error fields in the component schemas, ``object`` on every object a
    resource holds. What billhive serves as /openapi.json (restricted to what it implements)."""
    doc = copy.deepcopy(raw())
    schemas = doc["components"]["schemas"]
    for name, schema in schemas.items():
        if name.isdigit():  # the error bodies: 400, 401, ...
            schema.setdefault("properties", {}).update(copy.deepcopy(extensions.ERROR_FIELDS))
        elif schema.get("type") == "object" and "properties" in schema:
            _add_object_field(schema)
    for name, fields in extensions.FIELDS.items():
        schemas[name]["properties"].update(copy.deepcopy(fields))
    for name, schema in extensions.SCHEMAS.items():
        schemas[name] = copy.deepcopy(schema)
    for path, item in extensions.OPERATIONS.items():
        doc["paths"].setdefault(path, {}).update(copy.deepcopy(item))
    return doc


def _add_object_field(schema: dict) -> None:
    """``object`` on the schema and every object (or array of objects) it holds."""
    props = schema.get("properties")
    if props is None:
        return
    props.setdefault("object", dict(extensions.OBJECT_FIELD))
    for prop in props.values():
        target = prop.get("items") if prop.get("type") == "array" else prop
        if isinstance(target, dict) and target.get("type") == "object":
            _add_object_field(target)


def served(base_url: str, implemented: set[str]) -> dict:
    """billhive's /openapi.json: the extended spec restricted to the ``implemented`` operations,
    with billhive's URL as the server."""
    doc = extended()
    paths: dict[str, Any] = {}
    for path, item in doc["paths"].items():
        kept = {m: op for m, op in item.items() if isinstance(op, dict) and op.get("operationId") in implemented}
        if kept:
            paths[path] = kept
    out = {k: v for k, v in doc.items() if k not in ("paths", "servers")}
    # billhive's admin API, outside /api/v1: each of its paths names its own server
    for path, item in extensions.ADMIN_OPERATIONS.items():
        paths[path] = {**copy.deepcopy(item), "servers": [{"url": base_url.rstrip("/")}]}
    out["components"] = {**out["components"], "securitySchemes": {
        **out["components"].get("securitySchemes", {}), **extensions.ADMIN_SECURITY}}
    out["paths"] = paths
    out["servers"] = [{"url": base_url.rstrip("/") + API_PREFIX}]
    return out


@functools.cache
def resource_schema(name: str) -> dict:
    """Resolved component schema for a resource, e.g. resource_schema('Invoice')."""
    return resolve(raw()["components"]["schemas"][name])


@functools.cache
def resource_fields(name: str) -> tuple[str, ...]:
    return tuple(resource_schema(name).get("properties", {}))


@functools.cache
def enum_values(schema_name: str, prop: str) -> tuple[str, ...]:
    """Enum of a resource property, e.g. enum_values('Invoice', 'status')."""
    return tuple(resource_schema(schema_name)["properties"][prop].get("enum", ()))


def event_types() -> tuple[str, ...]:
    return tuple(raw()["components"]["schemas"]["Event"]["properties"]["event_type"]["enum"])


def webhook_event_types() -> tuple[str, ...]:
    return tuple(raw().get("webhooks", {}))
