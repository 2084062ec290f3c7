"""PostgreSQL connections dropped under a running server (what a PostgreSQL restart, a failover
or an idle-connection timeout does): ``pg_terminate_backend`` on every backend of the server's
database, idle and under collect load. Every request answers within 10 s, collects succeed
again within 5 s, and nothing is lost or doubled: every invoice closed once, numbers gapless,
one charge per closed invoice."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.crash.test_kill_collect import check, seed, wait_settled
from tests.support import pg
from tests.support.process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ANSWER_WITHIN = 10.0
RECOVER_WITHIN = 5.0


@pytest.fixture
def own_pg(pg_url, fresh_pg_url):
    """A database of this test's own, and an admin connection to the server (not to it)."""
    with pg.connect(make_url(pg_url)) as admin:
        yield fresh_pg_url, make_url(fresh_pg_url).database, admin


def terminate_all(admin: psycopg.Connection, dbname: str) -> int:
    rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)).fetchall()
    return len(rows)


class Client:
    """Collects over HTTP, recording every answer's status and how long it took."""

    def __init__(self, base_url: str, key: str):
        self.base_url, self.key = base_url, key
        self.answers: list[tuple[float, float, int | str]] = []  # (started, seconds, status or error)
        self.lock = threading.Lock()

    def collect(self, draft: str) -> int | str:
        started = time.monotonic()
        try:
            r = httpx.post(f"{self.base_url}/api/v1/invoices/{draft}/collect", auth=(self.key, ""),
                           timeout=ANSWER_WITHIN + 2)
            status: int | str = r.status_code
            if r.status_code >= 500:
                body = r.json()  # a Chargebee-style error, never a bare 500
                assert r.status_code == 503, body
                assert body["api_error_code"] in ("db_connection_failure", "internal_temporary_error"), body
                assert body["type"] == "operation_failed" and body["http_status_code"] == 503, body
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        with self.lock:
            self.answers.append((started, time.monotonic() - started, status))
        return status


def collect_until_closed(client: Client, drafts: list[str], deadline: float) -> None:
    """Collect each draft until it is closed: 200, or 409 (closed already, by an earlier attempt
    whose answer was lost); 503s are retried, as a client would."""
    left = list(drafts)
    last: dict[str, int | str] = {}
    while left and time.monotonic() < deadline:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            last = dict(zip(left, pool.map(client.collect, left)))
        left = [d for d, s in last.items() if s not in (200, 409)]
        if left:
            time.sleep(0.2)
    assert not left, f"{len(left)} invoices could not be collected: {sorted(set(last.values()), key=str)}"


def test_terminated_connections_idle_and_under_collect_load(own_pg, tmp_path):
    url, dbname, admin = own_pg
    h, drafts = seed(url)
    log = tmp_path / "server.log"
    server = ServerProcess(url, log_path=log, extra_env={"BILLHIVE_RECOVERY_INTERVAL": "1"})
    try:
        client = Client(server.base_url, h.key)
        idle, loaded, rest = drafts[:5], drafts[5:30], drafts[30:]
        assert client.collect(idle[0]) == 200  # every kind of connection is open now (pool, lane, gateway)

        # 1. idle: every backend of the server is terminated between requests
        assert terminate_all(admin, dbname) >= 2
        time.sleep(0.2)
        t0 = time.monotonic()
        collect_until_closed(client, idle[1:], t0 + RECOVER_WITHIN)
        first_ok = min(s + d for s, d, st in client.answers if s >= t0 and st == 200)
        assert first_ok - t0 < RECOVER_WITHIN, "collects did not work again within 5 s of the terminate"
        assert httpx.get(server.base_url + "/health", timeout=ANSWER_WITHIN).status_code == 200

        # 2. under load: backends terminated again and again while 16 clients collect
        stop = threading.Event()

        def terminator() -> None:
            while not stop.wait(0.15):
                terminate_all(admin, dbname)
        killer = threading.Thread(target=terminator)
        killer.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(client.collect, loaded))
        finally:
            stop.set()
            killer.join()
        t1 = time.monotonic()
        # ... and afterwards collects succeed again within 5 s
        collect_until_closed(client, loaded + rest, t1 + 30)
        after = [(s + d, st) for s, d, st in client.answers if s >= t1]
        assert after and min(end for end, st in after if st == 200) - t1 < RECOVER_WITHIN

        # every request answered, within 10 s
        slow = [(d, st) for _, d, st in client.answers if d > ANSWER_WITHIN or isinstance(st, str)]
        assert not slow, f"requests that took over {ANSWER_WITHIN} s or got no answer: {slow[:10]}"
        statuses = {st for _, _, st in client.answers}
        assert statuses <= {200, 409, 503}, statuses
        health = httpx.get(server.base_url + "/health", timeout=ANSWER_WITHIN)
        assert health.status_code == 200, health.text
        assert health.json()["background"]["state"] == "running"
        assert server.proc.poll() is None  # still serving

        # nothing lost or doubled
        wait_settled(h, timeout=30)
        assert check(h, drafts) == {"pending": 0, "paid": len(drafts)}
    finally:
        server.stop()
        h.app.close()

