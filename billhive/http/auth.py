"""Which site a request is for, and whether its API key may act on it.

- ``Host: {site}.{domain}[:port]`` names the site (as Chargebee's ``{site}.chargebee.com``);
  any other host (``127.0.0.1:8080``) lets the key alone pick the site.
- HTTP Basic auth: the API key is the user name, the password is empty.
- Unknown site -> 404 site_not_found; missing/wrong key, or a key of another site ->
  401 api_authentication_failed; a read-only key on a write -> 403 api_authorization_failed.

Lookups are cached briefly in memory (keyed by the raw Authorization header, so a hit costs
one dict lookup: no base64, no hashing). Key changes made by the CLI in another process
(``billhive site key revoke``) take effect within ``ttl`` seconds (``Config.cache_ttl``,
default ``TTL``).
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from billhive import sites
from billhive.errors import AuthenticationFailed, SiteNotFound
from billhive.store.db import Database

TTL = 5.0


@dataclass(frozen=True)
class Principal:
    site_pk: int
    site_name: str
    key_name: str
    read_only: bool


class Authenticator:
    def __init__(self, db: Database, domain: str, *, ttl: float = TTL):
        self.db = db
        self.ttl = ttl  # a revoked key stops working within this many seconds
        self.domain = domain.lower()
        self._suffix = "." + self.domain
        self._keys: dict[str, tuple[float, sites.KeyInfo | None]] = {}
        self._sites: dict[str, tuple[float, tuple[int, str] | None]] = {}  # name -> (pk, name)
        self._site_names: dict[int, tuple[float, str]] = {}

    def clear(self) -> None:
        self._keys.clear()
        self._sites.clear()
        self._site_names.clear()

    def site_from_host(self, host: str | None) -> str | None:
        if not host:
            return None
        name = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else None
        if name and name.endswith(self._suffix):
            sub = name[: -len(self._suffix)]
            if sub and "." not in sub:
                return sub
        return None

    async def authenticate(self, host: str | None, authorization: str | None) -> Principal:
        site_name = self.site_from_host(host)
        now = time.monotonic()
        site_pk = None
        if site_name is not None:
            hit = self._sites.get(site_name)
            if hit is None or hit[0] < now:
                row = await self.db.read(lambda tx: sites.by_name(tx, site_name))
                hit = (now + self.ttl, (row.pk, row.name) if row else None)
                self._sites[site_name] = hit
            if hit[1] is None:
                raise SiteNotFound(f"Site {site_name} not found")
            site_pk = hit[1][0]
        info = await self._key(authorization, now)
        if info is None or (site_pk is not None and info.site_pk != site_pk):
            raise AuthenticationFailed("Sorry, authentication failed. Invalid api key")
        if site_name is None:
            site_name = await self._site_name(info.site_pk, now)
        return Principal(info.site_pk, site_name, info.name, info.read_only)

    async def _key(self, authorization: str | None, now: float) -> sites.KeyInfo | None:
        if not authorization:
            raise AuthenticationFailed("Sorry, authentication failed. Invalid api key")
        hit = self._keys.get(authorization)
        if hit is not None and hit[0] >= now:
            return hit[1]
        key = _basic_user(authorization)
        info = await self.db.read(lambda tx: sites.key_info(tx, key)) if key else None
        if len(self._keys) > 10000:
            self._keys.clear()
        self._keys[authorization] = (now + self.ttl, info)
        return info

    async def _site_name(self, site_pk: int, now: float) -> str:
        hit = self._site_names.get(site_pk)
        if hit is None or hit[0] < now:
            site = await self.db.read(lambda tx: sites.load(tx, site_pk))
            hit = (now + self.ttl, site.name)
            self._site_names[site_pk] = hit
        return hit[1]


def _basic_user(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, _password = decoded.partition(":")
    return user or None
