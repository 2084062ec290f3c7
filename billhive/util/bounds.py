"""Integer bounds of the wire format, shared by parameter decoding (http/params.py) and list
filters (store/lists.py): strict decimal parsing and the ranges values must lie in."""

from __future__ import annotations

import re

from billhive.errors import ParamError

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# unix-time values: 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, what dates and periods can hold
UNIX_TIME = (0, 253_402_300_799)

_INT = re.compile(r"^[+-]?[0-9]+$")


def parse_int(raw: str, param: str, bounds: tuple[int, int] = INT64) -> int:
    """A decimal integer (ASCII digits, optional sign) within ``bounds``; else a ParamError naming
    ``param``."""
    if not _INT.match(raw):
        raise ParamError(f"{param} : invalid integer value {raw[:40]!r}", param=param)
    lo, hi = bounds
    # length first: int() of thousands of digits is slow, and refused past 4,300
    if len(raw.lstrip("+-").lstrip("0")) > len(str(max(-lo, hi))) or not lo <= int(raw) <= hi:
        raise ParamError(f"{param} : value out of range ({lo} to {hi})", param=param)
    return int(raw)
