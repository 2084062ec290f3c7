"""Tenant isolation, for every implemented operation whose path takes an id (derived from ROUTES).

Site B's key on an object of site A answers 404 resource_not_found - with B's host and with a host
that names no site (the key picks the site) - and nothing of A's changes: every row of every table
that holds A's data is compared before and after. B's key with A's host is 401. A's own key then
finds the object, so the 404 is isolation and not a factory's bad id.

Path parameters that name a per-site singleton (the time machine ``delorean``) reach B's own
object instead: those calls must succeed, and A must still be untouched.

Objects of A come from ``tests/support/factories.py``: ``ID_FACTORIES`` keyed by the spec's path
parameter name. An implemented operation whose path parameter has no factory FAILS here; add the
factory (see that module's docstring).

Site A, with one object of every kind to watch, is made once per module and backend (``site_a``):
B's calls only read it, and every case snapshots A's rows again right before and after them. The
object in each case's path is made fresh for the case, since A's own key (last) may change it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import bindparam, select

from billhive.http.routes import ROUTES, Route
from billhive.spec import Operation
from billhive.store import schema as S
from billhive.store.db import Q
from tests.support.factories import ID_FACTORIES, ISOLATION_PARAMS, SITE_SINGLETONS, id_factory
from tests.support.server import Api, LiveServer, Response, new_site
from tests.support.server import TestSite as Site
from tests.support.spec_params import form, minimal_params

ID_ROUTES = [r for r in ROUTES if r.op.path_params]


# every row of a site: its sites row and its rows in every table keyed by site_id (compiled once)
SITE_ROWS = {t.name: Q(select(t).where(t.c.pk == bindparam("site")) if t.name == "sites" else
                       select(t).where(t.c.site_id == bindparam("site")).order_by(*t.primary_key.columns))
             for t in S.metadata.sorted_tables}


def snapshot(site: Site) -> dict[str, list[tuple]]:
    """Every row of the site, by table."""
    def read(tx: Any) -> dict[str, list[tuple]]:
        return {name: [tuple(row) for row in tx.all(q, {"site": site.pk})] for name, q in SITE_ROWS.items()}
    return site.app.db.read_sync(read)


def params_for(op: Operation, site: Site) -> dict[str, str]:
    make = ISOLATION_PARAMS.get(op.operation_id)
    return form(make(site) if make else minimal_params(op))


def call(client: Api, op: Operation, path: str, site: Site) -> Response:
    params = params_for(op, site)
    if op.method == "GET":
        return client.request("GET", path, params=params, expect=None)
    return client.request(op.method, path, data=params, expect=None)


def is_not_found(r: Response) -> bool:
    return r.status == 404 and r.body.get("api_error_code") == "resource_not_found"


def test_every_table_but_sites_is_keyed_by_site():
    # the snapshot below (and invariant 6) rely on it
    assert [t.name for t in S.metadata.sorted_tables if t.name != "sites" and "site_id" not in t.c] == []


def test_id_taking_operations_are_found():
    # today's operations; guards the parametrization below from silently collecting nothing
    assert {"retrieve_an_event", "retrieve_a_time_machine"} <= {r.op.operation_id for r in ID_ROUTES}


@pytest.fixture(scope="module")
def site_a(server: LiveServer) -> Site:
    """Site A with one object of every kind, so that there is something to watch (once per module and
    backend; the cases add their own objects to it)."""
    a = new_site(server)
    for factory in ID_FACTORIES.values():
        factory(a)
    return a


@pytest.mark.parametrize("route", ID_ROUTES, ids=lambda r: r.op.operation_id)
def test_another_sites_key_neither_reaches_nor_changes_an_object(route: Route, server, site_a, make_site):
    op = route.op
    missing = [p for p in op.path_params if id_factory(op.operation_id, p) is None and p not in SITE_SINGLETONS]
    if missing:
        pytest.fail(f"{op.operation_id} ({op.method} {op.path}) takes {', '.join(f'{{{p}}}' for p in missing)}, "
                    f"and tests/support/factories.py has no factory for it: add a function that creates one "
                    f"on a site (through its API) and returns the id, and register it in ID_FACTORIES")
    a, b = site_a, make_site()
    path = op.path
    for p in op.path_params:
        factory = id_factory(op.operation_id, p)
        value = factory(a) if factory is not None else SITE_SINGLETONS[p]
        path = path.replace(f"{{{p}}}", quote(value, safe=""))
    singleton_only = all(p in SITE_SINGLETONS for p in op.path_params)
    before = snapshot(a)

    for how, client in (("B's key and host", b.api),
                        ("B's key, no site in the host", Api(server, b.name, b.key, use_host=False))):
        r = call(client, op, path, b)
        if singleton_only:
            assert r.status == 200, (f"{op.operation_id} with {how} on B's own {path}: {r.status} {r.body} "
                                     f"(if the parameters are the problem, set ISOLATION_PARAMS)")
        else:
            assert is_not_found(r), (f"{op.operation_id} with {how} on A's {path}: expected 404 "
                                     f"resource_not_found, got {r.status} {r.body} (if the parameters were "
                                     f"rejected before the lookup, set ISOLATION_PARAMS[{op.operation_id!r}])")
    r = call(Api(server, a.name, b.key), op, path, b)
    assert r.status == 401 and r["api_error_code"] == "api_authentication_failed", r

    after = snapshot(a)
    changed = [t for t in before if before[t] != after[t]]
    assert not changed, f"{op.operation_id} with site B's key changed site A's rows in {changed}"

    if not singleton_only:
        r = call(a.api, op, path, a)
        assert not (is_not_found(r) and "param" not in r.body), (
            f"{op.operation_id} with A's own key does not find {path} either ({r.body}): the factory's id is "
            f"not an object of A, so the 404 above proves nothing")
