"""Every HTTP response a test sees is checked against the spec: the status code must be one
the operation documents, and the body must validate against that status's schema."""

from __future__ import annotations

import functools
from typing import Any

import jsonschema

from billhive.http.router import Router
from billhive.http.routes import ROUTES, Route
from billhive.spec import Operation

PREFIX = "/api/v1"


@functools.lru_cache(maxsize=1)
def _router() -> Router:
    r = Router()
    for route in ROUTES:
        r.add(route.op.method, route.op.path, route)
    return r


def operation_for(method: str, path: str) -> Operation | None:
    if not path.startswith(PREFIX + "/"):
        return None
    route, _, _ = _router().match(method.upper(), path[len(PREFIX):])
    return route.op if isinstance(route, Route) else None


@functools.lru_cache(maxsize=None)
def _validator(op_id: str, status: str) -> jsonschema.protocols.Validator | None:
    from billhive import spec

    op = spec.operations().get(op_id)
    if op is None:
        for r in ROUTES:
            if r.op.operation_id == op_id:
                op = r.op
    schema = op.responses.get(status) if op else None
    if schema is None:
        return None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


@functools.lru_cache(maxsize=None)
def _error_validator(status: str) -> jsonschema.protocols.Validator:
    from billhive import spec

    return jsonschema.Draft202012Validator(spec.resource_schema(status))


class ContractError(AssertionError):
    pass


def check(method: str, path: str, status: int, body: Any) -> None:
    """Raise ContractError if (status, body) breaks the spec for this operation."""
    op = operation_for(method, path)
    if op is None:
        # unknown route (404) or method (405): must still be Chargebee's error JSON
        if status not in (404, 405) or not isinstance(body, dict):
            raise ContractError(f"{method} {path}: unknown route answered {status} {body!r}")
        _error_validator(str(status)).validate(body)
        return
    if str(status) not in op.responses:
        raise ContractError(f"{op.operation_id}: status {status} is not documented ({sorted(op.responses)}); "
                            f"body {body!r}")
    validator = _validator(op.operation_id, str(status))
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path)) if validator else []
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path)
        raise ContractError(f"{op.operation_id} {status}: {e.message} at {where or '<root>'}\nbody: {body!r}")
    if status >= 400:
        # the legacy pair the v1 SDK reads unconditionally
        for key in ("error_code", "error_msg", "http_status_code"):
            if key not in body:
                raise ContractError(f"{op.operation_id} {status}: error body lacks {key}: {body!r}")
