"""A full disk and a read-only database: writes answer a clear 503 (the store cannot write) while
reads go on, /health says 503 while it lasts, writes resume by themselves when space returns;
and billhive refuses to start on a database it cannot write, naming the file."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billhive import sites
from billhive.runtime import App, Config
from billhive.store import migrate
from tests.support import zygote
from tests.support.process import ROOT, ServerProcess, free_port
from tests.support.server import Api, LiveServer

pytestmark = pytest.mark.slow


def test_disk_full_simulated_is_a_503_and_writes_resume(tmp_path):
    """SQLITE_FULL through ``PRAGMA max_page_count`` on the writer's connection (in process,
    through the HTTP API: every answer is checked against the spec)."""
    url = f"sqlite:///{tmp_path / 'full.db'}"
    migrate.upgrade(url)
    app = App.open(Config(database_url=url))
    server = LiveServer(app, background=False)
    try:
        key = "test_" + uuid.uuid4().hex
        app.db.write_sync(lambda tx: sites.create(tx, "full-test", now=int(time.time()), api_key=key))
        api = Api(server, "full-test", key)
        api.post("/customers", {"id": "before", "first_name": "Ann"})
        pages = app.db.write_sync(lambda tx: tx.cur.execute("PRAGMA page_count").fetchone()[0])
        app.db.write_sync(lambda tx: tx.cur.execute(f"PRAGMA max_page_count = {pages}").fetchall())
        big = "x" * 60_000
        r = api.post("/customers", {"id": "c1", "first_name": "Bo", "meta_data": f'{{"a": "{big}"}}'}, expect=503)
        assert r["api_error_code"] == "site_read_only_mode" and r["type"] == "operation_failed"
        assert "cannot write" in r["message"] and "full" in r["message"]
        health = httpx.get(server.base_url + "/health")
        assert health.status_code == 503 and health.json()["store"]["writable"] is False
        assert health.json()["status"] == "unavailable" and health.json()["store"]["reachable"] is True
        api.get("/customers/before")  # reads go on
        api.get("/customers/c1", expect=404)  # nothing half-written
        app.db.write_sync(lambda tx: tx.cur.execute("PRAGMA max_page_count = 1073741823").fetchall())  # space again
        api.post("/customers", {"id": "c1", "first_name": "Bo", "meta_data": f'{{"a": "{big}"}}'})
        time.sleep(1.05)  # past the health probe's cache
        assert httpx.get(server.base_url + "/health").status_code == 200
    finally:
        server.stop()
        app.close()


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: closing has nothing left to write
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
    return filler


def test_disk_full_for_real_on_a_small_filesystem(tmp_path):
    with small_filesystem(tmp_path / "small", "24m") as fs:
        url = f"sqlite:///{fs / 'billhive.db'}"
        server = ServerProcess(url, log_path=tmp_path / "server.log")
        try:
            key = "test_" + uuid.uuid4().hex
            out = zygote.run(["site", "create", "fs-test", "--api-key", key, "--database-url", url],
                             env=dict(os.environ), cwd=str(ROOT), timeout=60)
            assert out.returncode == 0, out.stderr
            c = httpx.Client(base_url=server.base_url, auth=(key, ""), timeout=15)
            assert c.post("/api/v1/customers", data={"id": "before"}).status_code == 200
            filler = fill(fs)
            big = "y" * 60_000
            failed = None
            for i in range(400):  # the WAL takes a few writes in space it already has
                r = c.post("/api/v1/customers", data={"id": f"c{i}", "meta_data": f'{{"a": "{big}"}}'})
                if r.status_code != 200:
                    failed = r
                    break
            assert failed is not None, "the disk never filled up"
            assert failed.status_code == 503, failed.text
            body = failed.json()
            assert body["api_error_code"] == "site_read_only_mode" and "cannot write" in body["message"]
            health = httpx.get(server.base_url + "/health", timeout=15)
            assert health.status_code == 503 and health.json()["store"]["writable"] is False
            assert c.get("/api/v1/customers/before").status_code == 200  # reads go on
            filler.unlink()  # space returns: writes resume by themselves
            deadline = time.time() + 10
            while time.time() < deadline:
                r = c.post("/api/v1/customers", data={"id": "after", "meta_data": f'{{"a": "{big}"}}'})
                if r.status_code == 200:
                    break
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            time.sleep(1.05)
            assert httpx.get(server.base_url + "/health", timeout=15).status_code == 200
            assert server.proc.poll() is None
        finally:
            server.stop()


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """The directory, read-only: a read-only bind mount as root (whom file modes do not stop),
    else file modes."""
    if os.geteuid() == 0:
        view = directory.with_name(directory.name + "-ro")
        view.mkdir()
        ok = subprocess.run(["mount", "--bind", str(directory), str(view)], capture_output=True).returncode == 0
        ok = ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(view)],
                                   capture_output=True).returncode == 0
        if not ok:
            subprocess.run(["umount", "-l", str(view)], capture_output=True)
            pytest.skip("cannot make a read-only bind mount here")
        try:
            yield view
        finally:
            subprocess.run(["umount", "-l", str(view)], capture_output=True)
        return
    for p in directory.iterdir():
        p.chmod(0o444)
    directory.chmod(0o555)
    try:
        yield directory
    finally:
        directory.chmod(0o755)


def test_refuses_to_start_on_a_database_it_cannot_write(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'billhive.db'}"
    migrate.upgrade(url)
    with read_only(data) as ro:
        ro_url = f"sqlite:///{ro / 'billhive.db'}"
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = zygote.run(["serve", "--port", str(port), "--database-url", ro_url], cwd=str(ROOT), env=env, timeout=60)
        assert out.returncode != 0
        assert f"cannot write to the database {ro / 'billhive.db'}" in out.stderr, out.stderr
        assert "listening" not in out.stdout and "startup complete" not in out.stderr
        out = zygote.run(["worker", "--database-url", ro_url], cwd=str(ROOT), env=env, timeout=60)
        assert out.returncode != 0 and str(ro / "billhive.db") in out.stderr, out.stderr
