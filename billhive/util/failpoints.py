"""Crash injection for the crash tests: ``BILLHIVE_FAILPOINTS="collect.closed:3"`` makes the
process kill itself (SIGKILL: no cleanup, no flush) the 3rd time it reaches that point.

Off unless the variable is set at start-up; then a hit costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_armed: dict[str, int] = {}
_lock = threading.Lock()
for _spec in filter(None, os.environ.get("BILLHIVE_FAILPOINTS", "").split(",")):
    _name, _, _n = _spec.partition(":")
    _armed[_name.strip()] = int(_n or 1)


def hit(name: str) -> None:
    if not _armed or name not in _armed:
        return
    with _lock:
        _armed[name] -= 1
        if _armed[name] > 0:
            return
    os.kill(os.getpid(), signal.SIGKILL)
