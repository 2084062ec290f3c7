"""The HTTP connections of ``billhive serve``: uvicorn's httptools protocol (under uvloop) with the
limits a server on an open network needs. On its own, uvicorn holds a connection that sent half a
request forever, takes request heads of any size, and accepts connections until the process runs
out of file descriptors, when every new client is reset.

- A request's line and headers are at most ``max_header_bytes`` (431).
- They must arrive within ``header_timeout`` seconds of the connection opening (or, on a
  keep-alive connection, of the next request's first bytes), and the body within
  ``body_timeout`` seconds of the headers (408; a connection that sent nothing is just closed).
- An idle keep-alive connection is closed after ``keep_alive_timeout`` seconds (uvicorn's
  ``timeout_keep_alive``).
- At most ``max_connections`` connections are served at once, fewer if the file descriptor limit
  (RLIMIT_NOFILE) would not leave ``FD_RESERVE`` descriptors for the database, logs and outgoing
  webhooks plus ``REFUSAL_ROOM`` for refusals. A connection beyond that is answered 503
  ``internal_temporary_error`` with ``Retry-After`` as soon as its request head is in (closed
  unanswered if that takes more than ``REFUSE_TIMEOUT`` seconds); only when the room for
  refusals is used up too is a new connection closed at once.

A refusal is Chargebee's error JSON with ``Connection: close``. The connection is then half-closed
and reads and drops what the client still sends for up to ``LINGER`` seconds, so that the client
reads the answer rather than a reset. How large a body may be is the route's business
(billhive/http/bodies.py).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from billhive.errors import BillhiveError, HeadersTooLarge, Overloaded, RequestTimeout
from billhive.runtime import Config

log = logging.getLogger("billhive.http")

FD_RESERVE = 64
REFUSAL_ROOM = 64
REFUSE_TIMEOUT = 1.0
LINGER = 2.0
RETRY_AFTER = 1  # seconds, in the 503's Retry-After
_WARN_EVERY = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = Config.max_header_bytes
    header_timeout: float = Config.header_timeout
    body_timeout: float = Config.body_timeout
    max_connections: int = Config.max_connections  # served at once
    max_open: int = Config.max_connections + REFUSAL_ROOM  # open at once, refusals included


def uvicorn_options(config: Config) -> dict[str, Any]:
    """The uvicorn.run / uvicorn.Config arguments that put the configured limits in force."""
    configure(config)
    return {
        "http": f"{__name__}:{LimitedHttpToolsProtocol.__name__}",
        "ws": "none",  # billhive serves no WebSockets: an Upgrade request is an ordinary request
        "timeout_keep_alive": config.keep_alive_timeout,
        "h11_max_incomplete_event_size": config.max_header_bytes,  # the same limit, should h11 be used
    }


def configure(config: Config) -> ConnectionLimits:
    """Set the limits every connection of this process gets (also in each --workers process)."""
    limits = limits_for(config, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    if limits.max_connections < config.max_connections:
        log.warning("serving at most %d connections at once, not %d: the open file limit (RLIMIT_NOFILE, "
                    "ulimit -n) is %d; raise it for more", limits.max_connections, config.max_connections,
                    limits.max_open + FD_RESERVE)
    LimitedHttpToolsProtocol.limits = limits
    return limits


def limits_for(config: Config, nofile: int) -> ConnectionLimits:
    """The limits for a process that may open ``nofile`` file descriptors."""
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    max_open = max(2, nofile - FD_RESERVE)
    served = max(1, min(config.max_connections, max_open - REFUSAL_ROOM))
    return ConnectionLimits(max_header_bytes=config.max_header_bytes, header_timeout=config.header_timeout,
                            body_timeout=config.body_timeout, max_connections=served, max_open=max_open)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits = ConnectionLimits()
    _last_warned = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._received = 0  # bytes of the current request's head received so far
        self._in_body = False  # the current request's headers are in, its body is not
        self._refused = False  # over the connection limit: answer 503 to the request
        self._lingering = False  # answered and half-closed: drop what still comes
        self._close_after_response = False  # timed out while answering an earlier request

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        open_now = len(self.connections)
        if open_now > self.limits.max_connections:
            self._warn_overloaded(open_now)
            if open_now > self.limits.max_open:
                transport.close()
                return
            self._refused = True
            self._start_timer(min(REFUSE_TIMEOUT, self.limits.header_timeout))
        else:
            self._start_timer(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if not self._in_body:
            self._received += len(data)
        super().data_received(data)
        if self._lingering or self.transport.is_closing():
            return
        if self._in_body:
            if self._timer is None:
                self._start_timer(self.limits.body_timeout)
        elif self._received:  # part of a request head: it must complete in time, and not grow too large
            if self._received > self.limits.max_header_bytes:
                self._refuse(HeadersTooLarge(self._too_large_message()))
            elif self._timer is None:
                self._start_timer(self.limits.header_timeout)

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._received = self._received or 1  # a request has begun (perhaps mid-packet, pipelined)

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        self._in_body = True
        self._received = 0
        if len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > self.limits.max_header_bytes:
            largest = max(self.headers, key=lambda h: len(h[1]), default=(b"", b""))
            self._refuse(HeadersTooLarge(self._too_large_message(), param=largest[0].decode("latin-1") or None))
        elif self._refused:
            self._refuse(Overloaded("The server is at its limit of open connections; retry in a moment"),
                         (b"retry-after", b"%d" % RETRY_AFTER))
        else:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._lingering:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_timer()
        self._in_body = False
        if not self._lingering:
            super().on_message_complete()

    # -- timeouts and refusals ---------------------------------------------------------------

    def _start_timer(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._lingering:
            self.transport.close()
            return
        cycle = self.cycle
        busy = bool(self.pipeline) or (cycle is not None and not cycle.response_complete)
        if busy and self._in_body and not cycle.response_started and not self.pipeline:
            # the route waits for a body that is not coming: it gets a disconnect and does nothing
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(RequestTimeout(f"The request body did not arrive within {self.limits.body_timeout:g} "
                                        "seconds"))
        elif busy:  # an earlier request is being answered: close after its answer
            self.pipeline.clear()
            self._close_after_response = True
        elif self._received and not self._refused:
            self._refuse(RequestTimeout(f"The request headers did not arrive within "
                                        f"{self.limits.header_timeout:g} seconds"))
        else:  # nothing asked (or already answered, or refused anyway): nothing to say
            self.transport.close()

    def on_response_complete(self) -> None:
        if self._close_after_response:
            self.transport.close()
        else:
            super().on_response_complete()

    def _refuse(self, error: BillhiveError, *headers: tuple[bytes, bytes]) -> None:
        """Answer ``error`` without running the app, then half-close and drop what still comes."""
        self._unset_keepalive_if_required()
        body = orjson.dumps(error.to_json())
        head = [STATUS_LINE[error.http_status]]
        for name, value in (*self.server_state.default_headers, *headers):
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json;charset=utf-8\r\n",
                 b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(head))
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._start_timer(LINGER)

    def _too_large_message(self) -> str:
        return f"The request line and headers are larger than the limit of {self.limits.max_header_bytes} bytes"

    def _warn_overloaded(self, open_now: int) -> None:
        now = time.monotonic()
        cls = type(self)
        if now - cls._last_warned >= _WARN_EVERY:
            cls._last_warned = now
            log.warning("%d connections open, more than the limit of %d: refusing new ones with 503 "
                        "(see max_connections)", open_now, self.limits.max_connections)
