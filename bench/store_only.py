"""The "store alone" reference: ``billhive.services.invoices.collect(ctx, invoice_id, {})`` called
in one process, without HTTP, by 32 concurrent asyncio tasks (uvloop, as the server runs) over
distinct pending invoices, with the same production database settings and the same test gateway
(whose books are tables in the same database).

Everything collect does happens here as it does in the server: the closing transaction, the
charge (the test gateway's own write transaction), the settlement transaction, the events; on
SQLite through the one writer thread with group commit, on PostgreSQL through the pool. What is
missing is HTTP: no sockets, no request parsing, no auth, no parameter decoding, no JSON encoding
of the response, and no background workers competing for the database.

Run as a child process (``python -m bench store-only ...``) so that it starts as fresh as the
server does; prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from billhive.runtime import App, Config
from billhive.services import invoices
from billhive.work.context import Ctx, Origin


async def _run(app: App, site_pk: int, ids: list[str], seconds: float, concurrency: int) -> dict:
    ctx = Ctx(app, site_pk, Origin(source="api", user="full_access_key"))
    queue = list(reversed(ids))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while queue and time.perf_counter() < deadline:
            invoice_id = queue.pop()
            t0 = time.perf_counter()
            try:
                await invoices.collect(ctx, invoice_id, {})
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 3) if latencies else 0.0
    return {"seconds": round(elapsed, 3), "requests": len(latencies), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0), "errors": sum(errors.values()),
            "error_kinds": errors, "ids_exhausted": not queue}


def main(url: str, site_pk: int, ids_file: Path, seconds: float, concurrency: int) -> None:
    import uvloop

    ids = ids_file.read_text().split()
    app = App.open(Config(database_url=url, background=False))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_run(app, site_pk, ids, seconds, concurrency))
    finally:
        app.close()
    print("BENCH_JSON " + json.dumps(result), flush=True)
