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

Anyone can send names and keys, so the caches are bounded: a least-recently-used cache of at
most ``CACHE_ENTRIES`` found sites and keys, and a separate, smaller one of ``MISS_ENTRIES``
names and keys that were not found (so a flood of made-up ones cannot push out the real ones).
Nothing longer than a site name or an API key can be is looked up or cached at all, so each
entry is small: the caches hold at most a few megabytes.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from cachetools import TTLCache

from billhive import sites
from billhive.errors import AuthenticationFailed, SiteNotFound
from billhive.store.db import Database

TTL = 5.0
CACHE_ENTRIES = 10_000
MISS_ENTRIES = 1_000
# "Basic " + base64 of "<key>:" for the longest key sites.add_key accepts (200 characters)
MAX_AUTHORIZATION = len("Basic ") + 4 * -(-(200 + 1) // 3)


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
        self._keys: TTLCache[str, sites.KeyInfo] = _cache(CACHE_ENTRIES, ttl)  # Authorization header -> key
        self._sites: TTLCache[str, int] = _cache(CACHE_ENTRIES, ttl)  # site name -> pk
        self._site_names: TTLCache[int, str] = _cache(CACHE_ENTRIES, ttl)  # pk -> site name
        self._missing: TTLCache[str, bool] = _cache(MISS_ENTRIES, ttl)  # "key:<header>" / "site:<name>" not found

    def clear(self) -> None:
        for cache in (self._keys, self._sites, self._site_names, self._missing):
            cache.clear()

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
        site_pk = None
        if site_name is not None:
            site_pk = await self._site_pk(site_name)
            if site_pk is None:
                raise SiteNotFound(f"Site {site_name} not found")
        info = await self._key(authorization)
        if info is None or (site_pk is not None and info.site_pk != site_pk):
            raise AuthenticationFailed("Sorry, authentication failed. Invalid api key")
        if site_name is None:
            site_name = await self._site_name(info.site_pk)
        return Principal(info.site_pk, site_name, info.name, info.read_only)

    async def _site_pk(self, name: str) -> int | None:
        pk = self._sites.get(name)
        if pk is not None:
            return pk
        if not sites.SITE_NAME.match(name) or ("site:" + name) in self._missing:
            return None
        row = await self.db.read(lambda tx: sites.by_name(tx, name))
        if row is None:
            self._missing["site:" + name] = True
            return None
        self._sites[name] = row.pk
        return row.pk

    async def _key(self, authorization: str | None) -> sites.KeyInfo | None:
        if not authorization:
            raise AuthenticationFailed("Sorry, authentication failed. Invalid api key")
        info = self._keys.get(authorization)
        if info is not None:
            return info
        if len(authorization) > MAX_AUTHORIZATION or ("key:" + authorization) in self._missing:
            return None
        key = _basic_user(authorization)
        info = await self.db.read(lambda tx: sites.key_info(tx, key)) if key else None
        if info is None:
            self._missing["key:" + authorization] = True
        else:
            self._keys[authorization] = info
        return info

    async def _site_name(self, site_pk: int) -> str:
        name = self._site_names.get(site_pk)
        if name is None:
            site = await self.db.read(lambda tx: sites.load(tx, site_pk))
            name = self._site_names[site_pk] = site.name
        return name


def _cache(entries: int, ttl: float) -> TTLCache:
    return TTLCache(maxsize=entries, ttl=ttl, timer=time.monotonic)


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
