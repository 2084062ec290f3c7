"""Console sign-in: the admin token, a signed session cookie, CSRF tokens for forms.

- Signing in posts the token in a form (never in a URL). ``Config.admin_token`` gives the
  ``admin`` role; ``Config.admin_readonly_token`` the ``viewer`` role, which sees every page and
  can submit no form that changes anything.
- The session is a cookie ``billhive_console`` = ``role.expires.nonce.signature``: an HMAC-SHA256
  keyed by the role's token, so changing a token ends its sessions. ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/admin``, ``Secure`` over HTTPS; it lasts ``LIFETIME`` seconds.
- Every form carries ``csrf``, an HMAC of the session's nonce: a form posted from another site
  (or with another session) is refused with 403. SameSite=Strict already keeps the cookie off
  cross-site posts; the token is the second lock.

(The issue-14 admin API authenticates bearer tokens on its own; both compare with
``hmac.compare_digest``.)"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from billhive.runtime import Config

COOKIE = "billhive_console"
LIFETIME = 12 * 3600
ROLES = ("admin", "viewer")


@dataclass(frozen=True)
class Session:
    role: str  # admin | viewer
    expires: int
    nonce: str

    @property
    def can_change(self) -> bool:
        return self.role == "admin"


def enabled(config: Config) -> bool:
    return bool(config.admin_token)


def sign_in(config: Config, token: str, now: float | None = None) -> tuple[Session, str] | None:
    """The session (and its cookie value) for a token, or None when it is neither admin token."""
    for role in ROLES:
        expected = _token(config, role)
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            session = Session(role, int(now if now is not None else time.time()) + LIFETIME, secrets.token_hex(16))
            return session, _cookie(config, session)
    return None


def from_cookie(config: Config, value: str | None, now: float | None = None) -> Session | None:
    """The session a cookie holds, if it is signed with its role's current token and not expired."""
    if not value or not enabled(config):
        return None
    parts = value.split(".")
    if len(parts) != 4 or parts[0] not in ROLES or not parts[1].isdigit():
        return None
    role, expires, nonce, signature = parts
    key = _key(config, role)
    if key is None or not hmac.compare_digest(signature, _sign(key, f"{role}.{expires}.{nonce}")):
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    return Session(role, int(expires), nonce)


def csrf_token(config: Config, session: Session) -> str:
    key = _key(config, session.role)
    assert key is not None
    return _sign(key, "csrf." + session.nonce)


def csrf_ok(config: Config, session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(str(token), csrf_token(config, session))


def _cookie(config: Config, session: Session) -> str:
    key = _key(config, session.role)
    assert key is not None
    payload = f"{session.role}.{session.expires}.{session.nonce}"
    return f"{payload}.{_sign(key, payload)}"


def _token(config: Config, role: str) -> str | None:
    if not config.admin_token:
        return None  # no console without the admin token, not even read-only
    return config.admin_token if role == "admin" else config.admin_readonly_token


def _key(config: Config, role: str) -> bytes | None:
    token = _token(config, role)
    return hashlib.sha256(b"billhive-console-session:" + token.encode()).digest() if token else None


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
