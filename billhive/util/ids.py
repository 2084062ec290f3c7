"""Identifiers shaped like Chargebee's: 16+ random base62 characters, optional prefix."""

from __future__ import annotations

import os

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_id(prefix: str = "", length: int = 17) -> str:
    raw = os.urandom(length)
    return prefix + "".join(_ALPHABET[b % 62] for b in raw)


def event_id() -> str:
    return random_id("ev_", 17)


def txn_id() -> str:
    return random_id("txn_", 17)


def draft_invoice_id() -> str:
    return random_id("draft_inv_", 17)
