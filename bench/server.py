"""``billhive serve`` as a child process with its production settings (SQLite synchronous=FULL,
PostgreSQL synchronous_commit as the server has it (on), no access log, background workers on)
plus the ceiling routes (``python -m bench.ceiling serve``, bench/ceiling.py); and py-spy attached to it on request."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """args: more arguments for billhive serve (e.g. --no-background)."""

    def __init__(self, database_url: str, log_path: Path, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        for name in ("BILLHIVE_FAILPOINTS", "BILLHIVE_DATABASE_URL", "BILLHIVE_BACKGROUND"):
            env.pop(name, None)
        # billhive serve with the ceiling routes mounted (bench/ceiling.py)
        self.command = [sys.executable, "-m", "bench.ceiling", "serve", "--port", str(self.port),
                        "--database-url", database_url, *args]
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(ROOT))
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"billhive serve exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"billhive serve did not become ready; see {self.log_path}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        return _stop(self.proc, self._log)


class Worker:
    """``billhive worker`` as a child process: the background loops without the API."""

    def __init__(self, database_url: str, log_path: Path):
        self.log_path = log_path
        env = dict(os.environ)
        for name in ("BILLHIVE_FAILPOINTS", "BILLHIVE_DATABASE_URL", "BILLHIVE_BACKGROUND"):
            env.pop(name, None)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "billhive", "worker", "--database-url", database_url],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        deadline = time.monotonic() + 60
        while "running background jobs" not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"billhive worker did not start; see {log_path}:\n{self.log_text()[-2000:]}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        return _stop(self.proc, self._log)


def _stop(proc: subprocess.Popen, log: Any) -> int | None:
    """SIGTERM, then SIGKILL after 30 s; close the child's log; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    log.close()
    return proc.returncode


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench: --profile needs py-spy: pip install py-spy (or pip install -e '.[bench]')")
    return found


class Profiler:
    """py-spy sampling a running process for a while; writes a speedscope file."""

    def __init__(self, pid: int, out: Path, seconds: int):
        self.out = out
        self.proc = subprocess.Popen(
            [py_spy(), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200", "--nonblocking",
             "--threads", "--format", "speedscope", "--output", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.5)  # py-spy attaches before the load starts

    def wait(self) -> Path | None:
        try:
            output, _ = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        if self.proc.returncode != 0 or not self.out.exists():
            print(f"bench: py-spy failed: {output.decode(errors='replace')[-1000:]}", file=sys.stderr)
            return None
        return self.out
