"""billhive's pytest plugin: a fresh Chargebee-compatible test site per test.

Installed with billhive (the ``pytest11`` entry point ``billhive``); nothing to configure:

- ``billhive_server`` (session): a ``billhive serve`` on a free port with a temporary SQLite
  database and a random admin token - or the server given by ``--billhive-url`` and
  ``--billhive-admin-token`` (env ``BILLHIVE_URL`` / ``BILLHIVE_ADMIN_TOKEN``). Under pytest-xdist
  each worker starts its own.
- ``billhive_site``: a new test site made through the admin API for each test (``.name``,
  ``.api_key``, ``.read_only_key``, ``.base_url``, ``.api_url``), deleted after it.
- ``chargebee_site``: the official ``chargebee`` 1.x module configured for ``billhive_site``; its
  ``{site}.localhost`` URLs resolve to the server inside this process only (``socket.getaddrinfo``
  is wrapped for names ending in ``.localhost`` while the test runs; nothing on the machine changes).

    def test_signup(chargebee_site):
        plan = chargebee_site.Plan.create({"id": "basic", "name": "Basic", "price": 1000}).plan
        ...
"""

from __future__ import annotations

import importlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT = 120.0  # seconds for a started server to answer /health (a loaded CI box is slow)


@dataclass
class BillhiveServer:
    base_url: str  # http://127.0.0.1:PORT
    admin_token: str
    process: subprocess.Popen | None = None  # None: a server this plugin did not start

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def admin(self, method: str, path: str, json: Any = None) -> dict:
        """Call the admin API; raises on any answer but 200."""
        r = httpx.request(method, self.base_url + "/admin/api" + path, json=json, timeout=30,
                          headers={"authorization": f"Bearer {self.admin_token}"})
        if r.status_code != 200:
            raise RuntimeError(f"billhive admin API {method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()


@dataclass
class BillhiveSite:
    name: str
    api_key: str
    read_only_key: str
    base_url: str  # the server (the site's API is api_url)
    api_url: str  # base_url + /api/v1: the key chooses the site
    server: BillhiveServer

    @property
    def host_url(self) -> str:
        """The site's API by name, as the SDKs build it: http://{name}.localhost:PORT/api/v1."""
        return f"http://{self.name}.localhost:{self.server.port}/api/v1"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("billhive")
    group.addoption("--billhive-url", default=os.environ.get("BILLHIVE_URL"),
                    help="use this running billhive server instead of starting one (env BILLHIVE_URL)")
    group.addoption("--billhive-admin-token", default=os.environ.get("BILLHIVE_ADMIN_TOKEN"),
                    help="the admin token of --billhive-url's server (env BILLHIVE_ADMIN_TOKEN)")


@pytest.fixture(scope="session")
def billhive_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[BillhiveServer]:
    url = request.config.getoption("billhive_url")
    if url:
        token = request.config.getoption("billhive_admin_token")
        if not token:
            raise pytest.UsageError("--billhive-url needs --billhive-admin-token (the server's admin token)")
        yield BillhiveServer(url.rstrip("/"), token)
        return
    server = start_server(tmp_path_factory.mktemp("billhive"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def billhive_site(billhive_server: BillhiveServer) -> Iterator[BillhiveSite]:
    made = billhive_server.admin("POST", "/sites")["site"]
    site = BillhiveSite(made["name"], made["api_key"], made["read_only_key"], billhive_server.base_url,
                        made["api_url"], billhive_server)
    try:
        yield site
    finally:
        billhive_server.admin("DELETE", f"/sites/{site.name}")


@pytest.fixture
def chargebee_site(billhive_site: BillhiveSite, monkeypatch: pytest.MonkeyPatch) -> Any:
    chargebee = importlib.import_module("chargebee")  # optional: only this fixture needs the SDK
    environment = importlib.import_module("chargebee.environment").Environment
    monkeypatch.setattr(environment, "chargebee_domain", f"localhost:{billhive_site.server.port}", raising=False)
    monkeypatch.setattr(environment, "protocol", "http", raising=False)
    monkeypatch.setattr(chargebee.ChargeBee, "verify_ca_certs", False)  # else it speaks TLS whatever the protocol
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_localhost(socket.getaddrinfo))
    chargebee.configure(billhive_site.api_key, billhive_site.name)
    return chargebee


def start_server(directory: Path, *, attempts: int = 3) -> BillhiveServer:
    """``billhive serve`` on a free port with a SQLite database in ``directory``."""
    token = secrets.token_urlsafe(24)
    for _ in range(attempts):
        port = _free_port()
        env = {**os.environ, "BILLHIVE_ADMIN_TOKEN": token}
        with open(directory / "billhive.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "billhive", "serve", "--port", str(port),
                 "--database-url", f"sqlite:///{directory / 'billhive.db'}"],
                env=env, stdout=log, stderr=log, cwd=str(directory))
        server = BillhiveServer(f"http://127.0.0.1:{port}", token, proc)
        if _wait_ready(server):
            return server
        stop_server(server)
    raise RuntimeError(f"billhive serve did not start; see {directory / 'billhive.log'}")


def stop_server(server: BillhiveServer) -> None:
    proc = server.process
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def _wait_ready(server: BillhiveServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            return False  # exited (e.g. the free port was taken meanwhile)
        try:
            if httpx.get(server.base_url + "/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_localhost(resolve: Any) -> Any:
    """getaddrinfo answering 127.0.0.1 for ``*.localhost`` (glibc and Node do not; RFC 6761 says
    such names are loopback)."""
    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)
    return getaddrinfo
