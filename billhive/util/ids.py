"""Identifiers shaped like Chargebee's: 16+ random base62 characters, optional prefix."""

from __future__ import annotations

import os

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# each random byte maps to a character (a slight bias towards the first 8 characters is
# harmless: ids are unique by their 17 characters, not secret)
_TABLE = bytes(ord(_ALPHABET[b % 62]) for b in range(256))


def random_id(prefix: str = "", length: int = 17) -> str:
    return prefix + os.urandom(length).translate(_TABLE).decode()


def event_id() -> str:
    return random_id("ev_", 17)


def txn_id() -> str:
    return random_id("txn_", 17)


def draft_invoice_id() -> str:
    return random_id("draft_inv_", 17)
