"""A real billhive server on 127.0.0.1 (uvicorn in a thread) and an HTTP client for tests.

Every response goes through ``contract.check``: a test cannot see a response that breaks
the spec without failing.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from billhive import sites
from billhive.http.app import build
from billhive.runtime import App
from billhive.work.context import Ctx, Origin
from billhive.worker import run_background
from tests.support import contract

# One TLS context for every synchronous httpx client in the test process: httpx builds one (loading the
# CA bundle) per client, ~25 ms of CPU, and tests make thousands (one per site and key; httpx.get() is a
# client per call). Same settings as httpx's default; billhive's own (async) clients are left alone.
TLS = httpx.create_ssl_context()
_transport_init = httpx.HTTPTransport.__init__


@functools.wraps(_transport_init)
def _shared_tls_init(self: httpx.HTTPTransport, verify: Any = True, cert: Any = None, trust_env: bool = True,
                     **kwargs: Any) -> None:
    if verify is True and cert is None and trust_env:
        verify = TLS
    _transport_init(self, verify, cert, trust_env, **kwargs)


httpx.HTTPTransport.__init__ = _shared_tls_init  # type: ignore[method-assign]


class LiveServer:
    def __init__(self, app: App, *, background: bool = True):
        self.app = app
        self.asgi = build(app, background=run_background if background else None)
        # the server gets the socket already bound: no other process (a parallel test worker) can take
        # the port between choosing it and listening on it. IPPROTO_TCP, so that asyncio sets TCP_NODELAY
        # on its connections as it does on sockets it makes itself (else each response waits ~40 ms on
        # delayed ACKs)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app.config.port = self.port
        config = uvicorn.Config(self.asgi, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", loop="asyncio", http="h11")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="billhive-test-server", daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Response:
    def __init__(self, status: int, body: Any, headers: httpx.Headers):
        self.status = status
        self.body = body
        self.headers = headers

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body!r}>"


class Api:
    """HTTP client bound to one site and key; checks every response against the spec."""

    def __init__(self, server: LiveServer, site_name: str, key: str | None, *, use_host: bool = True):
        self.server = server
        self.site_name = site_name
        self.key = key
        self.use_host = use_host
        self.client = httpx.Client(base_url=server.base_url, timeout=60)

    def with_key(self, key: str | None) -> Api:
        return Api(self.server, self.site_name, key, use_host=self.use_host)

    def request(self, method: str, path: str, *, params: Any = None, data: Any = None, content: bytes | None = None,
                headers: dict | None = None, expect: int | None = 200) -> Response:
        url = "/api/v1" + path
        hdrs = {}
        if self.use_host:
            hdrs["Host"] = f"{self.site_name}.localhost:{self.server.port}"
        if headers:
            hdrs.update(headers)
        auth = (self.key, "") if self.key is not None else None
        r = self.client.request(method, url, params=params, data=data, content=content, headers=hdrs, auth=auth)
        try:
            body = r.json()
        except ValueError:
            raise AssertionError(f"{method} {path}: response is not JSON: {r.status_code} {r.text[:500]}") from None
        contract.check(method, httpx.URL(url).raw_path.decode("ascii"), r.status_code, body)
        if expect is not None and r.status_code != expect:
            raise AssertionError(f"{method} {path}: expected {expect}, got {r.status_code}: {body}")
        return Response(r.status_code, body, r.headers)

    def get(self, path: str, params: Any = None, **kw: Any) -> Response:
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, data: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, data=data, **kw)


@dataclass
class TestSite:
    name: str
    pk: int
    key: str
    read_only_key: str
    api: Api
    app: App

    def ctx(self, origin: Origin | None = None) -> Ctx:
        return Ctx(self.app, self.pk, origin or Origin(user="test"))

    def setting(self, **values: Any) -> None:
        """Change site settings as `billhive site set` would."""
        self.app.db.write_sync(lambda tx: sites.set_settings(tx, self.name, {k: str(v) for k, v in values.items()},
                                                             int(time.time())))


def new_site(server: LiveServer, *, test: bool = True, metered: bool = False, currency: str = "USD",
             **settings: Any) -> TestSite:
    app = server.app
    name = f"t{uuid.uuid4().hex[:10]}" + ("-test" if test else "")
    key = ("test_" if test else "live_") + uuid.uuid4().hex
    ro = ("test_ro_" if test else "live_ro_") + uuid.uuid4().hex
    site, _ = app.db.write_sync(lambda tx: sites.create(tx, name, now=int(time.time()), currency=currency,
                                                        metered_billing=metered, api_key=key, read_only_key=ro))
    ts = TestSite(name, site.pk, key, ro, Api(server, name, key), app)
    if settings:
        ts.setting(**settings)
    return ts
