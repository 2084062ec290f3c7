"""Drive a live billhive server with the unmodified official ``chargebee`` 1.x SDK.

The SDK builds ``http://{site}.{chargebee_domain}/api/v1`` when ``chargebee_domain`` is set;
``*.localhost`` resolves to loopback inside the test process (see conftest). Every response
the SDK receives is checked against the spec, like the HTTP tests' responses.
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import chargebee
from chargebee import http_request
from chargebee.environment import Environment

from tests.support import contract

_current = threading.local()
_orig_request = http_request.request
_orig_process = http_request.process_response


def _request(method, url, env, params=None, headers=None):  # type: ignore[no-untyped-def]
    _current.method = method
    return _orig_request(method, url, env, params, headers)


def _process(url, response, http_code):  # type: ignore[no-untyped-def]
    import json

    try:
        body = json.loads(response)
    except ValueError:
        raise AssertionError(f"SDK got a non-JSON response from {url}: {response[:300]}") from None
    contract.check(getattr(_current, "method", "GET"), urlparse(url).path, http_code, body)
    return _orig_process(url, response, http_code)


http_request.request = _request
http_request.process_response = _process


def configure(server, site, key: str | None = None) -> None:
    """Point the SDK's global configuration at this server and site."""
    Environment.chargebee_domain = f"localhost:{server.port}"
    Environment.protocol = "http"
    chargebee.ChargeBee.verify_ca_certs = False
    chargebee.configure(key or site.key, site.name)
