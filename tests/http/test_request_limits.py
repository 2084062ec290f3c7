"""Limits on what a client can make a real ``billhive serve`` (uvloop + httptools) hold: header
and body sizes, slow and half-open connections, idle keep-alives, the number of connections, and
the memory anyone without a key can make it keep. The limits do not depend on the store: these
run on SQLite."""

from __future__ import annotations

import base64
import http.client
import resource
import socket
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.process import ServerProcess

pytestmark = pytest.mark.slow
MB = 1 << 20
FORM = b"content-type: application/x-www-form-urlencoded\r\n"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def exchange(port: int, head: bytes, body: bytes = b"", *, timeout: float = 10) -> tuple[int, dict]:
    """Send one request (the server may stop reading it early) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = http.client.HTTPResponse(s)
        resp.begin()
        data = resp.read()
        ctype = resp.getheader("content-type") or ""
        return resp.status, orjson.loads(data) if ctype.startswith("application/json") else {"html": data}


def request_head(method: str, path: str, *headers: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\n" % (method.encode(), path.encode()) + b"".join(headers) + b"\r\n"


def basic(key: str) -> bytes:
    return b"authorization: Basic " + base64.b64encode(key.encode() + b":") + b"\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    where = tmp_path_factory.mktemp("limits")
    s = ServerProcess(f"sqlite:///{where / 'limits.db'}", log_path=where / "serve.log", extra_env={
        "BILLHIVE_HEADER_TIMEOUT": "1.5", "BILLHIVE_BODY_TIMEOUT": "1.5", "BILLHIVE_KEEP_ALIVE_TIMEOUT": "1"})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(server):
    """The demo-test site's key, printed by the first billhive serve on an empty database."""
    for line in Path(server.log.name).read_text().splitlines():
        if line.strip().startswith("curl -u "):
            return line.split()[2].rstrip(":")
    raise AssertionError("no key in the server's output")


# ---- sizes -----------------------------------------------------------------------------------

