"""Every HTTP response a test sees is held to billhive's published contract: the v1 spec plus
billhive's documented extensions (billhive/spec/extensions.py), i.e. the /openapi.json billhive
serves.

- The operation is found from the request's method and path against that document's paths (not
  through billhive's own router); the most literal template wins (``/invoices/charge`` over
  ``/invoices/{invoice-id}``).
- The status must be one the operation documents, and the body must validate against that
  status's schema *strictly*: an object the spec describes may hold only the fields the document
  lists (the spec's own schemas allow anything extra, which would let leaked internals pass).
  Free-form objects (``meta_data``, the spec's ``additionalProperties`` objects without fields)
  stay free-form.
- An event's content resources (``content.invoice``...) are held to their resources' schemas too.
- Errors carry the legacy ``error_code``/``error_msg`` pair the v1 SDK reads.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema_rs

from billhive import spec
from billhive.http.routes import ROUTES

PREFIX = spec.API_PREFIX
ADMIN_PREFIX = "/admin/api/"


class ContractError(AssertionError):
    pass


@dataclass(frozen=True)
class DocumentedOperation:
    operation_id: str
    method: str
    path: str
    statuses: frozenset[str]


@functools.lru_cache(maxsize=1)
def document() -> dict:
    """The contract: what billhive serves as /openapi.json."""
    return spec.served("http://billhive.test", {r.op.operation_id for r in ROUTES})


@functools.lru_cache(maxsize=1)
def _templates() -> list[tuple[int, str, re.Pattern, DocumentedOperation]]:
    out = []
    for path, item in document()["paths"].items():
        segments = path.strip("/").split("/")
        pattern = "/".join("[^/]+" if s.startswith("{") else re.escape(s) for s in segments)
        literal = sum(not s.startswith("{") for s in segments)
        for method, op in item.items():
            if not isinstance(op, dict) or "operationId" not in op:
                continue
            doc_op = DocumentedOperation(op["operationId"], method.upper(), path, frozenset(op.get("responses", {})))
            out.append((literal, method.upper(), re.compile(f"^/{pattern}$"), doc_op))
    out.sort(key=lambda t: -t[0])
    return out


def operation_for(method: str, path: str) -> DocumentedOperation | None:
    """The documented operation a request is for (None: no such operation)."""
    if path.startswith(PREFIX + "/"):
        rest = path[len(PREFIX):].split("?", 1)[0]
    elif path.startswith(ADMIN_PREFIX):  # the admin API's paths are documented whole (their own server)
        rest = path.split("?", 1)[0]
    else:
        return None
    for _, m, rx, op in _templates():
        if m == method.upper() and rx.match(rest):
            return op
    return None


def strict(schema: Any) -> Any:
    """The schema with every described object closed to fields it does not list."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    return schema


def _compile(schema: dict) -> jsonschema.protocols.Validator:
    schema = strict(spec.resolve(schema, document()))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema)
    _FAST[id(validator)] = (validator, jsonschema_rs.validator_for(schema))
    return validator


# The same schemas compiled by jsonschema-rs (Rust; a fraction of jsonschema's CPU per body), by the
# id of jsonschema's validator (kept here, so the id is never reused): a body it finds valid passes at
# once; any other is judged by jsonschema, whose first error the message quotes. Both validate the
# same 2020-12 keywords without format assertions; on the run of tests/http (1,930 tests) no body that
# jsonschema-rs passed had a jsonschema error, and tests/test_contract_check.py's known-bad bodies are
# refused by both.
_FAST: dict[int, tuple[jsonschema.protocols.Validator, Any]] = {}


@functools.cache
def _response_validator(method: str, path: str, status: str) -> jsonschema.protocols.Validator | None:
    op = document()["paths"][path][method.lower()]
    content = (op["responses"].get(status, {}).get("content") or {}).get("application/json")
    return _compile(content["schema"]) if content else None


@functools.cache
def _error_validator(status: str) -> jsonschema.protocols.Validator:
    return _compile({"$ref": f"#/components/schemas/{status}"})


@functools.cache
def resource_validator(key: str) -> jsonschema.protocols.Validator | None:
    """The strict validator of a resource by its response key (``invoice`` -> Invoice)."""
    name = "".join(part.capitalize() for part in key.split("_"))
    if name not in document()["components"]["schemas"]:
        return None
    return _compile({"$ref": f"#/components/schemas/{name}"})


def _first_error(validator: jsonschema.protocols.Validator, body: Any) -> str | None:
    fast = _FAST.get(id(validator))
    if fast is not None and fast[1].is_valid(body):
        return None
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    e = errors[0]
    where = "/".join(str(p) for p in e.absolute_path)
    return f"{e.message} at {where or '<root>'}"


def _events(body: Any) -> list[dict]:
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("event"), dict):
        return [body["event"]]
    return [entry["event"] for entry in body.get("list") or () if isinstance(entry, dict)
            and isinstance(entry.get("event"), dict)]


@functools.cache
def _content_validator(event_type: str) -> jsonschema.protocols.Validator | None:
    """The event type's content as the spec's webhook payload describes it (``customer_deleted``:
    customer, card, subscriptions), each resource strict. Which resources are present varies with
    the state (no card, no subscription), so the payload's ``required`` list is not held."""
    hook = document().get("webhooks", {}).get(event_type)
    if hook is None:
        return None
    body = hook["post"]["requestBody"]["content"]["application/json"]["schema"]
    content = dict(spec.resolve(body, document())["properties"]["content"])
    content.pop("required", None)
    return _compile(content)


def check_event_content(event: dict) -> None:
    """An event's content holds the resources its type's webhook payload lists, as the API shows them."""
    content = event.get("content")
    where = f"event {event.get('id')} ({event.get('event_type')})"
    if not isinstance(content, dict):
        raise ContractError(f"{where}: content is not an object")
    validator = _content_validator(str(event.get("event_type")))
    if validator is None:
        raise ContractError(f"{where}: no webhook payload is documented for this event type")
    problem = _first_error(validator, content)
    if problem:
        raise ContractError(f"{where}: content: {problem}")


def check(method: str, path: str, status: int, body: Any) -> None:
    """Raise ContractError if (status, body) breaks the contract for this request."""
    op = operation_for(method, path)
    if op is None:
        # unknown route (404) or method (405): must still be Chargebee's error JSON
        if status not in (404, 405) or not isinstance(body, dict):
            raise ContractError(f"{method} {path}: unknown route answered {status} {body!r}")
        problem = _first_error(_error_validator(str(status)), body)
        if problem:
            raise ContractError(f"{method} {path} {status}: {problem}\nbody: {body!r}")
        return
    if str(status) not in op.statuses:
        raise ContractError(f"{op.operation_id}: status {status} is not documented ({sorted(op.statuses)}); "
                            f"body {body!r}")
    validator = _response_validator(op.method, op.path, str(status))
    problem = _first_error(validator, body) if validator else None
    if problem:
        raise ContractError(f"{op.operation_id} {status}: {problem}\nbody: {body!r}")
    if status >= 400:
        # the legacy pair the v1 SDK reads unconditionally
        for key in ("error_code", "error_msg", "http_status_code"):
            if key not in body:
                raise ContractError(f"{op.operation_id} {status}: error body lacks {key}: {body!r}")
        return
    for event in _events(body):
        check_event_content(copy.deepcopy(event))
