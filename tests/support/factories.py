"""Objects made on a test site, as plain functions with fixed, valid defaults; and the registry the
tenant-isolation test (tests/http/test_isolation.py) uses to find "an object of site A" for every
kind of path parameter.

Adding an operation whose path takes a parameter not listed in ``ID_FACTORIES`` makes the isolation
test fail for it. Then add a function here that creates one such object on the given site -
through the site's API where an operation for it exists (``site.api.post("/customers", {...})``),
so the object is exactly what a client would get - and returns the value that goes in the path;
and register it under the spec's parameter name::

    def customer(site: TestSite) -> str:
        return site.api.post("/customers", {"first_name": "Ada", "email": "ada@example.com"})["customer"]["id"]

    ID_FACTORIES["customer-id"] = customer

A factory may call other factories (a subscription needs a plan). An operation that needs a
particular kind of object (a customer with a card) gets its own in ``OPERATION_ID_FACTORIES``. If
the operation cannot be called with its minimal spec-valid parameters
(``tests/support/spec_params.py``), say what it needs in ``ISOLATION_PARAMS`` below.
"""

from __future__ import annotations

from typing import Any, Callable

from billhive import sites
from billhive.services.context import Origin, Work
from tests.support.server import TestSite

IdFactory = Callable[[TestSite], str]


def event(site: TestSite, event_type: str = "customer_created") -> str:
    """An event of the site, recorded the way a service records one (Work.emit, in a transaction).

    No implemented operation emits events yet; once one does (create a customer), prefer it.
    """
    def unit(tx: Any) -> str:
        w = Work(tx, site.app, sites.load(tx, site.pk), Origin(user="factory"))
        return w.emit(event_type, {"customer": {"id": "cust_factory", "object": "customer",
                                                "email": "factory@example.com"}})["id"]
    return site.app.db.write_sync(unit)


# path parameter name (as the spec spells it) -> makes one object on the site, returns its id
ID_FACTORIES: dict[str, IdFactory] = {
    "event-id": event,
}

# operationId -> {path parameter -> factory}: for an operation that needs more than the generic
# object (the card operations take {customer-id} but need a customer *with a card*).
OPERATION_ID_FACTORIES: dict[str, dict[str, IdFactory]] = {}


def id_factory(operation_id: str, param: str) -> IdFactory | None:
    return OPERATION_ID_FACTORIES.get(operation_id, {}).get(param) or ID_FACTORIES.get(param)


# Path parameters that name a per-site singleton rather than a row: every site has its own object
# under the same name, so another site's key reaches its own object (200), never A's.
SITE_SINGLETONS: dict[str, str] = {
    "time-machine-name": "delorean",
}

# operationId -> the parameters to call it with on the given site, when the minimal spec-valid ones
# (required parameters only, fixed values) do not get past validation to the lookup of the path's object.
ISOLATION_PARAMS: dict[str, Callable[[TestSite], dict[str, Any]]] = {
    "travel_forward_a_time_machine": lambda site: {
        "destination_time": site.api.get("/time_machines/delorean")["time_machine"]["destination_time"] + 60},
}
