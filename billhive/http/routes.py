"""The route table: every API operation billhive serves, by the spec's operationId.

Method and path come from the spec; this table says which service function answers.
To find the code for a URL: look the URL up in the spec (or below), then open
``billhive/services/<resource>.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from billhive import spec
from billhive.services import events, time_machines
from billhive.spec import Operation
from billhive.store.docs import DocTable


@dataclass(frozen=True)
class Route:
    op: Operation
    fn: Callable[..., Awaitable[dict]]
    list_table: DocTable | None = None  # list operations: the table whose fields can be filtered
    in_spec: bool = True  # False: a billhive extension, not part of the v1 spec


def api(operation_id: str, fn: Callable[..., Awaitable[dict]], list_table: DocTable | None = None) -> Route:
    return Route(spec.operations()[operation_id], fn, list_table)


def _extra(operation_id: str, method: str, path: str, fn: Callable[..., Awaitable[dict]],
           body: dict | None = None, required: tuple[str, ...] = (), response: str | None = None) -> Route:
    """An operation beyond the v1 spec (documented in the README)."""
    path_params = tuple(seg[1:-1] for seg in path.split("/") if seg.startswith("{"))
    body_schema = {"type": "object", "properties": body or {}, "required": list(required)} if method == "POST" else None
    responses = {"200": {"type": "object", "properties": {response: {"type": "object"}} if response else {},
                         "required": [response] if response else []}}
    for status in ("400", "401", "403", "404", "405", "409", "422", "429", "500"):
        responses[status] = spec.resource_schema(status)
    op = Operation(operation_id, method, path, path_params, {}, body_schema, {}, responses)
    return Route(op, fn, None, in_spec=False)


_UNIX_TIME = {"type": "integer", "format": "unix-time", "minimum": 0}

ROUTES: list[Route] = [
    # events
    api("list_events", events.list_events, events.EVENTS),
    api("retrieve_an_event", events.retrieve),
    _extra("resend_an_event", "POST", "/events/{event-id}/resend", events.resend, response="event"),
    # time machine (test sites; Chargebee v2's API on v1 URLs)
    _extra("retrieve_a_time_machine", "GET", "/time_machines/{time-machine-name}", time_machines.retrieve,
           response="time_machine"),
    _extra("start_afresh_a_time_machine", "POST", "/time_machines/{time-machine-name}/start_afresh",
           time_machines.start_afresh, body={"genesis_time": _UNIX_TIME}, response="time_machine"),
    _extra("travel_forward_a_time_machine", "POST", "/time_machines/{time-machine-name}/travel_forward",
           time_machines.travel_forward, body={"destination_time": _UNIX_TIME}, required=("destination_time",),
           response="time_machine"),
]


def implemented_operation_ids() -> set[str]:
    return {r.op.operation_id for r in ROUTES if r.in_spec}


def extension_routes() -> list[Route]:
    return [r for r in ROUTES if not r.in_spec]

