"""Faults on purpose (issue 14, part 5): the rules, as pure decisions.

An **operation fault rule** makes calls of one API operation (the spec's operationId, or ``*``
for every operation) wait ``latency_ms`` and/or answer an error - a status the spec documents
for every operation, with one of the ``api_error_code``\\ s and ``type``\\ s the spec lists for that
status - for the next ``times`` calls, and/or each call with ``probability`` (seeded: the n-th
counted call is struck or not whatever process serves it, see ``strikes``).

A **webhook fault** is a set of delivery modes for one endpoint: ``duplicate`` (every delivery
sent twice), ``out_of_order`` (deliveries gathered for ``window_seconds`` and sent newest
first), ``delay_seconds`` (each delivery held that long before it is sent), ``fail_first_n``
(the first N attempts of each delivery are sent but recorded as failed, so Chargebee's retry
schedule runs).

Parsing and validation live here (``rule_from_json``, ``webhook_fault_from_json``); the store
and the HTTP layer only keep and apply what these return.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billhive import spec
from billhive.errors import ParamError

ALL_OPERATIONS = "*"
MAX_LATENCY_MS = 30_000
MAX_TIMES = 1_000_000
MAX_WEBHOOK_SECONDS = 60  # delay_seconds and window_seconds
MAX_FAIL_FIRST = 8  # every attempt of a round: the first and Chargebee's 7 retries
DEFAULT_WINDOW_SECONDS = 2
MAX_MESSAGE = 500
# the statuses every v1 operation documents (the spec's responses), and what billhive answers
# for each when the rule names no code: its own code for that status
ERROR_STATUSES: dict[int, tuple[str, str]] = {
    400: ("invalid_request", "invalid_request"),
    401: ("api_authentication_failed", "untyped"),
    403: ("request_blocked", "operation_failed"),
    404: ("resource_not_found", "invalid_request"),
    405: ("http_method_not_supported", "invalid_request"),
    409: ("invalid_state_for_request", "invalid_request"),
    422: ("unable_to_process_request", "invalid_request"),
    429: ("api_request_limit_exceeded", "operation_failed"),
    500: ("internal_error", "operation_failed"),
    503: ("internal_temporary_error", "operation_failed"),
}
RULE_FIELDS = ("operation", "status", "api_error_code", "type", "message", "param", "probability", "seed",
               "times", "latency_ms")
WEBHOOK_FIELDS = ("duplicate", "out_of_order", "window_seconds", "delay_seconds", "fail_first_n")


@dataclass(frozen=True)
class Rule:
    operation: str  # operationId or "*"
    status: int | None  # None: latency only, the operation then runs
    api_error_code: str | None
    error_type: str | None
    message: str | None
    param: str | None
    probability: float | None  # None: every counted call
    seed: int
    times: int | None  # None: no limit
    latency_ms: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operation": self.operation, "latency_ms": self.latency_ms, "seed": self.seed}
        if self.status is not None:
            out.update(status=self.status, api_error_code=self.api_error_code, type=self.error_type,
                       message=self.message)
            if self.param is not None:
                out["param"] = self.param
        if self.probability is not None:
            out["probability"] = self.probability
        if self.times is not None:
            out["times"] = self.times
        return out

    def applies_to(self, operation_id: str) -> bool:
        return self.operation in (operation_id, ALL_OPERATIONS)


def error_codes(status: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The api_error_codes and types the spec documents for an error status."""
    props = spec.resource_schema(str(status))["properties"]
    return tuple(props["api_error_code"]["enum"]), tuple(props["type"]["enum"])


def default_type(status: int, code: str) -> str:
    """The type Chargebee gives a code: ``payment`` for the payment codes of 400, else the status's."""
    if status == 400 and code.startswith("payment_"):
        return "payment"
    _, types = error_codes(status)
    own = ERROR_STATUSES[status][1]
    return own if own in types else types[0]


def rule_from_json(body: Mapping[str, Any], *, operations: Mapping[str, str], seed: int) -> Rule:
    """A rule from the admin API's JSON. ``operations``: every name a rule may use for an
    operation (the operationIds served, and "METHOD /path" as the spec writes the path) to its
    operationId. ``seed``: the random seed when the body gives none. Raises ParamError naming
    the field."""
    unknown = sorted(set(body) - set(RULE_FIELDS))
    if unknown:
        raise ParamError(f"{unknown[0]} : is not a fault rule field (one of {', '.join(RULE_FIELDS)})",
                         param=unknown[0])
    op = body.get("operation")
    if not isinstance(op, str) or not op:
        raise ParamError("operation : cannot be blank (an operationId of the spec, \"METHOD /path\", or \"*\")",
                         param="operation")
    if op != ALL_OPERATIONS:
        found = operations.get(op) or operations.get(_method_path(op))
        if found is None:
            raise ParamError(f"operation : {op!r} is not an operation billhive serves", param="operation")
        op = found
    status = _opt_int(body, "status", 400, 599)
    latency = _opt_int(body, "latency_ms", 0, MAX_LATENCY_MS) or 0
    if status is None and not latency:
        raise ParamError("status : give an error status, a latency_ms, or both", param="status")
    code = error_type = message = param = None
    if status is not None:
        if status not in ERROR_STATUSES:
            raise ParamError(f"status : must be one of the statuses the spec documents for every operation "
                             f"({', '.join(map(str, ERROR_STATUSES))})", param="status")
        codes, types = error_codes(status)
        code = _opt_str(body, "api_error_code", 100) or ERROR_STATUSES[status][0]
        if code not in codes:
            raise ParamError(f"api_error_code : the spec's codes for {status} are {', '.join(codes)}",
                             param="api_error_code")
        error_type = _opt_str(body, "type", 50) or default_type(status, code)
        if error_type not in types:
            raise ParamError(f"type : the spec's types for {status} are {', '.join(types)}", param="type")
        message = _opt_str(body, "message", MAX_MESSAGE) or f"Injected fault: {code} (billhive fault rule)"
        param = _opt_str(body, "param", 200)
    else:
        for name in ("api_error_code", "type", "message", "param"):
            if body.get(name) is not None:
                raise ParamError(f"{name} : only with a status", param=name)
    probability = body.get("probability")
    if probability is not None:
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) \
                or not 0 < probability <= 1:
            raise ParamError("probability : must be a number above 0 and at most 1", param="probability")
        probability = float(probability)
    given_seed = _opt_int(body, "seed", -(2**63), 2**63 - 1)
    times = _opt_int(body, "times", 1, MAX_TIMES)
    return Rule(op, status, code, error_type, message, param, probability,
                seed if given_seed is None else given_seed, times, latency)


