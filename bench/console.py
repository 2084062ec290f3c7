"""python -m bench console: the admin console's pages at scale (issue 16: p95 under 300 ms with
100 k invoices on the site).

Seeds a fresh database as the other benchmarks do (bench/seed.py: N customers, N pending
invoices on ``bench-test``), starts ``billhive serve`` with an admin token, signs in, and
requests each page one at a time (``--requests`` times, after two warm-ups): no concurrent load,
it is a page's own latency that is measured. Prints p50/p95/max per page and whether p95 is
within the budget; ``--json`` writes the figures. Exit status 1 when a page is over budget."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench import seed
from bench.server import Server

BUDGET_MS = 300.0
TOKEN = "bench-console-token-0123456789"


def pages(site: str, customer_id: str, invoice_id: str) -> dict[str, str]:
    base = f"/admin/sites/{site}"
    return {
        "sites": "/admin/sites",
        "overview": base,
        "customers": f"{base}/customers",
        "customer search (email)": f"{base}/customers?q={customer_id}%40example.com",
        "customer search (prefix)": f"{base}/customers?q={customer_id[:6]}",
        "customer": f"{base}/customers/{customer_id}",
        "invoices": f"{base}/invoices",
        "invoices status[is]=pending": f"{base}/invoices?status%5Bis%5D=pending",
        "invoices customer_id[is]": f"{base}/invoices?customer_id%5Bis%5D={customer_id}",
        "invoice": f"{base}/invoices/{invoice_id}",
        "transactions": f"{base}/transactions",
        "events": f"{base}/events",
    }


def run(store: str, n: int, requests: int, pg_admin_url: str, json_path: Path | None) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"billhive-bench-console-{store}-"))
    db = seed.create_database(store, workdir, pg_admin_url)
    server = None
    try:
        print(f"bench console: seeding {n:,} invoices on {store}", flush=True)
        s = seed.seed(db.url, n)
        print(f"  seeded in {s.seconds} s", flush=True)
        os.environ["BILLHIVE_ADMIN_TOKEN"] = TOKEN  # the server is started with this environment
        server = Server(db.url, workdir / "server.log")
        rows = seed.query(db.url, "SELECT customer_id, id FROM invoices WHERE site_id = %s LIMIT 1"
                          if store == "postgres" else
                          "SELECT customer_id, id FROM invoices WHERE site_id = ? LIMIT 1", (s.site_pk,))
        customer_id, invoice_id = rows[0]
        results = {}
        with httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False) as client:
            r = client.post("/admin/signin", data={"token": TOKEN})
            assert r.status_code == 303, r.text
            for name, path in pages(seed.SITE, customer_id, invoice_id).items():
                times = []
                for i in range(requests + 2):
                    t = time.perf_counter()
                    got = client.get(path)
                    ms = (time.perf_counter() - t) * 1000
                    if got.status_code != 200:
                        raise RuntimeError(f"{path}: {got.status_code} {got.text[:300]}")
                    if i >= 2:
                        times.append(ms)
                times.sort()
                p95 = times[max(0, int(round(0.95 * len(times))) - 1)]
                results[name] = {"path": path, "p50_ms": round(statistics.median(times), 1), "p95_ms": round(p95, 1),
                                 "max_ms": round(times[-1], 1), "requests": len(times)}
        over = [k for k, v in results.items() if v["p95_ms"] > BUDGET_MS]
        print(f"\n{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, v in results.items():
            flag = "  OVER BUDGET" if name in over else ""
            print(f"{name:32} {v['p50_ms']:8.1f} {v['p95_ms']:8.1f} {v['max_ms']:8.1f}{flag}")
        print(f"\nbudget: p95 <= {BUDGET_MS:.0f} ms with {n:,} invoices on {store}: "
              f"{'met' if not over else 'NOT met by ' + ', '.join(over)}")
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"store": store, "invoices": n, "budget_ms": BUDGET_MS,
                                             "load_average": os.getloadavg(), "pages": results}, indent=2))
            print(f"results: {json_path}")
        return 1 if over else 0
    finally:
        if server is not None:
            server.stop()
        db.drop()
        seed.remove_dir(workdir)
