"""Applying operation fault rules (billhive/domain/faults.py) to API calls, before the operation
runs: a struck call waits its rule's latency and then answers its error (the operation never
runs, so nothing changes), or, for a latency-only rule, waits and then runs as usual.

The hot path pays no database read when no faults are set: which sites have rules is read once
per ``ttl`` seconds for the whole process (one query, whatever the number of sites), and a site's
rules once per ``ttl`` while it has some; a call then costs a set lookup. Only a call of an
operation a rule names is counted, in one write transaction (exact under concurrency, see
billhive/services/faults.py). ``clear()`` - called by the admin API after every change - makes
this process see a change at once; other server processes see it within ``ttl`` seconds (as key
changes, billhive/http/auth.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from billhive.domain.faults import MAX_LATENCY_MS
from billhive.errors import InjectedFault
from billhive.runtime import App
from billhive.services import faults
from billhive.services.faults import Stored


class FaultGate:
    def __init__(self, app: App, *, ttl: float):
        self.app = app
        self.ttl = ttl
        self._sites: frozenset[int] = frozenset()
        self._sites_until = 0.0  # monotonic time the site set is good until
        self._loading: asyncio.Future | None = None
        self._rules: dict[int, tuple[float, list[Stored]]] = {}  # site pk -> (good until, rules)
        self._spent: set[tuple[int, int]] = set()  # (site pk, rule pk) of rules out of calls
        self._generation = 0  # bumped by clear(): a read begun before it does not count as fresh

    def clear(self) -> None:
        self._generation += 1
        self._sites_until = 0.0
        self._rules.clear()
        self._spent.clear()  # only a shortcut: a spent rule still there is found spent again

    async def check(self, site_pk: int, operation_id: str, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
                    ) -> None:
        """Apply the site's rules to a call of ``operation_id``: returns to let the operation run
        (perhaps after a delay); raises ``InjectedFault`` to answer its error instead."""
        now = time.monotonic()
        if now >= self._sites_until:
            await self._load_sites(now)
        if site_pk not in self._sites:
            return
        cached = self._rules.get(site_pk)
        if cached is None or now >= cached[0]:
            generation = self._generation
            rules = await self.app.db.read(lambda tx: faults.site_rules(tx, site_pk))
            cached = (now + self.ttl if generation == self._generation else 0.0, rules)
            self._rules[site_pk] = cached
        matching = [r for r in cached[1] if r.rule.applies_to(operation_id) and (site_pk, r.pk) not in self._spent]
        if not matching:
            return
        hits = await self.app.db.write(faults.count_calls(site_pk, matching))
        latency, error = 0, None
        for r, hit in zip(matching, hits):
            if hit is None:
                self._spent.add((site_pk, r.pk))  # a rule's call limit never grows again
            elif hit:
                latency += r.rule.latency_ms
                if error is None and r.rule.status is not None:
                    error = r.rule
        if latency:
            await sleep(min(latency, MAX_LATENCY_MS) / 1000)
        if error is not None:
            assert error.status is not None and error.error_type and error.api_error_code and error.message
            raise InjectedFault(error.message, http_status=error.status, error_type=error.error_type,
                                api_error_code=error.api_error_code, param=error.param)

    async def _load_sites(self, now: float) -> None:
        if self._loading is not None:  # one read at a time: concurrent calls wait for it
            await asyncio.shield(self._loading)
            return
        self._loading = asyncio.get_running_loop().create_future()
        generation = self._generation
        try:
            self._sites = await self.app.db.read(faults.sites_with_rules)
            if generation == self._generation:
                self._sites_until = now + self.ttl
            self._rules = {pk: v for pk, v in self._rules.items() if pk in self._sites}
            self._spent = {key for key in self._spent if key[0] in self._sites}  # bounded by live sites' rules
        finally:
            self._loading.set_result(None)
            self._loading = None
