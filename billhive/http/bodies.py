"""Reading a request body against a size limit, for every route that reads one (the API and the
hosted checkout form): a body is streamed in and refused with 413 as soon as it is larger than
the limit (at once when its ``Content-Length`` says so), so no request can make the server hold
more than the limit. How long a body may take to arrive is the connection's business
(billhive/http/protocol.py).

A client that goes away before its body is complete raises ``ClientDisconnected``: a truncated
form is a valid-looking prefix of the parameters, and must never be acted on.
"""

from __future__ import annotations

from starlette.types import Receive

from billhive.errors import PayloadTooLarge


class ClientDisconnected(Exception):
    """The connection closed before the request body was complete."""


async def read_body(receive: Receive, limit: int, content_length: bytes | str | None) -> bytes:
    if content_length is not None and _declared(content_length) > limit:
        raise too_large(limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes")


def _declared(content_length: bytes | str) -> int:
    # both HTTP parsers have already refused a malformed Content-Length; be safe anyway
    try:
        return int(content_length)
    except ValueError:
        return 0
