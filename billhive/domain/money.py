"""Money: integers in the currency's minor unit. Ratios are exact (Fraction); rounding happens
once per line, half up, with ``round_half_up``.

Every amount and every total billhive accepts, stores or returns lies within ``MAX_AMOUNT``
(2^53 - 1 minor units: Chargebee's documented largest currency value, 90,071,992,547,409.91).
It sits 1,024 times inside int64, so the stores' sums of many such amounts cannot overflow, and
JSON clients that read numbers as doubles (JavaScript) see every amount exactly. Request
parameters are held to it where they are decoded; ``check`` and ``total`` hold what is computed
from them (line amounts, invoice totals, balances) to it, naming the parameter that went beyond.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

from billhive.errors import ParamError

Ratio = Fraction | int

MAX_AMOUNT = 2**53 - 1  # 9,007,199,254,740,991 minor units


class AmountTooLarge(ParamError):
    """An amount or a total beyond ``MAX_AMOUNT`` (400 param_wrong_value, naming the parameter)."""


def check(value: int, param: str | None, what: str = "the amount") -> int:
    """``value`` if it lies within +-MAX_AMOUNT, else AmountTooLarge naming ``param``."""
    if -MAX_AMOUNT <= value <= MAX_AMOUNT:
        return value
    prefix = f"{param} : " if param else ""
    raise AmountTooLarge(f"{prefix}{what} would be {value:,}; billhive accepts amounts and totals of at most "
                         f"{MAX_AMOUNT:,} minor units", param=param)


def total(amounts: Iterable[int], param: str | None, what: str = "the total") -> int:
    """The sum of ``amounts``, held to MAX_AMOUNT by ``check``."""
    return check(sum(amounts), param, what)


def total_of(parts: Iterable[tuple[int, str | None]], what: str = "the total") -> int:
    """The sum of (amount, param) parts, held to MAX_AMOUNT; the error names the param of the part
    that takes the running sum beyond it (amounts are not negative)."""
    running = 0
    for amount, param in parts:
        running = check(running + amount, param, what)
    return running


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
