"""Site rate limits (rate_limit_per_minute): 429 api_request_limit_exceeded with Retry-After,
counted across the site's keys; other sites and unlimited sites are untouched."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass

import chargebee
import httpx
import pytest

from billhive import sites
from billhive.errors import RateLimited
from billhive.http.ratelimit import RateLimiter, retry_after
from billhive.runtime import App, Config
from billhive.store import migrate
from tests.support import contract, sdk
from tests.support.process import ServerProcess


def away_from_a_minute_boundary(margin: float = 5.0) -> None:
    """The count is per wall-clock minute (sliding): keep a burst within one minute."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


def burst(site, n: int, base_urls: list[str] | None = None) -> list[httpx.Response]:
    urls = base_urls or [site.api.server.base_url]

    def one(i: int) -> httpx.Response:
        key = site.key if i % 2 else site.read_only_key  # the limit is the site's, over all its keys
        return httpx.get(urls[i % len(urls)] + "/api/v1/customers", params={"limit": 1}, auth=(key, ""),
                         headers={"Host": f"{site.name}.localhost"}, timeout=30)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(n)))


def test_limit_is_enforced_per_site_with_retry_after(make_site):
    limited, unlimited = make_site(rate_limit_per_minute=5), make_site()
    away_from_a_minute_boundary()
    answers = burst(limited, 80)
    assert sorted(r.status_code for r in answers) == [200] * 5 + [429] * 75
    for r in answers:
        contract.check("GET", "/api/v1/customers", r.status_code, r.json())
        if r.status_code == 429:
            body = r.json()
            assert body["api_error_code"] == "api_request_limit_exceeded" and body["type"] == "operation_failed"
            assert body["http_status_code"] == 429
            assert 1 <= int(r.headers["retry-after"]) <= 120
    assert [r.status_code for r in burst(unlimited, 30)] == [200] * 30


def test_sdk_raises_its_rate_limit_error(server, make_site):
    site = make_site(rate_limit_per_minute=3)
    sdk.configure(server, site)
    away_from_a_minute_boundary()
    for _ in range(3):
        chargebee.Customer.list({"limit": 1})
    with pytest.raises(chargebee.OperationFailedError) as exc:  # what SDK 1.x raises for 429s
        chargebee.Customer.create({"first_name": "Ada"})
    assert exc.value.http_status_code == 429 and exc.value.api_error_code == "api_request_limit_exceeded"
    sdk.configure(server, make_site())  # another site: its own (absent) limit
    chargebee.Customer.list({"limit": 1})


def test_retry_after_is_when_the_next_request_gets_through(app, site):
    """On PostgreSQL through the database's count, on SQLite the process's."""
    site.setting(rate_limit_per_minute=4)
    clock = [60_000_000.0 + 50]  # 10 s before the end of a minute
    limiter = RateLimiter(app.db, ttl=60, clock=lambda: clock[0])

    async def admit() -> int | None:
        try:
            await limiter.admit(site.pk)
        except RateLimited as exc:
            return int(dict(exc.headers)[b"retry-after"])
        return None

    async def scenario() -> None:
        for _ in range(4):
            assert await admit() is None
        wait = await admit()
        assert wait == 11  # in the next minute, with the four of this one weighed in (4 * 50/60 < 4)
        clock[0] += wait - 1
        assert await admit() is not None  # not a second earlier
        clock[0] += 1
        assert await admit() is None
        # the window slides: 4 last minute, 1 now; one more gets in each time another quarter
        # of last minute has slid out (4 * (60 - s) / 60 + n < 4): at 16, 31 and 46 s
        admitted = []
        for s in range(2, 60):
            clock[0] += 1
            if await admit() is None:
                admitted.append(s)
        assert admitted == [16, 31, 46]
    asyncio.run(scenario())


def test_retry_after_arithmetic():
    assert retry_after(5, 0, 10.0, 5) == 51  # the next minute
    assert retry_after(10, 0, 0.0, 5) == 91  # the next minute, once half its weight has slid out
    assert retry_after(2, 6, 30.0, 5) == 1  # 6 * 30/60 + 2 = 5: admitted a moment later
    assert retry_after(0, 10, 0.0, 5) == 31  # half of last minute must slide out first


@pytest.mark.slow
def test_limit_holds_across_api_processes_on_postgresql(pg_url, tmp_path):
    migrate.upgrade(pg_url)
    app = App.open(Config(database_url=pg_url))
    name = f"rl{int(time.time() * 1000) % 10**8}-test"

    @dataclass
    class Site:
        name: str
        key: str
        read_only_key: str

    def create(tx):  # type: ignore[no-untyped-def]
        _, keys = sites.create(tx, name, now=int(time.time()), read_only_key=f"test_ro_{name}")
        sites.set_settings(tx, name, {"rate_limit_per_minute": "10"}, int(time.time()))
        return Site(name, keys["full"], keys["read_only"])
    try:
        site = app.db.write_sync(create)
    finally:
        app.close()
    servers = [ServerProcess(pg_url, log_path=tmp_path / f"server{i}.log") for i in range(2)]
    try:
        away_from_a_minute_boundary()
        # one request through each process first (each admits one: both count), so that a process
        # still cold on a loaded machine (its first key lookup) does not lose the whole burst's race
        for i, s in enumerate(servers):
            key = site.key if i else site.read_only_key
            first = httpx.get(s.base_url + "/api/v1/customers", params={"limit": 1}, timeout=30, auth=(key, ""),
                              headers={"Host": f"{site.name}.localhost"})
            assert first.status_code == 200, first.text
        answers = burst(site, 60, [s.base_url for s in servers])  # alternating between the two processes
        admitted = [i for i, r in enumerate(answers) if r.status_code == 200]
        assert len(admitted) == 8, [r.status_code for r in answers]  # 10 a minute over both processes
        assert {r.status_code for r in answers} == {200, 429}
    finally:
        for s in servers:
            s.stop()
