"""Pure rules for cards and customers (billhive.domain.customers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import customers as rules

END = 1_000_000_000  # the last valid second of some expiry month


def test_card_status_boundaries():
    days = 30
    start = END - days * rules.DAY
    assert rules.card_status(END, start - 1, days) == "valid"
    assert rules.card_status(END, start, days) == "expiring"
    assert rules.card_status(END, END, days) == "expiring"
    assert rules.card_status(END, END + 1, days) == "expired"
    assert rules.card_status(END, END, 0) == "expiring"


@given(st.integers(0, 2 * END), st.integers(0, 365))
def test_card_status_is_monotonic_in_time(now, days):
    order = {"valid": 0, "expiring": 1, "expired": 2}
    assert order[rules.card_status(END, now, days)] <= order[rules.card_status(END, now + 86400, days)]


def test_expired_field():
    assert rules.expired_field(2029, 12, 2030, 6) == "expiry_year"
    assert rules.expired_field(2030, 5, 2030, 6) == "expiry_month"
    assert rules.expired_field(2030, 6, 2030, 6) is None
    assert rules.expired_field(2031, 1, 2030, 6) is None


def test_luhn():
    for good in ("4111111111111111", "5555555555554444", "378282246310005", "6011111111111117",
                 "3530111333300000", "38520000023237", "4119862760338320", "4005519200000004"):
        assert rules.luhn_ok(good), good
    for bad in ("4111111111111112", "41111111111", "4" * 20, "4111x11111111111", ""):
        assert not rules.luhn_ok(bad), bad
    assert rules.normalize_number("4111 1111-1111 1111") == "4111111111111111"


def test_country_codes():
    assert rules.country_ok("US") and rules.country_ok("XI") and rules.country_ok("GB")
    assert not rules.country_ok("UK") and not rules.country_ok("us") and not rules.country_ok("USA")
    assert len(rules.COUNTRY_CODES) == 250
