"""Statements per collect: ``python -m bench.statements [--store sqlite|postgres] [--invoices N]
[--collects N] [--concurrency C]``.

Seeds a fresh database as the collect benchmark does (bench/seed.py), then runs
``services.invoices.collect`` from C concurrent asyncio tasks (no HTTP, as the store-only run) with
every ``Tx.execute`` timed: prints collects/s, the group-commit batching (units per batch), and each
statement's count per collect and mean time (the driver's call: on SQLite the statement itself, on
PostgreSQL its round trip). The tracing costs a little time per statement; compare the counts and
the relative times, not the rate, with the benchmark's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench import harness, seed
from billhive.runtime import App, Config
from billhive.services import invoices
from billhive.store import tx as txmod
from billhive.work import outbox
from billhive.work.context import Ctx, Origin


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--invoices", type=int, default=3000, help="pending invoices seeded")
    p.add_argument("--collects", type=int, default=1000, help="collects run (at most --invoices)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--pg-url", default=harness.DEFAULT_PG)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-statements-"))
    db = seed.create_database(args.store, work, args.pg_url)
    try:
        seeded = seed.seed(db.url, args.invoices, log=lambda _: None)
        counts, times = _trace()
        app = App.open(Config(database_url=db.url, background=False))
        try:
            ids = seeded.invoice_ids[:args.collects]
            ctx = Ctx(app, seeded.site_pk, Origin(source="api", user="full_access_key"))
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                elapsed = runner.run(_collect_all(ctx, ids, args.concurrency))
            stats = dict(app.db.stats)
        finally:
            app.close()
    finally:
        db.drop()
        seed.remove_dir(work)
    n = len(ids)
    print(f"{args.store}: {n:,} collects from {args.concurrency} tasks in {elapsed:.2f} s = {n / elapsed:,.0f}/s; "
          f"group commit: {stats.get('units', 0):,} units in {stats.get('batches', 0):,} batches")
    held = counts.pop(_HELD, 0)
    combined = counts.pop(_SENT_COMBINED, 0)
    made = sum(counts.values())
    print(f"statements per collect: {made / n:.1f}; sent to the database: {(made - held + combined) / n:.1f} "
          f"({held / n:.1f} combined into {combined / n:.1f} inside Tx.pipeline); "
          f"time in the driver per collect: {sum(times.values()) / n * 1e6:,.0f} us")
    for sql, c in counts.most_common():
        print(f"{c / n:6.2f}/collect {times[sql] / c * 1e6:9.1f} us  {sql}")
    return 0


async def _collect_all(ctx: Ctx, ids: list[str], concurrency: int) -> float:
    todo = list(ids)

    async def worker() -> None:
        while todo:
            await invoices.collect(ctx, todo.pop(), {})
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def _trace() -> tuple[collections.Counter, collections.Counter]:
    """Time every Tx.execute by its SQL (first 110 characters, whitespace folded)."""
    counts: collections.Counter = collections.Counter()
    times: collections.Counter = collections.Counter()
    plain = txmod.Tx.execute

    def traced(self: txmod.Tx, stmt: Any, params: dict | None = None) -> Any:
        sql = stmt.sql(self.dialect)[0] if isinstance(stmt, txmod.Q) else txmod.compile_stmt(stmt, self.dialect)[0]
        started = time.perf_counter()
        try:
            return plain(self, stmt, params)
        finally:
            key = " ".join(sql.split())[:110]
            counts[key] += 1
            times[key] += time.perf_counter() - started
    txmod.Tx.execute = traced  # type: ignore[method-assign]
    plain_flush = txmod.Tx.flush

    def traced_flush(self: txmod.Tx) -> None:
        held = self._combined or []
        if len(held) > 1:  # one statement for several writes (Tx.pipeline on PostgreSQL)
            counts[_HELD] += len(held)
            counts[_SENT_COMBINED] += 1
        plain_flush(self)
    txmod.Tx.flush = traced_flush  # type: ignore[method-assign]
    plain_rows = outbox._insert_rows

    def traced_rows(tx: txmod.Tx, table: Any, rows: list[dict]) -> None:
        # a buffered unit's events (outbox.buffered) go to the cursor directly: one multi-row INSERT
        # per _MULTI_MAX rows
        started = time.perf_counter()
        try:
            plain_rows(tx, table, rows)
        finally:
            if rows:
                key = f"INSERT INTO {table.name} (...) VALUES (...), ... (outbox.buffered, multi-row)"
                counts[key] += -(-len(rows) // outbox._MULTI_MAX)
                times[key] += time.perf_counter() - started
    outbox._insert_rows = traced_rows  # type: ignore[assignment]
    return counts, times


_HELD, _SENT_COMBINED = "\0held", "\0combined"


if __name__ == "__main__":
    raise SystemExit(main())
