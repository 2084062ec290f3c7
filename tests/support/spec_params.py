"""The smallest valid parameters of an operation, derived from the spec, in Chargebee's form encoding.

``minimal_params(op)`` gives every required parameter (and, inside objects, every required
sub-parameter) a fixed valid value: the first enum value, a number inside the bounds, a
short string within ``maxLength``, an e-mail address for ``format: email``. ``form(params)``
flattens them the way the SDK does (``card[number]``, ``addons[id][0]``, ``plan_ids[0]``).
Used where a test must call an operation generically (tenant isolation, conformance seeding);
business rules (a plan that must exist, an amount that must be positive) are not known here.
"""

from __future__ import annotations

from typing import Any

from billhive.spec import Operation

STRING = "conf"
EMAIL = "conformance@example.com"


def scalar(schema: dict) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    t = schema.get("type", "string")
    if t == "boolean":
        return True
    if t in ("integer", "number"):
        value = 1
        if schema.get("minimum") is not None and value < schema["minimum"]:
            value = schema["minimum"]
        if schema.get("maximum") is not None and value > schema["maximum"]:
            value = schema["maximum"]
        return int(value) if t == "integer" else value
    if schema.get("format") == "email":
        return EMAIL
    return STRING[: schema.get("maxLength") or len(STRING)]


def value(schema: dict) -> Any:
    """A minimal valid value for one (top-level) parameter schema."""
    t = schema.get("type")
    if t == "array":
        return [scalar(schema.get("items") or {})]
    if t == "object":
        props = schema.get("properties") or {}
        if not props:  # free-form (meta_data): one bracket key
            return {STRING: STRING}
        required = schema.get("required") or []
        if all((p.get("type") == "array") for p in props.values()):  # addons[id][0]: a list of objects
            return [{k: scalar(props[k].get("items") or {}) for k in required}]
        return {k: scalar(props[k]) for k in required}
    return scalar(schema)


def required_schemas(op: Operation) -> dict[str, dict]:
    if op.method == "GET":
        return {k: op.query_params[k] for k in op.required_query}
    body = op.body_schema or {}
    props = body.get("properties") or {}
    return {k: props[k] for k in body.get("required") or ()}


def minimal_params(op: Operation, **overrides: Any) -> dict[str, Any]:
    params = {name: value(schema) for name, schema in required_schemas(op).items()}
    params.update(overrides)
    return params


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def form(params: dict[str, Any]) -> dict[str, str]:
    """Flatten nested params into Chargebee's bracket form keys."""
    out: dict[str, str] = {}
    for key, v in params.items():
        if isinstance(v, dict):
            for sub, x in v.items():
                out[f"{key}[{sub}]"] = _text(x)
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    for sub, x in item.items():
                        out[f"{key}[{sub}][{i}]"] = _text(x)
                else:
                    out[f"{key}[{i}]"] = _text(item)
        elif v is not None:
            out[key] = _text(v)
    return out
