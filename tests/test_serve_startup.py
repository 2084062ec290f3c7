"""``billhive serve`` start-up tells the truth: it binds its port before it announces anything or
touches the database, and on SQLite only one process runs the background loops."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

from tests.support import zygote
from tests.support.process import ROOT, ServerProcess

pytestmark = pytest.mark.slow


def test_a_taken_port_fails_before_anything_starts(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    db = tmp_path / "never.db"
    try:
        out = zygote.run(["serve", "--port", str(port), "--database-url", f"sqlite:///{db}"], cwd=str(ROOT),
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        taken.close()
    assert out.returncode == 2
    assert f"billhive: cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr, out.stderr
    assert "listening" not in out.stdout and "startup complete" not in out.stderr.lower()
    assert not db.exists()  # no migrations ran, no site was created, no worker started


def health(server: ServerProcess) -> dict:
    return httpx.get(server.base_url + "/health", timeout=10).json()


def test_one_sqlite_file_two_servers_one_runs_the_background_loops(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = ServerProcess(url, log_path=tmp_path / "first.log")
    second = None
    try:
        assert health(first)["background"]["state"] == "running"
        second = ServerProcess(url, log_path=tmp_path / "second.log")
        text = (tmp_path / "second.log").read_text()
        assert f"another billhive process (pid {first.proc.pid}) runs the background work" in text, text
        assert "serves the API only" in text
        report = health(second)
        assert report["status"] == "ok" and report["background"] == {"state": "standby", "loops": {}}
        assert set(health(first)["background"]["loops"]) >= {"scheduler", "webhook delivery", "payment recovery"}
        # the second serves the API meanwhile
        key = (tmp_path / "first.log").read_text().split("full-access API key:")[1].split()[0]
        assert httpx.get(second.base_url + "/api/v1/events", auth=(key, ""), timeout=10).status_code == 200
        # ... and takes the loops over when the first goes away, however it goes
        first.kill()
        deadline = time.time() + 10
        while time.time() < deadline and health(second)["background"]["state"] != "running":
            time.sleep(0.2)
        assert health(second)["background"]["state"] == "running"
        assert "took over the background loops" in (tmp_path / "second.log").read_text()
    finally:
        first.stop()
        if second is not None:
            second.stop()

