"""Chargebee form parameters: bracket keys decoded into typed values, validated from the spec.

Wire shapes (all that the v1 spec uses):
    plan_id=basic                      scalar
    plan_ids[0]=a&plan_ids[1]=b        top-level list of scalars
    card[number]=4111...               object of scalars            -> {"card": {"number": ...}}
    addons[id][0]=x&addons[quantity][0]=2
                                       object whose fields are lists -> {"addons": [{"id": "x", "quantity": 2}]}
    meta_data={"k": "v"}  or  meta_data[k]=v
                                       free-form object (JSON text or brackets)

Each operation's decoder is compiled once from its schema. Errors name the parameter in
bracket form (``addons[quantity][0]``), as Chargebee does.

Bounds beyond the spec's own (docs/CHOICES.md, "Limits"): amounts (the spec's int64 integers,
which have no maximum) at most ``money.MAX_AMOUNT``; timestamps (unix-time) within years
1970-9999; free-form JSON (``meta_data``) at most ``MAX_JSON_DEPTH`` levels deep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import orjson

from billhive.domain.money import MAX_AMOUNT
from billhive.errors import ParamError, ParamRequired
from billhive.util.bounds import INT32, INT64, UNIX_TIME, parse_int

_KEY = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[([A-Za-z0-9_.\-]+)\])?(?:\[(\d+)\])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_NUM = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")

MAX_LIST_INDEX = 250  # Chargebee caps list params far below this
MAX_JSON_DEPTH = 32  # objects/arrays nested in a free-form JSON parameter (meta_data)


@dataclass(frozen=True)
class Scalar:
    """A typed leaf: string / integer / number / boolean with the spec's constraints."""

    type: str
    enum: tuple | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    fmt: str | None = None
    default: Any = None

    @classmethod
    def from_schema(cls, s: dict) -> Scalar:
        fmt, minimum, maximum = s.get("format"), s.get("minimum"), s.get("maximum")
        if s.get("type") == "integer" and fmt == "int64" and maximum is None:
            maximum = MAX_AMOUNT  # the v1 spec's int64 parameters are amounts in minor units
        if fmt == "unix-time":
            minimum = UNIX_TIME[0] if minimum is None else minimum
            maximum = UNIX_TIME[1] if maximum is None else maximum
        return cls(
            type=s.get("type", "string"),
            enum=tuple(s["enum"]) if s.get("enum") else None,
            max_length=s.get("maxLength"),
            minimum=minimum,
            maximum=maximum,
            fmt=fmt,
            default=s.get("default"),
        )

    def convert(self, raw: str, param: str) -> Any:
        t = self.type
        if t == "string":
            value: Any = raw
            if self.max_length is not None and len(raw) > self.max_length:
                raise ParamError(f"{param} : cannot be more than {self.max_length} characters", param=param)
            if self.enum is not None and raw not in self.enum:
                raise ParamError(f"{param} : invalid value {raw!r}; allowed: {', '.join(self.enum)}", param=param)
            if self.fmt == "email" and not _EMAIL.match(raw):
                raise ParamError(f"{param} : invalid email address", param=param)
            return value
        if t == "integer":
            value = parse_int(raw, param, INT32 if self.fmt == "int32" else INT64)
        elif t == "number":
            if not _NUM.match(raw):
                raise ParamError(f"{param} : invalid number {raw!r}", param=param)
            value = float(raw)
        elif t == "boolean":
            low = raw.lower()
            if low == "true":
                return True
            if low == "false":
                return False
            raise ParamError(f"{param} : invalid boolean value {raw!r}; use true or false", param=param)
        else:  # pragma: no cover - the spec has no other leaf types
            raise ParamError(f"{param} : unsupported parameter type", param=param)
        if self.minimum is not None and value < self.minimum:
            raise ParamError(f"{param} : cannot be less than {_num(self.minimum)}", param=param)
        if self.maximum is not None and value > self.maximum:
            raise ParamError(f"{param} : cannot be more than {_num(self.maximum)}", param=param)
        if self.enum is not None and value not in self.enum:
            raise ParamError(f"{param} : invalid value", param=param)
        return value


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether objects/arrays in ``value`` nest at most ``limit`` levels (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


@dataclass
class Field:
    name: str
    kind: str  # scalar | list | object | object_list | free
    scalar: Scalar | None = None
    subs: dict[str, Field] = field(default_factory=dict)
    required: bool = False
    sub_required: tuple[str, ...] = ()


def _leaf(name: str, schema: dict, required: bool) -> Field:
    t = schema.get("type")
    if t == "array":
        return Field(name, "list", Scalar.from_schema(schema.get("items", {})), required=required)
    if t == "object":
        props = schema.get("properties")
        if not props:
            return Field(name, "free", required=required)
        subs = {k: _leaf(k, v, False) for k, v in props.items()}
        kind = "object_list" if all(s.kind == "list" for s in subs.values()) else "object"
        return Field(name, kind, subs=subs, required=required, sub_required=tuple(schema.get("required", ())))
    return Field(name, "scalar", Scalar.from_schema(schema), required=required)


class Decoder:
    """Decodes one operation's form or query parameters into plain Python values."""

    def __init__(self, properties: dict[str, dict], required: tuple[str, ...] = ()):
        self.fields = {k: _leaf(k, v, k in required) for k, v in properties.items()}

    def decode(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        """pairs: (key, value) from the wire, already percent-decoded (list filters already taken
        out: http/app.py ``_list_request``); anything undeclared is an error."""
        out: dict[str, Any] = {}
        seen: set[str] = set()
        lists: dict[str, dict[int, Any]] = {}
        obj_lists: dict[str, dict[int, dict]] = {}
        for key, raw in pairs:
            if key in seen:
                raise ParamError(f"{key} : is specified more than once", param=key)
            seen.add(key)
            m = _KEY.match(key)
            if not m:
                raise ParamError(f"{key} : is not a valid parameter name", param=key)
            top, sub, idx = m.group(1), m.group(2), m.group(3)
            f = self.fields.get(top)
            if f is None:
                raise ParamError(f"{key} : is not a known parameter for this operation", param=key)
            if raw == "":
                # The SDKs send None as an empty value: treat it as not given.
                continue
            if f.kind == "scalar":
                if sub is not None or idx is not None:
                    raise ParamError(f"{key} : is not a known parameter for this operation", param=key)
                out[top] = f.scalar.convert(raw, key)
            elif f.kind == "list":
                if sub is not None and idx is None and sub.isdigit():
                    idx, sub = sub, None
                if sub is not None or idx is None:
                    raise ParamError(f"{key} : expected {top}[<index>]", param=key)
                i = _index(idx, key)
                lists.setdefault(top, {})[i] = f.scalar.convert(raw, key)
            elif f.kind == "object":
                if sub is None or idx is not None or sub not in f.subs or f.subs[sub].kind != "scalar":
                    raise ParamError(f"{key} : is not a known parameter for this operation", param=key)
                out.setdefault(top, {})[sub] = f.subs[sub].scalar.convert(raw, key)
            elif f.kind == "object_list":
                if sub is None or idx is None or sub not in f.subs:
                    raise ParamError(f"{key} : is not a known parameter for this operation", param=key)
                i = _index(idx, key)
                obj_lists.setdefault(top, {}).setdefault(i, {})[sub] = f.subs[sub].scalar.convert(raw, key)
            else:  # free-form object: JSON text, or one level of brackets
                if sub is None and idx is None:
                    try:
                        value = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        raise ParamError(f"{key} : must be a JSON object", param=key) from None
                    if not isinstance(value, dict):
                        raise ParamError(f"{key} : must be a JSON object", param=key)
                    if not json_depth_ok(value):
                        raise ParamError(f"{key} : JSON nested more than {MAX_JSON_DEPTH} levels deep", param=key)
                    out[top] = value
                elif sub is not None and idx is None:
                    out.setdefault(top, {})[sub] = raw
                else:
                    raise ParamError(f"{key} : is not a valid parameter name", param=key)
        for top, items in lists.items():
            out[top] = [items[i] for i in sorted(items)]
        for top, items in obj_lists.items():
            f = self.fields[top]
            rows = []
            for i in sorted(items):
                row = items[i]
                for req in f.sub_required:
                    if req not in row:
                        raise ParamRequired(f"{top}[{req}][{i}] : cannot be blank", param=f"{top}[{req}][{i}]")
                rows.append(row)
            out[top] = rows
        for name, f in self.fields.items():
            if f.required and name not in out and not (name in TOKEN_REPLACES and "tmp_token" in out):
                raise ParamRequired(f"{name} : cannot be blank", param=name)
            if f.kind == "object":
                # an object with required fields is itself required (Chargebee: "transaction[date] : cannot be blank");
                # checked in the spec's parameter order
                for req in [k for k in f.subs if k in f.sub_required]:
                    if req not in out.get(name, ()):
                        raise ParamRequired(f"{name}[{req}] : cannot be blank", param=f"{name}[{req}]")
        return out


# A gateway's card token stands for the card details the spec otherwise requires (update_card_for_a_customer:
# tmp_token "If this value is specified, there is no need to specify other card details (like number, cvv, etc)")
TOKEN_REPLACES = frozenset({"number", "expiry_month", "expiry_year"})


def _index(idx: str, key: str) -> int:
    i = int(idx)
    if i > MAX_LIST_INDEX:
        raise ParamError(f"{key} : index too large", param=key)
    return i


def parse_pairs(body: bytes | str) -> list[tuple[str, str]]:
    """Split an application/x-www-form-urlencoded body (or query string) into pairs.

    Strict: malformed percent-escapes or invalid UTF-8 are a 400, not silently replaced.
    """
    if isinstance(body, bytes):
        try:
            body = body.decode("ascii")
        except UnicodeDecodeError:
            raise ParamError("request body is not valid application/x-www-form-urlencoded data") from None
    if not body:
        return []
    if _BAD_ESCAPE.search(body):
        raise ParamError("request body has a malformed percent-escape")
    pairs = []
    for part in body.split("&"):
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
        else:
            k, v = part, ""
        try:
            k = unquote_plus(k, errors="strict")
            v = unquote_plus(v, errors="strict")
        except UnicodeDecodeError:
            raise ParamError("request body is not valid UTF-8 form data") from None
        if not k:
            raise ParamError("request body has a parameter without a name")
        if "\x00" in k or "\x00" in v:
            # PostgreSQL text cannot hold NUL; refuse it on every backend alike
            name = k.replace("\x00", "")
            raise ParamError(f"{name} : cannot contain the NUL character", param=name)
        pairs.append((k, v))
    return pairs
