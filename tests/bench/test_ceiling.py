"""The benchmark's reference routes (bench/ceiling.py): the whole HTTP stack, auth and parameter
decoding included, answering constant documents; billhive itself never serves them."""

from __future__ import annotations

import asyncio

import httpx

from bench import ceiling
from billhive.http.app import build


def _requests(asgi, calls):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.request(method, url, params=params, auth=auth) for method, url, params, auth in calls]
    return asyncio.run(go())


def test_ceiling_routes_go_through_auth_and_decoding(app, site):
    asgi = build(app, extra_routes=ceiling.routes())
    auth = (site.key, "")
    collect, retrieve, page, bad_filter, bad_key = _requests(asgi, [
        ("POST", "/api/v1/_bench/ceiling/draft_inv_1", None, auth),
        ("GET", "/api/v1/_bench/ceiling/draft_inv_1", None, auth),
        ("GET", "/api/v1/_bench/ceiling", {"limit": 100, "status[is]": "paid"}, auth),
        ("GET", "/api/v1/_bench/ceiling", {"status[is]": "nonsense"}, auth),
        ("GET", "/api/v1/_bench/ceiling", None, ("test_not_a_key", "")),
    ])
    assert collect.status_code == retrieve.status_code == page.status_code == 200
    assert collect.json()["invoice"]["object"] == retrieve.json()["invoice"]["object"] == "invoice"
    assert len(page.json()["list"]) == 100 and page.json()["next_offset"]
    assert bad_filter.status_code == 400 and bad_filter.json()["param"] == "status[is]"
    assert bad_key.status_code == 401


def test_ceiling_routes_are_absent_by_default(app, site):
    (r,) = _requests(build(app), [("GET", "/api/v1/_bench/ceiling", None, (site.key, ""))])
    assert r.status_code == 404
