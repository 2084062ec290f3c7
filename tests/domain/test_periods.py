"""Calendar periods (billhive.domain.periods): month-end clamping, anchored terms."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import periods as P


def ts(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(dt.datetime(y, m, d, h, mi, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize("start, count, unit, expected", [
    (ts(2026, 1, 15, 10), 1, "day", ts(2026, 1, 16, 10)),
    (ts(2026, 1, 15), 2, "week", ts(2026, 1, 29)),
    (ts(2026, 1, 31, 8, 30), 1, "month", ts(2026, 2, 28, 8, 30)),
    (ts(2024, 1, 31), 1, "month", ts(2024, 2, 29)),
    (ts(2026, 3, 31), 1, "month", ts(2026, 4, 30)),
    (ts(2026, 11, 30), 3, "month", ts(2027, 2, 28)),
    (ts(2026, 3, 31), -1, "month", ts(2026, 2, 28)),
    (ts(2024, 2, 29), 1, "year", ts(2025, 2, 28)),
    (ts(2026, 5, 10), 12, "month", ts(2027, 5, 10)),
])
def test_add_period(start, count, unit, expected):
    assert P.add_period(start, count, unit) == expected


def test_terms_are_counted_from_the_anchor_not_chained():
    anchor = ts(2026, 1, 31)
    ends = [P.term_end(anchor, k, 1, "month") for k in range(1, 5)]
    assert ends == [ts(2026, 2, 28), ts(2026, 3, 31), ts(2026, 4, 30), ts(2026, 5, 31)]
    assert P.term_end_after(anchor, 1, "month", ts(2026, 2, 28)) == ts(2026, 3, 31)
    assert P.term_end_after(anchor, 1, "month", ts(2026, 2, 27)) == ts(2026, 2, 28)
    assert P.term_end_after(anchor, 3, "month", ts(2026, 6, 1)) == ts(2026, 7, 31)
    assert P.term_end_after(anchor, 1, "month", anchor - 10) == ts(2026, 2, 28)


def test_unknown_unit_and_bad_period():
    with pytest.raises(ValueError):
        P.add_period(0, 1, "fortnight")
    with pytest.raises(ValueError):
        P.term_end_after(0, 0, "day", 10)


def test_trial_end():
    assert P.trial_end(ts(2026, 1, 1), 14, "day") == ts(2026, 1, 15)
    assert P.trial_end(ts(2026, 1, 31), 1, "month") == ts(2026, 2, 28)


anchors = st.integers(min_value=ts(1990, 1, 1), max_value=ts(2090, 1, 1))
units = st.sampled_from(P.UNITS)


@given(anchors, st.integers(1, 24), units, st.integers(0, 10**9))
def test_term_end_after_is_the_first_boundary_after(anchor, period, unit, offset):
    after = anchor + offset
    end = P.term_end_after(anchor, period, unit, after)
    assert end > after
    k = 1
    while P.term_end(anchor, k, period, unit) < end:
        assert P.term_end(anchor, k, period, unit) <= after
        k += 1
    assert P.term_end(anchor, k, period, unit) == end


@given(anchors, st.integers(1, 12), units)
def test_terms_are_increasing_and_within_a_period(anchor, period, unit):
    prev = anchor
    for k in range(1, 6):
        end = P.term_end(anchor, k, period, unit)
        assert end > prev
        length = end - prev
        longest = {"day": 86400, "week": 7 * 86400, "month": 31 * 86400, "year": 366 * 86400}[unit] * period
        assert length <= longest
        prev = end
