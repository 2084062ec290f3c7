"""Money: integers in the currency's minor unit. Ratios are exact (Fraction); rounding happens
once per line, half up, with ``round_half_up``."""

from __future__ import annotations

from fractions import Fraction
from typing import Union

Ratio = Union[Fraction, int]


def round_half_up(value: Ratio) -> int:
    """Round an exact amount of minor units to an int, halves away from zero."""
    f = Fraction(value)
    if f >= 0:
        return int((f + Fraction(1, 2)).__floor__())
    return -int((-f + Fraction(1, 2)).__floor__())


def prorate(amount: int, used: int, period: int) -> int:
    """amount * used / period, rounded once. A full period gives the full amount exactly."""
    if period <= 0:
        raise ValueError("period must be positive")
    if used == period:
        return amount
    return round_half_up(Fraction(amount * used, period))


def percent_of(amount: int, percentage: Ratio) -> int:
    """percentage (e.g. Fraction('12.5')) of amount, rounded once."""
    return round_half_up(Fraction(amount) * Fraction(percentage) / 100)


def format_amount(amount: int, currency: str) -> str:
    """Human-readable amount for emails/PDFs (two-decimal currencies; zero-decimal ones as is)."""
    if currency.upper() in ZERO_DECIMAL:
        return f"{currency.upper()} {amount:,}"
    sign = "-" if amount < 0 else ""
    a = abs(amount)
    return f"{currency.upper()} {sign}{a // 100:,}.{a % 100:02d}"


ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG", "RWF", "KMF", "GNF", "BIF",
                          "DJF", "MGA", "VUV", "XPF"})
