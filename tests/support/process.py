"""billhive serve as a real child process (for crash tests: SIGKILL and restart).

The process is forked by this test worker's zygote (tests/support/zygote.py), which has imported
billhive already, unless the test needs a ``preexec_fn`` (then it is a fresh ``python -m billhive``)."""

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

from tests.support.zygote import Forked, Zygote

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class ServerProcess:
    def __init__(self, database_url: str, *, port: int | None = None, failpoints: str | None = None,
                 log_path: Path | None = None, extra_env: dict | None = None,
                 preexec_fn: Callable[[], None] | None = None, args: tuple[str, ...] = ()):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("BILLHIVE_FAILPOINTS", None)
        if failpoints:
            env["BILLHIVE_FAILPOINTS"] = failpoints
        env.update(extra_env or {})
        self.log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc: subprocess.Popen | Forked
        for attempt in range(3):
            # a free port can be taken by another process (a parallel test worker) before the server
            # binds it: then the server exits at once and, unless the port was given, it gets another
            self.port = port or free_port()
            self.base_url = f"http://127.0.0.1:{self.port}"
            argv = ["serve", "--port", str(self.port), "--database-url", database_url, *args]
            if preexec_fn is None:
                out = self.log.fileno() if log_path else os.open(os.devnull, os.O_WRONLY)
                try:
                    self.proc = Zygote.get().spawn(argv, env=env, cwd=str(ROOT), stdout=out, stderr=out)
                finally:
                    if not log_path:
                        os.close(out)
            else:
                self.proc = subprocess.Popen([sys.executable, "-m", "billhive", *argv], env=env, stdout=self.log,
                                             stderr=self.log, cwd=str(ROOT), preexec_fn=preexec_fn)
            try:
                self.wait_ready()
                return
            except RuntimeError:
                if port or attempt == 2 or self.proc.poll() is None or not _taken(self.port):
                    raise

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        with httpx.Client(timeout=1) as client:
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}")
                try:
                    if client.get(self.base_url + "/health").status_code == 200:
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
