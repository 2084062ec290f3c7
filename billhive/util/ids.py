"""Identifiers shaped like Chargebee's: 17 base62 characters (optional prefix), time-ordered.

Chargebee's generated ids sort by creation time (ids made close together share a prefix).
billhive's do too: 9 characters of microseconds since the epoch, then 8 random ones. Besides
matching Chargebee, this keeps each new row at the right edge of its (site_id, id) index, so a
batch of inserts touches a few index pages instead of one random page per row.
"""

from __future__ import annotations

import os
import random
import threading
import time

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # ASCII order
# each random byte maps to a character (a slight bias towards the first 8 characters is
# harmless: ids are unique by their time part and 8 random characters, not secret)
_TABLE = bytes(ord(_ALPHABET[b % 62]) for b in range(256))
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # every two-digit number, 62 * 62
_lock = threading.Lock()
_last = 0


def _time_part() -> str:
    """9 base62 digits of microseconds since the epoch, strictly increasing in this process."""
    global _last
    with _lock:
        now = max(time.time_ns() // 1000, _last + 1)
        _last = now
    return _base62_9(now)


def _base62_9(n: int) -> str:
    """The last 9 base62 digits of n, two at a time."""
    n, d4 = divmod(n, 3844)
    n, d3 = divmod(n, 3844)
    n, d2 = divmod(n, 3844)
    n, d1 = divmod(n, 3844)
    return _ALPHABET[n % 62] + _PAIRS[d1] + _PAIRS[d2] + _PAIRS[d3] + _PAIRS[d4]


def random_id(prefix: str = "", length: int = 17) -> str:
    """A time-ordered id: prefix + 9 time characters + (length - 9) random ones.

    The random part comes from ``random`` (reseeded in a forked child), not ``os.urandom``: these
    ids are unique, not secret, and a system call releases the GIL, which a busy thread (the
    store's writer makes most ids) then waits to get back."""
    return prefix + _time_part() + random.randbytes(max(length - 9, 4)).translate(_TABLE).decode()


def secret_id(prefix: str = "", length: int = 32) -> str:
    """An unguessable id (tokens, hosted page ids): random characters only."""
    return prefix + os.urandom(length).translate(_TABLE).decode()


def event_id() -> str:
    return random_id("ev_", 17)


def txn_id() -> str:
    return random_id("txn_", 17)


def draft_invoice_id() -> str:
    return random_id("draft_inv_", 17)
