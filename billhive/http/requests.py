"""Every HTTP request's id, log line and latency.

The id is the client's ``X-Request-Id`` when it sends a usable one (up to 128 of
``A-Z a-z 0-9 . _ : - / + = @``), else a new random one; it is returned in the response's
``X-Request-Id`` header and carried by every log line written while the request is served
(``billhive.util.logs.REQUEST_ID``). When the response is sent, one line goes to the
``billhive.request`` logger (INFO) with the request id, method, path, site, operation (the
API's operationId; for other pages a fixed name such as ``admin`` or ``health``), status and
duration. The same (operation, status) pairs feed the latency histogram of ``/metrics``
(a ``Latency`` per application)."""

from __future__ import annotations

import bisect
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from billhive.util.logs import REQUEST_ID

log = logging.getLogger("billhive.request")
HEADER = b"x-request-id"
_USABLE = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")
# seconds; the histogram's upper bounds (the +Inf bucket is the count)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# non-API paths by their first segment (anything else is "other": no label per URL a scanner tries)
PAGES = {"health": "health", "metrics": "metrics", "openapi.json": "openapi", "admin": "admin",
         "portal": "portal", "hosted_pages": "hosted_page", "downloads": "download"}


class Latency:
    """Request durations by (operation, status): bucket counts, sum and count (no locks: one
    event loop per process; reads for /metrics copy the dict)."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, int], list] = {}

    def observe(self, op: str, status: int, seconds: float) -> None:
        s = self.series.get((op, status))
        if s is None:
            s = self.series[(op, status)] = [[0] * len(BUCKETS), 0.0, 0]
        i = bisect.bisect_left(BUCKETS, seconds)
        if i < len(BUCKETS):
            s[0][i] += 1
        s[1] += seconds
        s[2] += 1


async def serve(scope: dict, receive: Callable, send: Callable,
                app: Callable[[dict, Callable, Callable], Awaitable[None]], latency: Latency) -> None:
    """Run ``app`` for one HTTP request with its id set, answer with the id, log and time it."""
    started = time.perf_counter()
    rid = _request_id(scope["headers"])
    token = REQUEST_ID.set(rid)
    header = (HEADER, rid.encode())
    status = 500

    async def send_with_id(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        seconds = time.perf_counter() - started
        op = scope.get("billhive.op") or _page(scope["path"])
        latency.observe(op, status, seconds)
        log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, seconds * 1000,
                 extra={"method": scope["method"], "path": scope["path"], "site": scope.get("billhive.site"),
                        "operation": op, "status": status, "duration_ms": round(seconds * 1000, 3)})
        REQUEST_ID.reset(token)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == HEADER:
            if _USABLE.match(value):
                return value.decode()
            break
    return secrets.token_hex(16)


def _page(path: str) -> str:
    return PAGES.get(path[1:].split("/", 1)[0], "other")
