"""JSON in and out (orjson: fast, and strict about what it can encode)."""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def dumpb(value: Any) -> bytes:
    return orjson.dumps(value)


loads = orjson.loads
