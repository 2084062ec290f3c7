"""Signed, expiring tokens for URLs (PDF download links): base64url(JSON payload) "." base64url(HMAC).

Pure: the caller supplies the secret, the purpose (so a token for one use is never valid for
another) and the time to check expiry against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, purpose: str, body: str) -> bytes:
    return hmac.new(secret, f"{purpose}:{body}".encode("ascii"), hashlib.sha256).digest()


def sign(secret: bytes, purpose: str, payload: list[Any]) -> str:
    body = _b64(orjson.dumps(payload))
    return f"{body}.{_b64(_mac(secret, purpose, body))}"


def peek(token: str) -> list[Any] | None:
    """The payload, unverified: only to find which key to verify the token with."""
    body = token.partition(".")[0]
    try:
        payload = orjson.loads(_unb64(body))
    except (ValueError, UnicodeEncodeError, orjson.JSONDecodeError):
        return None
    return payload if isinstance(payload, list) else None


def verify(secret: bytes, purpose: str, token: str) -> list[Any] | None:
    """The payload of a token this secret signed for this purpose, else None (expiry is the caller's)."""
    body, dot, mac = token.partition(".")
    if not dot or not body or not mac:
        return None
    try:
        given = _unb64(mac)
        if not hmac.compare_digest(given, _mac(secret, purpose, body)):
            return None
        payload = orjson.loads(_unb64(body))
    except (ValueError, UnicodeEncodeError, orjson.JSONDecodeError):
        return None
    return payload if isinstance(payload, list) else None
