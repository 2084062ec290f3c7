"""The authenticator's caches stay small whatever names and keys clients make up."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import MutableMapping

import pytest

from billhive.errors import AuthenticationFailed, SiteNotFound
from billhive.http import auth
from billhive.http.auth import Authenticator


class CountingDb:
    """The real database, counting the reads that reach it."""

    def __init__(self, db):
        self.db = db
        self.reads = 0

    async def read(self, fn):
        self.reads += 1
        return await self.db.read(fn)


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(key.encode() + b":").decode()


def cached(a: Authenticator) -> list[tuple[object, object]]:
    return [item for v in vars(a).values() if isinstance(v, MutableMapping) for item in v.items()]


async def attempt(a: Authenticator, host: str | None, authorization: str | None) -> type[Exception] | None:
    try:
        await a.authenticate(host, authorization)
    except (SiteNotFound, AuthenticationFailed) as exc:
        return type(exc)
    return None


def test_made_up_sites_and_keys_are_cached_within_a_bound(app, site):
    a = Authenticator(CountingDb(app.db), "localhost")  # type: ignore[arg-type]

    async def flood() -> None:
        for _ in range(auth.MISS_ENTRIES + 500):
            assert await attempt(a, f"n{uuid.uuid4().hex}.localhost", basic(site.key)) is SiteNotFound
            assert await attempt(a, None, basic("test_" + uuid.uuid4().hex)) is AuthenticationFailed

    asyncio.run(flood())
    assert len(cached(a)) <= auth.MISS_ENTRIES + 2  # the misses, the real key and its site's name


def test_names_and_keys_too_long_to_exist_are_neither_looked_up_nor_cached(app, site):
    db = CountingDb(app.db)
    a = Authenticator(db, "localhost")  # type: ignore[arg-type]
    assert asyncio.run(attempt(a, "a" * 100_000 + ".localhost", basic(site.key))) is SiteNotFound
    assert asyncio.run(attempt(a, None, basic("k" * 100_000))) is AuthenticationFailed
    assert asyncio.run(attempt(a, None, "Basic " + "A" * 100_000)) is AuthenticationFailed
    assert db.reads == 0 and cached(a) == []


def test_a_flood_of_misses_does_not_push_out_the_real_key(app, site):
    db = CountingDb(app.db)
    # a TTL longer than the flood can take on a loaded machine: this is about the bound, not expiry
    a = Authenticator(db, "localhost", ttl=600.0)  # type: ignore[arg-type]
    host = f"{site.name}.localhost:8080"

    async def flood() -> int:
        assert await attempt(a, host, basic(site.key)) is None
        for _ in range(auth.MISS_ENTRIES * 2):
            await attempt(a, f"n{uuid.uuid4().hex}.localhost", basic("test_" + uuid.uuid4().hex))
        reads = db.reads
        assert await attempt(a, host, basic(site.key)) is None
        return db.reads - reads

    assert asyncio.run(flood()) == 0


@pytest.mark.parametrize("authorization", [None, "", "Bearer x", "Basic !!!", basic("")])
def test_malformed_authorization_fails_cleanly(app, site, authorization):
    a = Authenticator(CountingDb(app.db), "localhost")  # type: ignore[arg-type]
    assert asyncio.run(attempt(a, None, authorization)) is AuthenticationFailed
