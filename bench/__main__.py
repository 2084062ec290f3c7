"""python -m bench collect|retrieve|list|all|multisite|scaleout|timetravel|console|metrics|snapshot — see
bench/README.md."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from bench import harness, load, multisite, report, scaleout, timetravel

SIZES = (10_000, 1_000_000)
STORES = ("sqlite", "postgres")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=int, default=10, help="length of each measured run (default 10)")
    p.add_argument("--json", type=Path, help="where to write the results (default bench/results/<date>-<commit>.json)")
    p.add_argument("--profile", action="store_true",
                   help="run py-spy on the server during each measured run (collect, retrieve, list); speedscope "
                        "files next to the results")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--pg-url", default=harness.DEFAULT_PG,
                   help="PostgreSQL server to create the bench_<random> databases on (any existing database)")
    p.add_argument("--keep", action="store_true", help="keep the seeded database afterwards (its URL is printed)")
    p.add_argument("--quiet-wait", type=float, default=30.0, metavar="SECONDS",
                   help="before each measured pair, wait up to this long for other work on the machine to calm "
                        "down (default 30; 0: don't)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="billhive benchmarks, each beside its ceiling")
    sub = p.add_subparsers(dest="command", required=True)
    for op in harness.OPS:
        alone = " and the store alone" if op == "collect" else ""
        s = sub.add_parser(op, help=f"measure {op} (with its ceiling{alone})")
        s.add_argument("--store", choices=STORES, default="sqlite")
        s.add_argument("--invoices", type=int, default=10_000, help="pending invoices (and customers) seeded")
        _common(s)
    a = sub.add_parser("all", help="collect, retrieve and list on SQLite and PostgreSQL at 10 k and 1 M invoices; "
                                   "multisite and scaleout on PostgreSQL; timetravel on each store")
    a.add_argument("--stores", default=",".join(STORES), help="comma-separated (default sqlite,postgres)")
    a.add_argument("--sizes", default=",".join(str(n) for n in SIZES), help="comma-separated (default 10000,1000000)")
    a.add_argument("--sites", type=int, default=50, help="multisite: sites (default 50)")
    a.add_argument("--multisite-invoices", type=int, default=60_000, help="multisite: invoices over all sites")
    a.add_argument("--scaleout-invoices", type=int, default=30_000, help="scaleout: invoices")
    a.add_argument("--subscriptions", type=int, default=1000, help="timetravel: monthly subscriptions per site")
    a.add_argument("--months", type=int, default=12, help="timetravel: months travelled")
    a.add_argument("--skip", default="", help="comma-separated parts to leave out: matrix, multisite, scaleout, "
                                              "timetravel")
    _common(a)
    ms = sub.add_parser("multisite", help="PostgreSQL: collect over 50 sites at once beside one site alone "
                                          "(target >= 2x)")
    ms.add_argument("--sites", type=int, default=50)
    ms.add_argument("--invoices", type=int, default=60_000, help="pending invoices over all sites (a fifth on the "
                                                                 "single site)")
    _common(ms)
    sc = sub.add_parser("scaleout", help="PostgreSQL: two API processes and a worker beside one process, with the "
                                         "exactly-once and gapless checks")
    sc.add_argument("--invoices", type=int, default=30_000)
    _common(sc)
    c = sub.add_parser("console", help="the admin console's pages, one request at a time (p95 budget 300 ms)")
    c.add_argument("--store", choices=STORES, default="sqlite")
    c.add_argument("--invoices", type=int, default=100_000)
    c.add_argument("--requests", type=int, default=40, help="measured requests per page (default 40)")
    c.add_argument("--pg-url", default=harness.DEFAULT_PG)
    c.add_argument("--json", type=Path)
    m = sub.add_parser("metrics", help="/metrics' per-site figures with many sites, beside the per-site queries")
    m.add_argument("--store", choices=STORES, default="sqlite")
    m.add_argument("--sites", type=int, default=3000)
    m.add_argument("--deliveries", type=int, default=200_000, help="succeeded deliveries on one site")
    m.add_argument("--rounds", type=int, default=7)
    m.add_argument("--pg-url", default=harness.DEFAULT_PG)
    sn = sub.add_parser("snapshot", help="restore time of a 1,000-object site's snapshot (budget 1 s), beside "
                                         "creating the same objects through the API")
    sn.add_argument("--store", choices=STORES, default="sqlite")
    sn.add_argument("--objects", type=int, default=1000)
    sn.add_argument("--pg-url", default=harness.DEFAULT_PG)
    t = sub.add_parser("timetravel", help="due jobs/s of a time travel (target >= 5,000 on SQLite)")
    t.add_argument("--store", choices=STORES, default="sqlite")
    t.add_argument("--subscriptions", type=int, default=1000, help="monthly subscriptions per site (default 1,000)")
    t.add_argument("--months", type=int, default=12)
    t.add_argument("--pg-url", default=harness.DEFAULT_PG)
    so = sub.add_parser("store-only", help=argparse.SUPPRESS)  # the harness's child process
    so.add_argument("--url", required=True)
    so.add_argument("--site-pk", type=int, required=True)
    so.add_argument("--ids", type=Path, required=True)
    so.add_argument("--seconds", type=float, required=True)
    so.add_argument("--concurrency", type=int, default=32)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # on SIGTERM unwind like on Ctrl-C: stop the server, drop the database, remove the work directory
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.command == "store-only":
        from bench import store_only

        store_only.main(args.url, args.site_pk, args.ids, args.seconds, args.concurrency)
        return 0
    if args.command == "console":
        from bench import console

        return console.run(args.store, args.invoices, args.requests, args.pg_url, args.json)
    if args.command == "metrics":
        from bench import metrics

        return metrics.run(args.store, args.sites, args.deliveries, args.rounds, args.pg_url)
    if args.command == "snapshot":
        from bench import snapshot

        return snapshot.run(args.store, args.objects, args.pg_url)
    if args.command == "timetravel":
        return timetravel.run(args.store, args.subscriptions, args.months, args.pg_url)
    parts = {"matrix"}
    stores = [args.store] if hasattr(args, "store") else ["postgres"]
    if args.command == "all":
        stores = [s.strip() for s in args.stores.split(",") if s.strip()]
        if any(s not in STORES for s in stores):
            raise SystemExit(f"--stores: choose from {', '.join(STORES)}")
        plan = [(store, int(n)) for store in stores for n in args.sizes.split(",")]
        ops = harness.OPS
        parts = {"matrix", "multisite", "scaleout", "timetravel"} - {p.strip() for p in args.skip.split(",")}
        if "postgres" not in stores:
            parts -= {"multisite", "scaleout"}
    elif args.command in ("multisite", "scaleout"):
        plan, ops, parts = [], (), {args.command}
    else:
        plan = [(args.store, args.invoices)]
        ops = (args.command,)
    if "matrix" not in parts:
        plan = []
    wrk = load.ensure_wrk()
    json_path = args.json or report.default_json_path()
    opt = harness.Options(seconds=args.seconds, connections=args.connections, threads=args.threads,
                          pg_admin_url=args.pg_url, keep=args.keep, quiet_wait=args.quiet_wait,
                          profile_prefix=str(json_path.with_suffix("")) if args.profile else None)
    machine = report.machine(args.pg_url, load.wrk_version(wrk))
    sha, dirty = report.commit()  # the code being measured: as it is when the run starts
    started = report.now()
    runs, failed = [], 0
    for store, n in plan:
        try:
            runs.append(harness.run(store, n, ops, opt))
        except Exception:  # noqa: BLE001 - one failed run does not lose the others' figures
            failed += 1
            print(f"bench: the {store} {n:,} run failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    extras: dict[str, list[dict]] = {"multisite": [], "scaleout": [], "timetravel": []}
    def attempt(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        nonlocal failed
        try:
            extras[name].append(fn())
        except Exception:  # noqa: BLE001 - as above
            failed += 1
            print(f"bench: the {name} run failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    common = {"seconds": args.seconds, "connections": args.connections, "threads": args.threads,
              "pg_admin_url": args.pg_url, "keep": args.keep, "quiet_wait": args.quiet_wait}
    if "multisite" in parts:
        n = args.invoices if args.command == "multisite" else args.multisite_invoices
        attempt("multisite", lambda: multisite.run(multisite.Options(sites=args.sites, invoices=n, **common)))
    if "scaleout" in parts:
        n = args.invoices if args.command == "scaleout" else args.scaleout_invoices
        attempt("scaleout", lambda: scaleout.run(scaleout.Options(invoices=n, **common)))
    if "timetravel" in parts:
        for store in stores:
            attempt("timetravel", lambda store=store: timetravel.measure(store, args.subscriptions, args.months,
                                                                         args.pg_url))
    settings = {"command": args.command, "parts": sorted(parts), "seconds": args.seconds,
                "connections": args.connections, "threads": args.threads, "ops": list(ops), "profile": args.profile,
                "quiet_wait": args.quiet_wait,
                "server": "billhive serve (uvicorn, uvloop, httptools; 1 process; background workers on; "
                          "no access log) with the ceiling routes (python -m bench.ceiling serve)",
                "durability": {"sqlite": "synchronous=FULL (WAL)", "postgres": "synchronous_commit as configured "
                               f"({machine.get('postgresql_settings', {}).get('synchronous_commit', '?')})"}}
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    doc = report.document(runs, settings, machine, sha, dirty, started, extras)
    print()
    print(report.table(doc))
    for r in runs:
        for op, prof in r.get("profiles", {}).items():
            print(f"\nprofile of the server during {op}, {r['store']} {r['invoices']:,}:")
            print(report.print_profile(prof))
    report.write(doc, json_path)
    print(f"\nresults: {json_path}")
    # a correctness check that failed (scaleout's guarantees, timetravel's checks) fails the command too
    failed += sum(1 for recs in extras.values() for rec in recs for t in rec.get("targets", [])
                  if t.get("check") and not t["pass"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
