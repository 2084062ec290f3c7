"""python -m bench timetravel: due jobs/s of a time travel (issue 17, target 5: >= 5,000 jobs/s on
SQLite), beside an anchor measured in the same run.

Seeds a fresh database with two test sites, one with metered billing and one without, each with
``--subscriptions`` monthly subscriptions (a customer with the test gateway's success card each),
created through the API operations (``ApiEndpoint.call``: decoded and validated from the spec, as a
request would be), so that they are real. Then starts the time machine (``start_afresh`` before
seeding, ``travel_forward`` by ``--months`` months after) and advances the travel as the
background worker does (``time_machines.advance`` until ``succeeded``), timing from the start of
``travel_forward`` to ``succeeded``.

The anchor: a plain driver loop (``sqlite3`` or psycopg) executing, one transaction per job, the
statements that one real renewal executed (captured from SQLAlchemy's cursor events during the
first job of the travel), with the same durability; jobs/s = jobs / elapsed. ratio = billhive /
anchor.

The result is checked: every subscription has ``--months`` renewal invoices beside its first, at
strictly increasing dates (time order), invoice numbers are gapless per site, and no job is left
due before the destination.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench import report, seed
from billhive import sites
from billhive.http.app import ApiEndpoint
from billhive.http.routes import ROUTES
from billhive.runtime import App, Config
from billhive.services import time_machines
from billhive.store import migrate
from billhive.store import schema as S
from billhive.store.db import Tx
from billhive.work.context import Ctx, Origin

TARGET = report.TIMETRAVEL_TARGET["sqlite"]
GENESIS = 1_735_689_600  # 2025-01-01T00:00:00Z


def run(store: str, n: int, months: int, pg_admin_url: str) -> int:
    return 0 if measure(store, n, months, pg_admin_url)["ok"] else 1


def measure(store: str, n: int, months: int, pg_admin_url: str) -> dict:
    """The travel's record (store, subscriptions, months, jobs, jobs_per_s, anchor_jobs_per_s, ratio,
    sites, ok, targets, lines) - printed as it goes, too."""
    workdir = Path(tempfile.mkdtemp(prefix=f"billhive-bench-timetravel-{store}-"))
    db = seed.create_database(store, workdir, pg_admin_url)
    try:
        migrate.upgrade(db.url)
        if store == "sqlite":
            sqlite3.connect = _tracing  # type: ignore[assignment]
        app = App.open(Config(database_url=db.url, statement_timeout=120.0, unit_timeout=120.0))
        try:
            return asyncio.run(_run(app, store, db.url, n, months))
        finally:
            app.close()
    finally:
        sqlite3.connect = _CONNECT
        db.drop()


_CONNECT = sqlite3.connect
_TRACE: dict[str, Any] = {"on": False, "log": []}


def _tracing(path: Any, *args: Any, **kw: Any) -> sqlite3.Connection:
    """billhive's SQLite connections, each with a trace callback that records (while the travel
    runs) every statement it executes, parameters expanded, BEGIN/SAVEPOINT/COMMIT included."""
    conn = _CONNECT(path, *args, **kw)
    key = (str(path), id(conn))

    def trace(sql: str) -> None:
        if _TRACE["on"]:
            _TRACE["log"].append((key, sql))
    conn.set_trace_callback(trace)
    return conn


async def _run(app: App, store: str, url: str, n: int, months: int) -> dict:
    api = ApiEndpoint(app, ROUTES)
    site_pks = []
    t0 = time.perf_counter()
    for name, metered in (("tt-metered-test", True), ("tt-plain-test", False)):
        site, _ = app.db.write_sync(lambda tx, name=name, metered=metered: sites.create(
            tx, name, now=GENESIS, metered_billing=metered))
        ctx = Ctx(app, site.pk, Origin(source="api", user="full_access_key"))
        await api.call(ctx, "POST", "time_machines/delorean/start_afresh", [("genesis_time", str(GENESIS))])
        await api.call(ctx, "POST", "plans", [("id", "monthly"), ("name", "Monthly"), ("price", "1000"),
                                              ("period_unit", "month")])
        for i in range(n):
            await api.call(ctx, "POST", "subscriptions", [
                ("id", f"sub_{i:06d}"), ("plan_id", "monthly"), ("customer[email]", f"c{i}@example.com"),
                ("card[number]", "4111111111111111"), ("card[cvv]", "100"),
                ("card[expiry_month]", "12"), ("card[expiry_year]", "2099")])
        site_pks.append(site.pk)
    print(f"bench timetravel ({store}): seeded 2 sites x {n:,} monthly subscriptions in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    destination = GENESIS + months * 31 * 86400
    results = []
    copies: dict[str, str] = {}
    if store == "sqlite":  # the anchor replays the travel's statements on copies of the databases as they are now
        base = Path(url.removeprefix("sqlite:///"))
        for f in (base, base.with_name(base.stem + "-gateway" + base.suffix)):
            if f.exists():
                copies[str(f)] = str(f) + ".anchor"
                with _CONNECT(f) as src, _CONNECT(copies[str(f)]) as dst:
                    src.backup(dst)
    _TRACE["log"] = []
    _TRACE["on"] = True
    for pk in site_pks:
        ctx = Ctx(app, pk, Origin(source="api", user="full_access_key"))
        t1 = time.perf_counter()
        await api.call(ctx, "POST", "time_machines/delorean/travel_forward", [("destination_time", str(destination))])
        while True:
            view = (await api.call(ctx, "GET", "time_machines/delorean"))["time_machine"]
            if view["time_travel_status"] != "in_progress":
                break
            await time_machines.advance(app, pk, budget=time_machines.RESUME_BUDGET)
        elapsed = time.perf_counter() - t1
        results.append((pk, view, elapsed))
    _TRACE["on"] = False
    ok = True
    total_jobs = sum(v.get("jobs_done", 0) for _, v, _ in results)
    total_s = sum(e for _, _, e in results)
    lines = [f"timetravel ({store}, 2 sites (metered, plain) x {n:,} monthly subscriptions x {months} months)"]
    per_site = []
    for (pk, view, elapsed), metered in zip(results, (True, False), strict=True):
        problems = app.db.read_sync(lambda tx, pk=pk: _check(tx, pk, n, months))
        jobs = view.get("jobs_done", 0)
        lines.append(f"  site {pk} ({'metered' if metered else 'plain'}): {view['time_travel_status']}, {jobs:,} jobs "
                     f"in {elapsed:.2f} s = {jobs / elapsed:,.0f} jobs/s; checks: {problems or 'ok'}")
        print(lines[-1], flush=True)
        per_site.append({"site_pk": pk, "metered": metered, "status": view["time_travel_status"], "jobs": jobs,
                         "seconds": round(elapsed, 3), "jobs_per_s": round(jobs / elapsed, 1),
                         "problems": problems})
        ok = ok and not problems and view["time_travel_status"] == "succeeded"
    anchor = _anchor(copies, _TRACE["log"], total_jobs) if copies else None
    rate = total_jobs / total_s
    line = f"  billhive {rate:,.0f} jobs/s"
    if anchor:
        line += f"  [anchor {anchor:,.0f} jobs/s]  ratio {rate / anchor:.3f}"
    else:
        line += "  [no anchor on this store]"
    lines.append(line)
    print(line)
    target = TARGET if store == "sqlite" else None
    judged = None if target is None else rate >= target
    verdict = "no target" if judged is None else ("PASS" if judged else "MISS")
    print(f"  target >= {TARGET:,.0f} jobs/s on SQLite: {verdict}")
    targets = [{"name": f"due jobs/s >= {TARGET:,.0f}" if target else "due jobs/s (no target)",
                "value": f"{rate:,.0f}" + (f" [anchor {anchor:,.0f}]" if anchor else ""), "pass": judged},
               {"name": "checks (renewals, time order, gapless numbers, travel succeeded)",
                "value": "ok" if ok else "FAILED", "pass": ok, "check": True}]
    return {"store": store, "subscriptions": n, "months": months, "jobs": total_jobs, "seconds": round(total_s, 3),
            "jobs_per_s": round(rate, 1), "anchor_jobs_per_s": round(anchor, 1) if anchor else None,
            "ratio": round(rate / anchor, 3) if anchor else None, "sites": per_site, "ok": ok, "targets": targets,
            "lines": lines}


def _check(tx: Tx, site_pk: int, n: int, months: int) -> list[str]:
    problems = []
    rows = tx.all(select(S.invoices.c.subscription_id, S.invoices.c.date, S.invoices.c.id)
                  .where(S.invoices.c.site_id == site_pk))
    rows = sorted(rows, key=lambda r: (len(r[2]), r[2]))  # numbers: "1", "2", ... (an id is the number)
    per_sub: dict[str, list[int]] = {}
    numbers = []
    for sub_id, date, number in rows:
        per_sub.setdefault(sub_id, []).append(date)
        numbers.append(number)
    wrong = [s for s, dates in per_sub.items() if len(dates) != months + 1]
    if len(per_sub) != n or wrong:
        problems.append(f"{len(per_sub)} subscriptions invoiced, {len(wrong)} without exactly {months} renewals")
    if any(a >= b for dates in per_sub.values() for a, b in zip(dates, dates[1:], strict=False)):
        problems.append("renewal invoices out of time order")
    numbers = [x for x in numbers if x.isdigit()]  # pending (metered) invoices have draft ids
    if numbers != [str(i) for i in range(1, len(numbers) + 1)]:
        problems.append("invoice numbers not gapless")
    return problems


def _anchor(copies: dict[str, str], log: list[Any], jobs: int) -> float:
    """The travel's own statements (every one billhive's writer connections executed, with their
    parameters, BEGIN/SAVEPOINT/COMMIT included: the same transactions), replayed by plain sqlite3
    connections, one per billhive writer connection, on copies of the databases taken before the
    travel; WAL, synchronous=FULL as billhive runs. Read-only connections are left out (their
    statements would need their own snapshots). jobs/s = jobs / elapsed."""
    writers = {key for key, sql in log if sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")}
    conns = {}
    for key in writers:
        c = _CONNECT(copies.get(key[0], key[0] + ".anchor"), isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        conns[key] = c
    todo = [(conns[key], sql) for key, sql in log if key in conns]
    t0 = time.perf_counter()
    for c, sql in todo:
        c.execute(sql).fetchall()
    elapsed = time.perf_counter() - t0
    for c in conns.values():
        c.close()
    print(f"  anchor: {len(todo):,} statements of {len(conns)} writer connections replayed in {elapsed:.2f} s "
          f"({sum(1 for _, sql in todo if sql.strip().upper() == 'COMMIT'):,} commits)", flush=True)
    return jobs / elapsed
