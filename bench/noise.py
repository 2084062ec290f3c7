"""How much of the machine other work took during a measurement (the machine is shared).

``other_cpu_pct``: of all the CPU time the machine had during a run, the share used by processes
other than the server (or the store-only process), wrk and PostgreSQL — and the kernel's interrupt
work (irq, softirq, ksoftirqd), which is mostly the loopback traffic of the benchmark itself.
Linux only (/proc); where /proc is missing it is None.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


def _machine() -> tuple[int, int] | None:
    """(busy, total) clock ticks over all CPUs since boot."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    # not busy: idle, iowait; and not counted as other work: irq and softirq (mostly the loopback
    # traffic between wrk and the server, which the kernel charges to no process)
    not_busy = fields[3] + fields[4] + fields[5] + fields[6]
    return sum(fields) - not_busy, sum(fields)


def _ticks(stat: str) -> tuple[str, int]:
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2:].split()
    return comm, int(rest[11]) + int(rest[12])  # utime, stime


def _ours(pids: tuple[int, ...]) -> int:
    """Ticks used so far by pids (and their threads) and by every postgres process."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            comm, ticks = _ticks(Path(entry.path, "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        if int(entry.name) in pids or comm == "postgres" or comm.startswith("ksoftirqd/"):
            total += ticks
    return total


def _children_ticks() -> int:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children: wrk, once it has exited
    return round((r.ru_utime + r.ru_stime) * os.sysconf("SC_CLK_TCK"))


class Meter:
    """Started before a run, read after it (after wrk has been waited for)."""

    def __init__(self, *pids: int):
        self.pids = (os.getpid(), *pids)  # the harness itself is ours too
        self.start = _machine()
        if self.start is not None:
            self.ours = _ours(pids)
            self.children = _children_ticks()

    def other_pct(self) -> float | None:
        end = _machine()
        if self.start is None or end is None:
            return None
        busy, total = end[0] - self.start[0], end[1] - self.start[1]
        ours = (_ours(self.pids) - self.ours) + (_children_ticks() - self.children)
        return round(max(0.0, 100 * (busy - ours) / total), 1) if total > 0 else None


def wait_quiet(*pids: int, threshold_pct: float = 10.0, longest_s: float = 30.0) -> float | None:
    """Wait (up to longest_s) until other work takes less than threshold_pct of the machine for a
    second; returns the last share seen."""
    deadline = time.monotonic() + longest_s
    while True:
        m = Meter(*pids)
        time.sleep(1.0)
        pct = m.other_pct()
        if pct is None or pct < threshold_pct or time.monotonic() >= deadline:
            return pct