def rule_from_stored(operation: str, times: int | None, data: Mapping[str, Any]) -> Rule:
    return Rule(operation, data.get("status"), data.get("api_error_code"), data.get("type"), data.get("message"),
                data.get("param"), data.get("probability"), int(data["seed"]), times, int(data.get("latency_ms", 0)))


def strikes(rule: Rule, call: int) -> bool:
    """Whether the rule strikes its ``call``-th counted call (1-based; counted calls are at most
    ``times``). Deterministic in (seed, call): the same seed strikes the same calls on any
    process and any run."""
    if rule.times is not None and call > rule.times:
        return False
    if rule.probability is None:
        return True
    return random.Random(f"{rule.seed}:{call}").random() < rule.probability


def _method_path(name: str) -> str:
    method, _, path = name.strip().partition(" ")
    return f"{method.upper()} {path.strip()}"


def _opt_int(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ParamError(f"{name} : must be an integer from {low} to {high}", param=name)
    return v


def _opt_str(body: Mapping[str, Any], name: str, longest: int) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > longest:
        raise ParamError(f"{name} : must be a string of 1 to {longest} characters", param=name)
    return v


# ---- webhook delivery modes -------------------------------------------------------------------

@dataclass(frozen=True)
class WebhookFault:
    duplicate: bool = False
    out_of_order: bool = False
    window_seconds: int = DEFAULT_WINDOW_SECONDS  # out_of_order's gathering window
    delay_seconds: int = 0
    fail_first_n: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"duplicate": self.duplicate, "out_of_order": self.out_of_order}
        if self.out_of_order:
            out["window_seconds"] = self.window_seconds
        out.update(delay_seconds=self.delay_seconds, fail_first_n=self.fail_first_n)
        return out

    def hold_seconds(self) -> int:
        """The longest a claimed delivery waits before it is sent (its lease must cover it)."""
        return self.delay_seconds + (self.window_seconds if self.out_of_order else 0)

    def treated_as_failed(self, attempt_in_round: int) -> bool:
        """fail_first_n: the 1-based attempt of a delivery's round is recorded as failed."""
        return attempt_in_round <= self.fail_first_n


def webhook_fault_from_json(body: Mapping[str, Any]) -> WebhookFault:
    unknown = sorted(set(body) - set(WEBHOOK_FIELDS))
    if unknown:
        raise ParamError(f"{unknown[0]} : is not a webhook fault field (one of {', '.join(WEBHOOK_FIELDS)})",
                         param=unknown[0])
    flags = {}
    for name in ("duplicate", "out_of_order"):
        v = body.get(name, False)
        if not isinstance(v, bool):
            raise ParamError(f"{name} : must be a boolean", param=name)
        flags[name] = v
    window = _opt_int(body, "window_seconds", 1, MAX_WEBHOOK_SECONDS)
    if window is not None and not flags["out_of_order"]:
        raise ParamError("window_seconds : only with out_of_order", param="window_seconds")
    delay = _opt_int(body, "delay_seconds", 0, MAX_WEBHOOK_SECONDS) or 0
    fail = _opt_int(body, "fail_first_n", 0, MAX_FAIL_FIRST) or 0
    fault = WebhookFault(flags["duplicate"], flags["out_of_order"], window or DEFAULT_WINDOW_SECONDS, delay, fail)
    if fault == WebhookFault(window_seconds=fault.window_seconds):
        raise ParamError("duplicate : give at least one mode (duplicate, out_of_order, delay_seconds, "
                         "fail_first_n)", param="duplicate")
    return fault


def webhook_fault_from_stored(data: Mapping[str, Any] | None) -> WebhookFault | None:
    if not data:
        return None
    return WebhookFault(bool(data.get("duplicate")), bool(data.get("out_of_order")),
                        int(data.get("window_seconds") or DEFAULT_WINDOW_SECONDS), int(data.get("delay_seconds") or 0),
                        int(data.get("fail_first_n") or 0))
