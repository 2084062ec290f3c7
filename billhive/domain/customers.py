"""Pure rules for customers and their cards: card number and expiry checks, the card status
at a given time, contact limits, address country codes. No I/O, no clock: callers pass `now`."""

from __future__ import annotations

from billhive.domain.geo import ISO_COUNTRIES

DAY = 86400

# Chargebee v1: "You can add up to a maximum of 6 contacts."
MAX_CONTACTS = 6

# A customer with a subscription in one of these states cannot be deleted (billhive's choice;
# see docs/CHOICES.md).
ACTIVE_SUBSCRIPTION_STATUSES = ("future", "in_trial", "active", "non_renewing")

# ISO 3166-1 alpha-2, plus XI (United Kingdom - Northern Ireland), which Chargebee accepts.
COUNTRY_CODES = ISO_COUNTRIES | {"XI"}

MAX_EXPIRY_YEAR = 9999


def luhn_ok(number: str) -> bool:
    """12-19 digits passing the Luhn check."""
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def normalize_number(raw: str) -> str:
    """Card numbers may be typed with spaces or dashes."""
    return raw.replace(" ", "").replace("-", "")


def expired_field(expiry_year: int, expiry_month: int, now_year: int, now_month: int) -> str | None:
    """Which field makes the card expired at (now_year, now_month): 'expiry_year', 'expiry_month'
    or None. A card is good through the last day of its expiry month."""
    if expiry_year < now_year:
        return "expiry_year"
    if expiry_year == now_year and expiry_month < now_month:
        return "expiry_month"
    return None


def expiring_from(expires_at: int, expiring_days: int) -> int:
    """When a card whose last valid second is expires_at starts to count as expiring."""
    return expires_at - expiring_days * DAY


def card_status(expires_at: int, now: int, expiring_days: int) -> str:
    """valid | expiring | expired at `now` (expires_at: the last second of the expiry month)."""
    if now > expires_at:
        return "expired"
    if now >= expiring_from(expires_at, expiring_days):
        return "expiring"
    return "valid"


def country_ok(code: str) -> bool:
    return code in COUNTRY_CODES
