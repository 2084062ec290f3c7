"""The HTTP load generator: wrk with bench/wrk.lua, and the id files it reads."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.noise import Meter

LUA = Path(__file__).with_name("wrk.lua")


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages (apt-get install -y wrk) when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: wrk is not installed; installing it: apt-get install -y wrk", file=sys.stderr, flush=True)
    for cmd in (["apt-get", "install", "-y", "wrk"], ["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        try:
            subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        except FileNotFoundError:
            break
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("bench: wrk is required and could not be installed (apt-get install -y wrk)")


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def bench_json(stdout: str) -> dict | None:
    """The "BENCH_JSON {...}" line that wrk.lua and the store-only child print."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    return json.loads(line[len("BENCH_JSON "):]) if line else None


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def write_ids(directory: Path, name: str, ids: list[str], threads: int) -> str:
    """Split ids into one contiguous slice per wrk thread; returns the prefix wrk.lua takes."""
    prefix = directory / f"{name}_"
    per = -(-len(ids) // threads) if ids else 0
    for k in range(threads):
        Path(f"{prefix}{k}.txt").write_text("".join(i + "\n" for i in ids[k * per:(k + 1) * per]))
    return str(prefix)


@dataclass
class WrkResult:
    seconds: float  # the run's actual duration (the active window when its ids ran out)
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    other_cpu_pct: float | None  # the machine's CPU taken by other work meanwhile (bench/noise.py)
    bytes_per_response: int  # headers included: is the ceiling's document the size of the real one?
    errors: int  # HTTP status >= 400 plus socket errors (connect, read, write, timeout)
    status_errors: int
    socket_errors: dict
    ids_used: int
    threads_exhausted: int
    cpu: dict = field(default_factory=dict)  # bench/cpu.py: server and PostgreSQL CPU per request, when measured

    def as_dict(self) -> dict:
        return asdict(self)


def run_wrk(wrk: str, base_url: str, *, seconds: int, connections: int, threads: int, method: str, path: str,
            auth: str, ids_prefix: str = "-", mode: str = "cycle", hook: bool = False,
            timeout_s: int = 5, our_pids: tuple[int, ...] = ()) -> WrkResult:
    """mode: once | cycle | random (see wrk.lua); hook: route every request through delay() (once
    needs it; a run and its ceiling should agree, so that wrk's own work is the same for both)."""
    if mode == "once" and not hook:
        raise ValueError("mode once needs the delay hook")
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, int(seconds))}s", f"--timeout={timeout_s}s",
           "-s", str(LUA), base_url, "--", method, path, auth, ids_prefix, mode, str(connections // threads),
           "delay" if hook else "none"]
    meter = Meter(*our_pids)  # the server (and py-spy): not other work
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    other = meter.other_pct()
    r = bench_json(proc.stdout)
    if proc.returncode != 0 or r is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    # a run whose threads ran out of ids ends early, but wrk waits out -d: count the active window
    secs = (r["active_us"] if r["threads_exhausted"] and r["active_us"] else r["duration_us"]) / 1e6
    socket_errors = {k: r[k] for k in ("connect", "read", "write", "timeout")}
    return WrkResult(
        seconds=round(secs, 3), requests=r["requests"], rps=round(r["requests"] / secs, 1) if secs else 0.0,
        p50_ms=r["p50_us"] / 1000, p90_ms=r["p90_us"] / 1000, p99_ms=r["p99_us"] / 1000,
        p999_ms=r["p999_us"] / 1000, max_ms=r["max_us"] / 1000, mean_ms=round(r["mean_us"] / 1000, 3),
        other_cpu_pct=other, bytes_per_response=r["bytes"] // r["requests"] if r["requests"] else 0,
        errors=r["status"] + sum(socket_errors.values()), status_errors=r["status"], socket_errors=socket_errors,
        ids_used=r["ids_used"], threads_exhausted=r["threads_exhausted"])
