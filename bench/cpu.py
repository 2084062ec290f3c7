"""CPU time per request, from /proc: the server process (all its threads: utime + stime of
/proc/<pid>/stat) and, on PostgreSQL, the backends serving the bench database (the pids
pg_stat_activity lists for that datname), over one measured run, divided by the requests that
run completed.

Linux only; where /proc cannot be read the figures are None. Ticks are 1/CLK_TCK s (10 ms), so
a run of a few thousand requests gives per-request figures to a few microseconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from bench import seed

TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


def ticks(pid: int) -> int | None:
    """utime + stime of a process, all its threads (and none of its children), in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def pg_backends(url: str | None) -> list[int]:
    """The pids of the PostgreSQL backends connected to url's database (other databases' excluded)."""
    if not url or url.startswith("sqlite"):
        return []
    name = make_url(url).database
    rows = seed.query(url, "SELECT pid FROM pg_stat_activity WHERE datname = ? AND pid <> pg_backend_pid()",
                      (name,))
    return [int(r[0]) for r in rows]


@dataclass
class Usage:
    """CPU used during a run: server (all pids given) and PostgreSQL backends, in microseconds."""
    server_us: float | None
    pg_us: float | None

    def per_request(self, requests: int) -> dict:
        def per(x: float | None) -> float | None:
            return round(x / requests, 1) if x is not None and requests else None
        return {"server_cpu_us": per(self.server_us), "pg_cpu_us": per(self.pg_us),
                "server_cpu_s": _s(self.server_us), "pg_cpu_s": _s(self.pg_us)}


def _s(us: float | None) -> float | None:
    return None if us is None else round(us / 1e6, 3)


class CpuMeter:
    """Started before a run, read after it: the CPU the server pids and the bench database's
    PostgreSQL backends used in between. A backend that appears during the run counts from 0
    (it started during the run); one that ends during it counts up to the last reading made
    before it ended (none is made: so it counts nothing; the server's pool keeps its
    connections for the whole run, so this is rare)."""

    def __init__(self, server_pids: tuple[int, ...], pg_url: str | None = None):
        self.server_pids, self.pg_url = server_pids, pg_url
        self.exclude: set[int] = set()  # backends that are the harness's own (bench/pgwait.py's sampler)
        self.start_server = self._server()
        self.start_pg = self._pg()

    def _server(self) -> int | None:
        values = [ticks(p) for p in self.server_pids]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    def _pg(self) -> dict[int, int] | None:
        if not self.pg_url or self.pg_url.startswith("sqlite"):
            return None
        out = {}
        for pid in pg_backends(self.pg_url):
            t = ticks(pid)
            if t is not None:
                out[pid] = t
        return out

    def stop(self) -> Usage:
        end_server = self._server()
        end_pg = self._pg()
        server = None
        if end_server is not None and self.start_server is not None:
            server = (end_server - self.start_server) * TICK_US
        pg = None
        if end_pg is not None and self.start_pg is not None:
            pg = sum(t - self.start_pg.get(pid, 0) for pid, t in end_pg.items() if pid not in self.exclude) * TICK_US
        return Usage(server, pg)
