"""Who may use billhive's admin surfaces (the admin API under /admin/api, the console at /admin):
whoever presents ``Config.admin_token`` (``BILLHIVE_ADMIN_TOKEN`` / ``billhive serve --admin-token``).
Never a site's API key. With no token configured both surfaces are off (404).

The token is accepted as ``Authorization: Bearer <token>`` or as the user of HTTP Basic auth
(the way Chargebee takes an API key, so curl ``-u TOKEN:`` works). Compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Literal

from starlette.requests import Request

from billhive.runtime import Config

ADMIN: Literal["admin"] = "admin"


def enabled(config: Config) -> bool:
    """False: no admin token is configured, the admin surfaces answer 404."""
    return bool(config.admin_token)


def authenticate(request: Request, config: Config) -> Literal["admin"] | None:
    """"admin" when the request presents the admin token; None otherwise (and always when no
    token is configured: callers answer 404 then, see ``enabled``, else 401)."""
    if not config.admin_token:
        return None
    given = presented(request.headers.get("authorization"))
    if given is not None and hmac.compare_digest(given.encode(), config.admin_token.encode()):
        return ADMIN
    return None


def presented(authorization: str | None) -> str | None:
    """The token an Authorization header presents (Bearer, or Basic's user), or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    return None
