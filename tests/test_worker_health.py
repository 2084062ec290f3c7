"""Background loops survive their errors and report their liveness; /health answers 503 when
one is down, and a loop that stops makes the server stop (to be restarted by its supervisor)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from billhive import worker
from billhive.errors import StoreUnavailable
from billhive.runtime import App, Config
from billhive.store import migrate
from tests.support.server import LiveServer


@pytest.fixture
def own_app(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    migrate.upgrade(url)
    app = App.open(Config(database_url=url))
    yield app
    app.close()


def test_a_loop_survives_store_errors_backs_off_and_reports_them(own_app, monkeypatch):
    calls: list[float] = []

    async def step(app: App) -> int:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise StoreUnavailable("The database is unreachable (test)")
        return 0

    async def flaky(app: App) -> None:
        await worker.every(app, 0.02, step, "flaky")
    monkeypatch.setattr(worker, "LOOPS", [flaky])

    async def go() -> None:
        task = asyncio.ensure_future(worker.run_background(own_app))
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        state = own_app.loops["flaky"]
        assert state.running and state.failures >= 2 and "unreachable" in state.last_error  # type: ignore[operator]
        while len(calls) < 5:
            await asyncio.sleep(0.01)
        assert state.failures == 0 and state.last_error is None and own_app.background == "running"
        # the pause grew while it failed: 0.04, 0.08, 0.16 s after the 1st, 2nd and 3rd failure
        gaps = [b - a for a, b in zip(calls, calls[1:])]
        assert gaps[2] > gaps[0] * 2.5, gaps
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(go())


def test_a_loop_that_stops_stops_the_background_and_health_says_so(own_app, monkeypatch):
    async def quits(app: App) -> None:
        await worker.every(app, 0.01, _boom, "quitter")
    monkeypatch.setattr(worker, "LOOPS", [quits])
    reasons: list[str] = []
    own_app.on_fatal.append(reasons.append)  # billhive serve's hook stops the server: exit status 1
    server = LiveServer(own_app, background=True)
    try:
        deadline = time.time() + 10
        while not reasons and time.time() < deadline:
            time.sleep(0.05)
        assert reasons and "background loop quits stopped" in reasons[0] and own_app.fatal_error == reasons[0]
        r = httpx.get(server.base_url + "/health", timeout=10)
        assert r.status_code == 503
        body = r.json()
        assert body["background"]["state"] == "stopped" and body["background"]["loops"]["quitter"]["alive"] is False
        assert any("stopping" in p for p in body["problems"])
    finally:
        server.stop()


class Unrecoverable(BaseException):
    """Not an Exception: every() does not absorb it, the loop stops."""


async def _boom(app: App) -> None:
    raise Unrecoverable("a loop that cannot go on")


def test_health_reports_a_failing_loop_as_down(own_app, monkeypatch):
    async def failing(app: App) -> None:
        await worker.every(app, 0.01, _fails, "failing")
    monkeypatch.setattr(worker, "LOOPS", [failing])
    server = LiveServer(own_app, background=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline and own_app.loops.get("failing") is None:
            time.sleep(0.02)
        while time.time() < deadline and own_app.loops["failing"].failures < 3:
            time.sleep(0.02)
        r = httpx.get(server.base_url + "/health", timeout=10)
        assert r.status_code == 503, r.text
        assert r.json()["background"]["loops"]["failing"]["failing"] is True
        assert any("failing" in p and "ValueError" in p for p in r.json()["problems"])
    finally:
        server.stop()


async def _fails(app: App) -> None:
    raise ValueError(f"bug {uuid.uuid4().hex[:4]}")


def test_health_is_ok_with_the_real_loops(server):
    body = httpx.get(server.base_url + "/health", timeout=10).json()
    assert body["status"] == "ok" and body["store"]["reachable"] and body["store"]["writable"]
    assert body["background"]["state"] == "running"
    assert {"scheduler", "webhook delivery", "email delivery", "payment recovery"} <= set(body["background"]["loops"])
    assert all(loop["alive"] for loop in body["background"]["loops"].values())
