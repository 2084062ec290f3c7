"""Crash injection for the crash tests: ``BILLHIVE_FAILPOINTS="collect.closed:3"`` (read by
``Config``, armed by ``App.open``) makes the process kill itself (SIGKILL: no cleanup, no flush)
the 3rd time it reaches that point.

Off unless armed; then a hit costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_armed: dict[str, int] = {}
_lock = threading.Lock()


def arm(spec: str) -> None:
    """Arm the failpoints of ``spec``: ``name[:n],...`` (the n-th hit kills the process; default 1)."""
    for item in filter(None, spec.split(",")):
        name, _, n = item.partition(":")
        _armed[name.strip()] = int(n or 1)


def hit(name: str) -> None:
    if not _armed or name not in _armed:
        return
    with _lock:
        _armed[name] -= 1
        if _armed[name] > 0:
            return
    os.kill(os.getpid(), signal.SIGKILL)
