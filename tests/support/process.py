"""billhive serve as a real child process (for crash tests: SIGKILL and restart)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ServerProcess:
    def __init__(self, database_url: str, *, port: int | None = None, failpoints: str | None = None,
                 log_path: Path | None = None, extra_env: dict | None = None,
                 preexec_fn: Callable[[], None] | None = None, args: tuple[str, ...] = ()):
        self.port = port or free_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("BILLHIVE_FAILPOINTS", None)
        if failpoints:
            env["BILLHIVE_FAILPOINTS"] = failpoints
        env.update(extra_env or {})
        self.log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "billhive", "serve", "--port", str(self.port), "--database-url", database_url,
             *args],
            env=env, stdout=self.log, stderr=self.log, cwd=str(ROOT), preexec_fn=preexec_fn)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_exit(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)
