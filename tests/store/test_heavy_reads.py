"""One site's heavy reads do not stall another site's requests, and a statement that runs too
long is stopped with a clear 503 (a real ``billhive serve``, on both stores)."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from billhive import sites
from billhive.store import migrate
from billhive.store.db import Database, StoreLimits
from billhive.store.resources import CUSTOMERS
from tests.support.process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # latency percentiles, a 2 ms statement timeout
ROWS = 60_000  # site A's customers: a scan of them takes tens of milliseconds
HEAVY = "/api/v1/customers?limit=100&first_name[starts_with]=zz&last_name[starts_with]=zz"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(request, tmp_path_factory):
    """Site A with many customers, site B with one; (url, key A, key B)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('heavy') / 'heavy.db'}"
        databases = None
    else:
        request.applymarker(pytest.mark.postgres)
        databases = request.getfixturevalue("own_pg_databases")
        url = databases.take()
    migrate.upgrade(url)
    # the seeding writes 20,000 rows per unit: on a loaded machine that can pass the default 5 s
    # statement budget, which is no part of what is tested here (the servers below keep their defaults)
    db = Database(url, synchronous="OFF", limits=StoreLimits(statement_timeout=120, unit_timeout=120))
    try:
        now = int(time.time())
        key_a, key_b = "test_" + uuid.uuid4().hex, "test_" + uuid.uuid4().hex
        a, _ = db.write_sync(lambda tx: sites.create(tx, "heavy-a-test", now=now, api_key=key_a))
        b, _ = db.write_sync(lambda tx: sites.create(tx, "light-b-test", now=now, api_key=key_b))
        for lo in range(0, ROWS, 20_000):
            docs = [customer(f"cust_{i:07d}", now) for i in range(lo, min(ROWS, lo + 20_000))]
            db.write_sync(lambda tx, docs=docs: CUSTOMERS.insert_many(tx, a.pk, docs, now))
        db.write_sync(lambda tx: CUSTOMERS.insert_many(tx, b.pk, [customer("cust_b", now)], now))
    finally:
        db.close()
    yield url, key_a, key_b
    if databases is not None:
        databases.give_back(url)


def customer(cid: str, now: int) -> dict:
    return {"id": cid, "object": "customer", "first_name": "Ann", "last_name": "Lee", "email": f"{cid}@example.com",
            "auto_collection": "on", "allow_direct_debit": False, "created_at": now, "taxability": "taxable",
            "account_credits": 0, "refundable_credits": 0, "excess_payments": 0}


def test_heavy_reads_on_one_site_leave_another_sites_retrieve_fast(seeded, tmp_path):
    """Four clients list site A's customers with filters that match nothing (each a scan of
    60,000 rows) without pause; site B's retrieve stays under 50 ms at the 99th percentile.
    (Best of three rounds of 200: the machine running the tests is shared; a stalled event
    loop fails every round - before reads moved off it, B's p99 was 250-500 ms.)"""
    url, key_a, key_b = seeded
    server = ServerProcess(url, log_path=tmp_path / "server.log")
    stop = threading.Event()
    heavy_times: list[float] = []

    def hammer() -> None:
        with httpx.Client(base_url=server.base_url, auth=(key_a, ""), timeout=30) as c:
            while not stop.is_set():
                t = time.perf_counter()
                r = c.get(HEAVY)
                assert r.status_code == 200, r.text
                heavy_times.append(time.perf_counter() - t)
    hammers = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        rounds = []
        with httpx.Client(base_url=server.base_url, auth=(key_b, ""), timeout=30) as b:
            for _ in range(20):  # warm up: connections, key caches
                assert b.get("/api/v1/customers/cust_b").status_code == 200
            for h in hammers:
                h.start()
            time.sleep(0.5)
            for _ in range(3):
                latencies = []
                for _ in range(200):
                    t = time.perf_counter()
                    r = b.get("/api/v1/customers/cust_b")
                    latencies.append(time.perf_counter() - t)
                    assert r.status_code == 200
                latencies.sort()
                rounds.append(latencies[int(len(latencies) * 0.99) - 1])
                if rounds[-1] < 0.050:
                    break
        stop.set()
        for h in hammers:
            h.join()
        assert len(heavy_times) >= 3 and sorted(heavy_times)[len(heavy_times) // 2] > 0.02, heavy_times[:5]  # heavy
        assert min(rounds) < 0.050, f"site B's retrieve p99 per round (ms): {[round(p * 1000, 1) for p in rounds]}"
    finally:
        stop.set()
        server.stop()


def test_a_statement_over_the_timeout_is_stopped_with_a_503(seeded, tmp_path):
    url, key_a, key_b = seeded
    server = _start_with_a_tiny_statement_timeout(url, tmp_path)
    try:
        r = httpx.get(server.base_url + HEAVY, auth=(key_a, ""), timeout=30)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["api_error_code"] == "internal_temporary_error" and body["type"] == "operation_failed"
        assert "statement timeout" in body["message"] and body["http_status_code"] == 503
        # A cheap statement still goes through: the timeout stops statements, not the store. On a
        # shared machine a cold connection's first lookups can themselves pass 2 ms, so a few
        # tries are allowed - each failure must be the same clean 503, and one must succeed.
        light = []
        for _ in range(20):
            r = httpx.get(server.base_url + "/api/v1/customers/cust_b", auth=(key_b, ""), timeout=30)
            light.append(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.json()["api_error_code"] == "internal_temporary_error", r.text
            time.sleep(0.05)
        assert light[-1] == 200, light
        assert httpx.get(server.base_url + "/health", timeout=30).status_code == 200  # the store itself is fine
    finally:
        server.stop()


def _start_with_a_tiny_statement_timeout(url: str, tmp_path) -> ServerProcess:  # type: ignore[no-untyped-def]
    """A server whose statements may run 2 ms. On a loaded machine its own start-up statements can
    pass that and it refuses to start (exit 1, the timeout in its log): then it is started again."""
    for attempt in range(5):
        log = tmp_path / f"server{attempt}.log"
        try:
            return ServerProcess(url, log_path=log, extra_env={"BILLHIVE_STATEMENT_TIMEOUT": "0.002"})
        except RuntimeError:
            if "timeout" not in log.read_text().lower():
                raise
    raise AssertionError("the server never started with a 2 ms statement timeout")
