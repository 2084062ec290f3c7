"""Billing periods on the calendar (UTC): adding days, weeks, months and years to a moment, and
the terms of a subscription. Pure: timestamps in, timestamps out.

Months and years keep the time of day and the day of the month of their *anchor*; a day the
target month does not have is clamped to its last day (Jan 31 + 1 month = Feb 28/29). Terms are
always counted from the anchor, never chained, so a clamped month does not drag later terms
(Jan 31 -> Feb 28 -> Mar 31 -> Apr 30 ...).
"""

from __future__ import annotations

import calendar
import datetime as dt

UNITS = ("day", "week", "month", "year")
DAY = 86400
_UTC = dt.UTC


def _to_dt(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, _UTC)


def _from_dt(d: dt.datetime) -> int:
    return int(d.timestamp())


def add_months(ts: int, months: int) -> int:
    """ts moved by whole months (negative allowed), the day clamped to the target month's length."""
    d = _to_dt(ts)
    index = d.year * 12 + (d.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    if not 1 <= year <= 9999:
        raise ValueError("date out of range")
    day = min(d.day, calendar.monthrange(year, month)[1])
    return _from_dt(d.replace(year=year, month=month, day=day))


def add_period(ts: int, count: int, unit: str) -> int:
    """ts + count units (day | week | month | year)."""
    if unit == "day":
        return ts + count * DAY
    if unit == "week":
        return ts + count * 7 * DAY
    if unit == "month":
        return add_months(ts, count)
    if unit == "year":
        return add_months(ts, 12 * count)
    raise ValueError(f"unknown period unit {unit!r}")


def term_end(anchor: int, index: int, period: int, unit: str) -> int:
    """The end of the index-th term (1-based) counted from anchor: anchor + index * period."""
    return add_period(anchor, index * period, unit)


def term_end_after(anchor: int, period: int, unit: str, after: int) -> int:
    """The first term boundary counted from anchor that is later than ``after``."""
    if period < 1:
        raise ValueError("period must be at least 1")
    if after < anchor:
        return term_end(anchor, 1, period, unit)
    # estimate the index, then correct (months vary in length)
    if unit in ("day", "week"):
        length = period * (DAY if unit == "day" else 7 * DAY)
        k = max(1, (after - anchor) // length)
    else:
        a, b = _to_dt(anchor), _to_dt(after)
        months = (b.year - a.year) * 12 + (b.month - a.month)
        k = max(1, months // (period * (12 if unit == "year" else 1)))
    while k > 1 and term_end(anchor, k - 1, period, unit) > after:
        k -= 1
    while term_end(anchor, k, period, unit) <= after:
        k += 1
    return term_end(anchor, k, period, unit)


def trial_end(start: int, trial_period: int, trial_unit: str) -> int:
    """End of a plan's trial (trial_period_unit is day or month)."""
    return add_period(start, trial_period, trial_unit)
