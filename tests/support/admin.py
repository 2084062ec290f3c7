"""A client of billhive's admin API (/admin/api) for the tests: every response is held to the
served /openapi.json like the v1 API's (tests/support/contract.py)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import contract
from tests.support.server import Response


class Admin:
    def __init__(self, base_url: str, token: str | None):
        self.token = token
        self.client = httpx.Client(base_url=base_url, timeout=60)

    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                headers: dict | None = None, token: str | None = "<default>", expect: int | None = 200) -> Response:
        url = "/admin/api" + path
        token = self.token if token == "<default>" else token
        hdrs = {"authorization": f"Bearer {token}"} if token else {}
        hdrs.update(headers or {})
        r = self.client.request(method, url, json=json, content=content, headers=hdrs)
        body = r.json()
        contract.check(method, url, r.status_code, body)
        if expect is not None and r.status_code != expect:
            raise AssertionError(f"{method} {url}: expected {expect}, got {r.status_code}: {body}")
        return Response(r.status_code, body, r.headers)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)
