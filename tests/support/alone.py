"""``@pytest.mark.alone``: a test that measures time (latency percentiles, millisecond timeouts)
runs while no test runs in another xdist worker of the same run.

Every other test holds a shared lock for its whole run (setup to teardown); an ``alone`` test takes
the lock exclusively for its call. A turnstile lock in front keeps new shared holders out while an
exclusive one waits, so it waits at most for the tests running now. The locks are files in the
run's base temporary directory, which the workers of one run share (and no other run sees).
Without xdist (``-n0``) there is nothing to exclude and nothing is locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def lock_dir(config: pytest.Config) -> Path | None:
    """The directory the workers of this run share, or None outside xdist workers."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    return config._tmp_path_factory.getbasetemp().parent  # type: ignore[attr-defined]


@contextlib.contextmanager
def held(directory: Path, *, exclusive: bool) -> Iterator[None]:
    with open(directory / "alone.gate", "a") as gate, open(directory / "alone.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            fcntl.flock(gate, fcntl.LOCK_UN)
            raise
        if not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)  # an exclusive holder keeps the gate until it is done
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(gate, fcntl.LOCK_UN)


@contextlib.contextmanager
def beside(directory: Path) -> Iterator[None]:
    """For a short job a test worker runs in the background (tests/support/pg.py): it waits while an
    ``alone`` test runs, but not at the turnstile (its test may be the one an ``alone`` test waits
    for, and may wait for the job: the turnstile would make that a deadlock)."""
    with open(directory / "alone.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
