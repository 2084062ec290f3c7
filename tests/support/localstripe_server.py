"""Run localstripe (a stateful Stripe fake, PyPI ``localstripe``) on a free port for the tests.

``python -m tests.support.localstripe_server`` binds 127.0.0.1 on a port the kernel picks, prints
``PORT <n>`` on stdout once it listens, and serves until killed. localstripe keeps its objects in
memory and would pickle them to a fixed file (``/tmp/localstripe.pickle``) after every POST; the
tests keep nothing across runs, so that dump is switched off here (the suite writes no fixed path).

localstripe ignores ``Idempotency-Key``; Stripe answers a repeated key with the first request's
response (status and body, errors included; https://docs.stripe.com/api/idempotent_requests).
``idempotency`` adds that here, so the gateway's "a repeated key is the same operation" is tested
against the behaviour billhive relies on at Stripe.
"""

from __future__ import annotations

import logging
import socket
import sys

from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError


@web.middleware
async def idempotency(request: web.Request, handler):  # type: ignore[no-untyped-def]
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    seen = _replies.get((key, request.path))
    if seen is None:
        try:
            response = await handler(request)
        except UserError as exc:  # a refusal is answered again as it was the first time
            response = exc.to_response()
        seen = (response.status, response.body, response.content_type)
        _replies[(key, request.path)] = seen
    return web.Response(status=seen[0], body=seen[1], content_type=seen[2])


_replies: dict[tuple[str, str], tuple[int, bytes, str]] = {}


def main() -> None:
    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    server.app.middlewares.append(idempotency)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    async def announce(app: web.Application) -> None:
        print(f"PORT {port}", flush=True)

    server.app.on_startup.append(announce)
    web.run_app(server.app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    sys.exit(main())
