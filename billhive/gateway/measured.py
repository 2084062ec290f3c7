"""A gateway wrapped to count its calls: latency and outcome of every call, for ``/metrics``
(``billhive_gateway_call_seconds{gateway, call, outcome}``).

The outcome is the result's status (``success``, ``failure``, ``timeout``), ``error`` when the
call raised, and for ``lookup`` ``found`` or ``unknown``. Anything else is passed through."""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from billhive.gateway.interface import Gateway, GatewayResult

# seconds; upper bounds of the latency buckets (a real gateway answers in 0.1 - 2 s)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CallStats:
    """(gateway, call, outcome) -> [bucket counts, sum, count]."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str], list] = {}

    def observe(self, gateway: str, call: str, outcome: str, seconds: float) -> None:
        s = self.series.get((gateway, call, outcome))
        if s is None:
            s = self.series[(gateway, call, outcome)] = [[0] * len(BUCKETS), 0.0, 0]
        i = bisect.bisect_left(BUCKETS, seconds)
        if i < len(BUCKETS):
            s[0][i] += 1
        s[1] += seconds
        s[2] += 1


class Measured:
    """``gateway`` with every call timed into its ``stats``."""

    def __init__(self, gateway: Gateway, stats: CallStats | None = None):
        self.inner = gateway
        self.name = gateway.name
        self.stats = stats or CallStats()

    async def store_card(self, site_pk: int, card: Any) -> Any:
        return await self._timed("store_card", lambda: self.inner.store_card(site_pk, card), lambda r: "success")

    async def charge(self, site_pk: int, idempotency_key: str, token: str, amount: int, currency: str) -> GatewayResult:
        return await self._timed("charge", lambda: self.inner.charge(site_pk, idempotency_key, token, amount, currency),
                                 _status)

    async def refund(self, site_pk: int, idempotency_key: str, charge_reference: str, amount: int,
                     currency: str) -> GatewayResult:
        return await self._timed("refund", lambda: self.inner.refund(site_pk, idempotency_key, charge_reference,
                                                                     amount, currency), _status)

    async def void(self, site_pk: int, idempotency_key: str, charge_reference: str) -> GatewayResult:
        return await self._timed("void", lambda: self.inner.void(site_pk, idempotency_key, charge_reference), _status)

    async def lookup(self, site_pk: int, idempotency_key: str) -> GatewayResult | None:
        return await self._timed("lookup", lambda: self.inner.lookup(site_pk, idempotency_key),
                                 lambda r: "unknown" if r is None else "found")

    def __getattr__(self, name: str) -> Any:  # the wrapped gateway's own extras (close, test hooks)
        return getattr(self.inner, name)

    async def _timed(self, call: str, run: Callable[[], Awaitable[Any]], outcome: Callable[[Any], str]) -> Any:
        started = time.perf_counter()
        try:
            result = await run()
        except BaseException:
            self.stats.observe(self.name, call, "error", time.perf_counter() - started)
            raise
        self.stats.observe(self.name, call, outcome(result), time.perf_counter() - started)
        return result


def _status(result: GatewayResult) -> str:
    return result.status