def test_oversized_headers_are_refused_with_431(server):
    for header in (b"host: " + b"a" * MB + b".localhost\r\n",                       # streamed in
                   b"host: x\r\nauthorization: Basic " + b"A" * 20_000 + b"\r\n",   # whole, in one packet
                   b"host: x\r\n" + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(200))):
        status, body = exchange(server.port, request_head("GET", "/api/v1/customers", header))
        assert status == 431
        assert body["http_status_code"] == 431 and body["api_error_code"] == "invalid_request"
        assert "16384 bytes" in body["message"]
    # a large head within the limit is an ordinary request
    status, body = exchange(server.port, request_head("GET", "/api/v1/customers", b"host: x\r\n",
                                                      b"x-big: " + b"v" * 12_000 + b"\r\n"))
    assert status == 401 and body["api_error_code"] == "api_authentication_failed"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_bodies_are_refused_with_413(server, chunked):
    def post(path: str, size: int, sent: int) -> tuple[int, dict]:
        if chunked:  # no Content-Length: refused while it streams in
            part = b"a" * 65536
            body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for _ in range(sent // len(part))) + b"0\r\n\r\n"
            length = b"transfer-encoding: chunked\r\n"
        else:
            body, length = b"a" * sent, b"content-length: %d\r\n" % size
        return exchange(server.port, request_head("POST", path, b"host: x\r\n", FORM, length), body)

    status, body = post("/api/v1/customers", 400 * MB, MB + 65536)
    assert status == 413 and body["api_error_code"] == "invalid_request" and "1048576 bytes" in body["message"]
    # the hosted checkout form (a browser page: its own 413 page)
    status, body = post("/hosted_pages/demo-test/some-page", 400 * MB, 128 * 1024)
    assert status == 413 and b"too large" in body["html"]


def test_a_body_at_the_limit_is_read(server):
    status, body = exchange(server.port, request_head("POST", "/api/v1/customers", b"host: x\r\n", FORM,
                                                      b"content-length: %d\r\n" % MB), b"a" * MB)
    # read whole, then the missing key is the answer
    assert status == 401 and body["api_error_code"] == "api_authentication_failed"


# ---- time ------------------------------------------------------------------------------------

def closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (reading what it says), failing past ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s; got {data[:200]!r}") from None
    return time.monotonic() - started, data


def answer(sock: socket.socket) -> int:
    """Read one whole response from a connection that stays open."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    resp.read()
    return resp.status


def test_half_sent_requests_and_idle_connections_are_closed_in_time(server):
    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", server.port))

    silent = connect()
    half_head = connect()
    half_head.sendall(b"GET /api/v1/customers HTTP/1.1\r\nhost: x\r\n")
    half_body = connect()
    half_body.sendall(request_head("POST", "/api/v1/customers", b"host: x\r\n", FORM, b"content-length: 100\r\n")
                      + b"first_name=A")
    keep_alive = connect()
    keep_alive.sendall(request_head("GET", "/health", b"host: x\r\n"))
    assert answer(keep_alive) == 200
    second_half = connect()
    second_half.sendall(request_head("GET", "/health", b"host: x\r\n"))
    assert answer(second_half) == 200
    second_half.sendall(b"GET /health HTTP/1.1\r\nhost:")

    took, said = closed_after(silent, 4)
    assert 1 <= took and said == b""  # nothing asked, nothing answered
    for sock in (half_head, half_body, second_half):
        took, said = closed_after(sock, 4)
        assert said.startswith(b"HTTP/1.1 408 "), said[:200]
        assert b'"api_error_code":"invalid_request"' in said
    took, said = closed_after(keep_alive, 3)
    assert said == b""


@pytest.mark.parametrize("how", ["too slow", "cut short"])
def test_a_body_that_does_not_all_arrive_is_not_acted_on(server, key, how):
    """The parameters that did arrive are a valid form of their own: nothing may be created from them."""
    cid = "part_" + uuid.uuid4().hex[:8]
    sock = socket.create_connection(("127.0.0.1", server.port))
    form = b"id=%s&first_name=Part" % cid.encode()
    sock.sendall(request_head("POST", "/api/v1/customers", b"host: x\r\n", basic(key), FORM,
                              b"content-length: %d\r\n" % (len(form) + 50)) + form)
    if how == "too slow":
        _, said = closed_after(sock, 4)
        assert said.startswith(b"HTTP/1.1 408 ")
    else:
        time.sleep(0.3)
        sock.close()
        time.sleep(0.5)
    r = httpx.get(f"{server.base_url}/api/v1/customers/{cid}", auth=(key, ""))
    assert r.status_code == 404, r.text
    # the same request, whole, creates it
    status, body = exchange(server.port, request_head("POST", "/api/v1/customers", b"host: x\r\n", basic(key), FORM,
                                                      b"content-length: %d\r\n" % len(form)), form)
    assert status == 200 and body["customer"]["id"] == cid


# ---- memory ----------------------------------------------------------------------------------

def test_requests_without_a_key_do_not_make_the_server_keep_memory(tmp_path):
    """Unique 1 MB Host and Authorization headers and large checkout-form posts: 1,000 of them
    leave the server's RSS within 20 MB of where it was."""
    server = ServerProcess(f"sqlite:///{tmp_path / 'rss.db'}")
    port = server.port
    big = b"a" * MB

    def host(i: int) -> tuple[int, dict]:
        label = b"%d-%s" % (i, uuid.uuid4().hex.encode())
        if i % 4 == 0:  # a plausible site name that does not exist
            return exchange(port, request_head("GET", "/api/v1/customers", b"host: " + label + b".localhost\r\n"))
        return exchange(port, request_head("GET", "/api/v1/customers", b"host: " + label + big + b".localhost\r\n"))

    def authorization(i: int) -> tuple[int, dict]:
        if i % 4 == 0:  # a plausible key that does not exist
            return exchange(port, request_head("GET", "/api/v1/customers", b"host: x\r\n",
                                               basic("test_" + uuid.uuid4().hex * 6)))
        return exchange(port, request_head("GET", "/api/v1/customers", b"host: x\r\n",
                                           b"authorization: Basic %d%s%s\r\n" % (i, uuid.uuid4().hex.encode(), big)))

    def checkout(i: int) -> tuple[int, dict]:
        path = f"/hosted_pages/demo-test/{uuid.uuid4().hex}"
        if i % 2:
            return exchange(port, request_head("POST", path, b"host: x\r\n", FORM,
                                               b"content-length: %d\r\n" % (2 * MB)), b"a" * (2 * MB))
        return exchange(port, request_head("POST", path, b"host: x\r\n", FORM, b"transfer-encoding: chunked\r\n"),
                        b"".join(b"10000\r\n%s\r\n" % (b"a" * 65536) for _ in range(32)) + b"0\r\n\r\n")

    kinds = (host, authorization, checkout)
    try:
        for i in range(60):  # warm up: the allocator's arenas reach their working size
            kinds[i % 3](i)
        before = rss_mb(server.proc.pid)
        statuses: dict[int, int] = {}
        for i in range(1000):
            status, _ = kinds[i % 3](i)
            statuses[status] = statuses.get(status, 0) + 1
        after = rss_mb(server.proc.pid)
        assert set(statuses) <= {431, 404, 401, 413}, statuses
        assert after - before < 20, f"RSS grew from {before:.0f} MB to {after:.0f} MB"
        assert httpx.get(server.base_url + "/health").status_code == 200
    finally:
        server.stop()


# ---- connections -----------------------------------------------------------------------------

def test_more_idle_connections_than_file_descriptors(tmp_path):
    """With the open file limit at 256, 300 sockets that send nothing or half a request: the server
    refuses clearly while it is full, the idle ones are closed within the header timeout, and then
    new clients are served."""
    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    server = ServerProcess(f"sqlite:///{tmp_path / 'fd.db'}", preexec_fn=low_fd_limit,
                           extra_env={"BILLHIVE_HEADER_TIMEOUT": "2"})
    idle: list[tuple[float, socket.socket]] = []
    try:
        for i in range(300):
            sock = socket.create_connection(("127.0.0.1", server.port))
            if i % 2:
                sock.sendall(b"POST /api/v1/customers HTTP/1.1\r\nhost: x\r\ncontent-")
            idle.append((time.monotonic(), sock))
        time.sleep(1.2)
        # full: a new client is refused with Chargebee's error JSON (or served, if a slot is free)
        r = httpx.get(server.base_url + "/health", timeout=5)
        if r.status_code == 503:
            assert r.json()["api_error_code"] == "internal_temporary_error"
            assert r.headers["retry-after"] == "1"
        else:
            assert r.status_code == 200
        for opened, sock in idle:  # every one closed by the server, none later than the header timeout
            closed_after(sock, max(0.1, opened + 2 + 1.5 - time.monotonic()))
        deadline = time.monotonic() + 3
        while (status := httpx.get(server.base_url + "/health", timeout=5).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline
    finally:
        for _, sock in idle:
            sock.close()
        server.stop()
