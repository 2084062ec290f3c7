"""python -m bench snapshot: the restore time of a 1,000-object site (issue 14 part 3: under 1 s),
beside a baseline measured in the same run.

Seeds a fresh database with one test site holding ``--objects`` objects made through the API
operations (``ApiEndpoint.call``, decoded and validated as a request would be): a fifth plans,
the rest customers, half of those with the test gateway's success card (so cards, gateway tokens
and events are real rows too). Takes its snapshot, then restores it into a second site and times
that (``snapshots.restore``: delete, bulk inserts, one transaction). The baseline: the time the
same objects took to create through the API. The restored site is checked: the same number of
rows in every table.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from bench import seed
from billhive import sites
from billhive.http.app import ApiEndpoint
from billhive.http.routes import ROUTES
from billhive.runtime import App, Config
from billhive.services import snapshots
from billhive.store import migrate
from billhive.store.db import Tx
from billhive.work.context import Ctx, Origin

BUDGET = 1.0  # seconds


def run(store: str, objects: int, pg_admin_url: str) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"billhive-bench-snapshot-{store}-"))
    db = seed.create_database(store, workdir, pg_admin_url)
    try:
        migrate.upgrade(db.url)
        app = App.open(Config(database_url=db.url, statement_timeout=120.0, unit_timeout=120.0))
        try:
            return asyncio.run(_run(app, store, objects))
        finally:
            app.close()
    finally:
        db.drop()


async def _run(app: App, store: str, objects: int) -> int:
    now = int(time.time())
    source, _ = app.db.write_sync(lambda tx: sites.create(tx, "source-test", now=now))
    app.db.write_sync(lambda tx: sites.create(tx, "target-test", now=now))
    api = ApiEndpoint(app, ROUTES)
    ctx = Ctx(app, source.pk, Origin(user="bench"))
    plans = objects // 5
    started = time.perf_counter()
    for i in range(plans):
        await api.call(ctx, "POST", "/plans", [("id", f"p{i}"), ("name", f"Plan {i}"), ("price", str(100 + i))])
    for i in range(objects - plans):
        card = [("card[number]", "4111111111111111"), ("card[expiry_month]", "12"),
                ("card[expiry_year]", "2035")] if i % 2 else []
        await api.call(ctx, "POST", "/customers", [("id", f"c{i}"), ("first_name", f"C{i}"), *card])
    created = time.perf_counter() - started
    snap = await snapshots.snapshot(app, "source-test")
    rows = sum(len(t["rows"]) for t in snap["tables"].values())
    started = time.perf_counter()
    result = await snapshots.restore(app, "target-test", snap)
    restored = time.perf_counter() - started

    def counts(tx: Tx, name: str) -> dict[str, int]:
        pk = snapshots.site_pk(tx, name)
        return {t.name: tx.scalar(select(func.count()).select_from(t).where(t.c.site_id == pk))
                for t in snapshots.SITE_TABLES if t.name != "api_keys"}
    src = await app.db.read(lambda tx: counts(tx, "source-test"))
    dst = await app.db.read(lambda tx: counts(tx, "target-test"))
    ok = src == dst and result["rows"]["customers"] == objects - plans
    print(f"snapshot ({store}): {objects} objects, {rows} rows in {len(snap['tables'])} tables")
    print(f"  restore into another site: {restored * 1000:8.1f} ms  (budget {BUDGET * 1000:.0f} ms)")
    print(f"  baseline, the same objects created through the API: {created * 1000:8.1f} ms "
          f"(restore = {restored / created:.3f} of it)")
    print(f"  checked (the same rows per table): {'ok' if ok else 'MISMATCH ' + repr((src, dst))}")
    return 0 if ok and restored < BUDGET else 1
