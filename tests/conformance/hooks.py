"""Schemathesis hooks for the conformance run (loaded through SCHEMATHESIS_HOOKS).

The spec types ``chargebee-request-origin-user-encoded`` as ``format: email`` while its
description says the header carries the *Base64 encoding* of the address, which is what billhive
(like Chargebee) reads. Left alone, most generated requests carry a plain address there and
stop at a (documented) 400, so few reach the operation itself. Encode what looks like an address
the way a client must; anything else is sent as generated and still exercises the 400.
"""

from __future__ import annotations

import base64
from typing import Any

import schemathesis

USER_ENCODED = "chargebee-request-origin-user-encoded"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers
    if not headers:
        return
    value = headers.get(USER_ENCODED)
    if isinstance(value, str) and "@" in value:
        headers[USER_ENCODED] = base64.b64encode(value.encode("utf-8")).decode("ascii")
