"""python -m bench metrics: the per-site figures of ``GET /metrics`` with many sites (issue 16:
a scrape must not cost a query per site and figure).

Seeds a fresh database with ``--sites`` sites, each with webhook and email deliveries (pending,
failed and succeeded) and scheduled jobs, plus one large site with ``--deliveries`` succeeded
deliveries (the rows a failed-delivery count must not scan). Then reads the figures both ways, in
the same run, alternating: billhive's ``observe.all_sites`` (one statement of index probes) and
the baseline it replaced (six queries per site, failed deliveries counted without an index on
``status = 'failed'`` - here the index exists, so the baseline is if anything flattered). Prints
the median and max of each; exit status 1 when the figures differ."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import bindparam, func, insert, select

from bench import seed
from billhive import sites
from billhive.runtime import App, Config
from billhive.services import observe
from billhive.store import migrate
from billhive.store import schema as S
from billhive.store.db import Tx

STATUSES = ("scheduled", "failed", "succeeded", "succeeded")


def run(store: str, n_sites: int, big: int, rounds: int, pg_admin_url: str) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"billhive-bench-metrics-{store}-"))
    db = seed.create_database(store, workdir, pg_admin_url)
    try:
        migrate.upgrade(db.url)
        app = App.open(Config(database_url=db.url, statement_timeout=120.0, unit_timeout=120.0))  # the baseline is slow
        try:
            t0 = time.perf_counter()
            _seed(app, n_sites, big)
            print(f"bench metrics ({store}): seeded {n_sites:,} sites and {big:,} deliveries on one in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            ours, base = [], []
            for _ in range(rounds):
                a, fig_a = _timed(lambda: asyncio.run(observe.all_sites(app)))
                b, fig_b = _timed(lambda: app.db.read_sync(lambda tx: _baseline(app, tx)))
                ours.append(a)
                base.append(b)
            same = _key(fig_a) == _key(fig_b)
            print(f"  observe.all_sites   median {statistics.median(ours) * 1000:8.1f} ms  "
                  f"max {max(ours) * 1000:8.1f} ms")
            print(f"  baseline (per site) median {statistics.median(base) * 1000:8.1f} ms  "
                  f"max {max(base) * 1000:8.1f} ms")
            print(f"  ratio baseline/ours {statistics.median(base) / statistics.median(ours):.1f}x; "
                  f"figures {'identical' if same else 'DIFFER'}")
            return 0 if same else 1
        finally:
            app.close()
    finally:
        db.drop()


def _seed(app: App, n_sites: int, big: int) -> None:
    now = int(time.time())

    def make(tx: Tx, first: int) -> None:
        for i in range(first, min(n_sites, first + 100)):
            site, _ = sites.create(tx, f"m{i:05d}-test", now=now)
            rows = [dict(site_id=site.pk, event_id=f"ev_{k}", status=STATUSES[k % 4], attempts=1,
                         next_attempt_at=now, created_at=now, updated_at=now) for k in range(8)]
            _insert(tx, S.webhook_deliveries, [dict(r, endpoint_id="ep") for r in rows])
            _insert(tx, S.email_deliveries, [dict(r, template="t", recipient="a@example.com") for r in rows])
            _insert(tx, S.jobs, [dict(site_id=site.pk, key=f"k{k}", kind="renewal", ref_id=f"s{k}",
                                      due_at=now + 3600 * (k - 1), attempts=0, created_at=now) for k in range(4)])
    for first in range(0, n_sites, 100):  # units of work have a deadline: a hundred sites each
        app.db.write_sync(lambda tx, first=first: make(tx, first))  # type: ignore[misc]
    big_site = app.db.read_sync(lambda tx: sites.require(tx, "m00000-test")).pk
    chunk = 20_000
    for start in range(0, big, chunk):
        def more(tx: Tx, start: int = start) -> None:
            _insert(tx, S.webhook_deliveries, [
                dict(site_id=big_site, event_id=f"big_{k}", endpoint_id="ep", status="succeeded", attempts=1,
                     created_at=now, updated_at=now) for k in range(start, min(big, start + chunk))])
        app.db.write_sync(more)


def _insert(tx: Tx, table, rows: list[dict]) -> None:
    tx.executemany(insert(table).values({k: bindparam(k) for k in rows[0]}), rows)


def _baseline(app: App, tx: Tx) -> list[observe.SiteHealth]:
    """What /metrics did before: for every site, six queries."""
    wd, ed = S.webhook_deliveries, S.email_deliveries

    def count(table, site_pk: int, *where) -> int:
        return int(tx.scalar(select(func.count()).select_from(table).where(table.c.site_id == site_pk, *where)) or 0)

    out = []
    for site in sites.all_sites(tx):
        oldest = tx.scalar(select(func.min(S.jobs.c.due_at)).where(S.jobs.c.site_id == site.pk))
        now = site.now(app.wall)
        out.append(observe.SiteHealth(
            site=site.name,
            webhooks_pending=count(wd, site.pk, wd.c.status.in_(observe.PENDING)),
            webhooks_failed=count(wd, site.pk, wd.c.status == "failed"),
            emails_pending=count(ed, site.pk, ed.c.status.in_(observe.PENDING)),
            emails_failed=count(ed, site.pk, ed.c.status == "failed"),
            job_lag_seconds=max(0, now - oldest) if oldest is not None else 0,
            time_travel_status=site.tm_status or "not_enabled"))
    return out


def _timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _key(health: list[observe.SiteHealth]) -> list[tuple]:
    # job lag moves with the wall clock between the two reads: compare whether a job is overdue
    return [(h.site, h.webhooks_pending, h.webhooks_failed, h.emails_pending, h.emails_failed,
             h.job_lag_seconds > 0, h.time_travel_status) for h in health]
