"""A real billhive server on 127.0.0.1 (uvicorn in a thread) and an HTTP client for tests.

Every response goes through ``contract.check``: a test cannot see a response that breaks
the spec without failing.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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
    """HTTP client bound to one site and key; checks every response against the spec.

    It speaks HTTP/1.1 through the standard library's ``http.client`` on kept-alive connections (a
    small pool, so threads of one test can share an ``Api``), encoding queries and forms as httpx
    does. An httpx client cost a third of an HTTP test's CPU on the client side (~0.6 ms a request
    against the server's ~1.5 ms) and ~1,900 tests make ~35,000 requests. Transport failures raise
    ``httpx.TransportError`` (an ``httpx.HTTPError``), as the tests that kill servers expect."""

    def __init__(self, server: LiveServer, site_name: str, key: str | None, *, use_host: bool = True):
        self.server = server
        self.site_name = site_name
        self.key = key
        self.use_host = use_host
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def with_key(self, key: str | None) -> Api:
        return Api(self.server, self.site_name, key, use_host=self.use_host)

    def request(self, method: str, path: str, *, params: Any = None, data: Any = None, content: bytes | None = None,
                headers: dict | None = None, expect: int | None = 200) -> Response:
        url = "/api/v1" + path
        raw_path = httpx.URL(url).raw_path.decode("ascii")  # percent-encoded as httpx sends it
        target = raw_path
        if params:
            target += ("&" if "?" in target else "?") + _encoded(params)
        hdrs = {"Accept": "*/*", "Host": (f"{self.site_name}.localhost:{self.server.port}" if self.use_host
                                          else f"127.0.0.1:{self.server.port}")}
        body = content
        if body is None and data is not None:
            body = _encoded(data).encode("ascii")
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if self.key is not None:
            hdrs["Authorization"] = "Basic " + base64.b64encode(f"{self.key}:".encode()).decode("ascii")
        if headers:  # a test's own header replaces the default of any case, as httpx merges them
            given = {name.lower() for name in headers}
            hdrs = {name: v for name, v in hdrs.items() if name.lower() not in given} | headers
        status, reply_headers, payload = self._send(method, target, body, hdrs)
        try:
            reply = json.loads(payload)
        except ValueError:
            text = payload.decode("utf-8", "replace")[:500]
            raise AssertionError(f"{method} {path}: response is not JSON: {status} {text}") from None
        contract.check(method, raw_path, status, reply)
        if expect is not None and status != expect:
            raise AssertionError(f"{method} {path}: expected {expect}, got {status}: {reply}")
        return Response(status, reply, reply_headers)

    def get(self, path: str, params: Any = None, **kw: Any) -> Response:
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, data: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, data=data, **kw)

    def _send(self, method: str, target: str, body: bytes | None,
              headers: dict[str, str]) -> tuple[int, httpx.Headers, bytes]:
        """One exchange on an idle kept-alive connection, or a new one. A connection the server has
        closed meanwhile (its keep-alive timeout) reads as ready, with nothing to read: it is dropped
        before it is used, as httpcore does."""
        conn = None
        with self._lock:
            while self._idle and conn is None:
                conn = self._idle.pop()
                if conn.sock is None or select.select([conn.sock], [], [], 0)[0]:
                    conn.close()
                    conn = None
        if conn is None:
            where = urlsplit(self.server.base_url)
            conn = _Connection(where.hostname or "127.0.0.1", where.port, timeout=60)
        try:
            conn.request(method, target, body=body, headers=headers)
            reply = conn.getresponse()
            payload = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise httpx.TransportError(f"{method} {target}: {exc!r}") from exc
        if reply.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        return reply.status, httpx.Headers(reply.getheaders()), payload


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        """With TCP_NODELAY: http.client sends a request's headers and its body in two writes, and the
        second would wait for the first's delayed ACK (~40 ms)."""
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _encoded(values: Any) -> str:
    """A query or form body as httpx encodes it (its own encoding: a list value repeats its key; True,
    False and None are "true", "false" and "")."""
    return str(httpx.QueryParams(values))


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
