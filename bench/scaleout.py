"""python -m bench scaleout: two API processes and a separate ``billhive worker`` on one
PostgreSQL database (issue 17, target 4), beside one API process in the same run, with the
exactly-once and gapless guarantees checked on the result.

One fresh database with ``--invoices`` pending invoices on bench-test and a webhook endpoint for
``payment_succeeded`` pointing at a receiver in this process. Two ``billhive serve
--no-background`` processes (A and B: the API only) and one ``billhive worker`` (the scheduler,
webhook and email delivery, payment recovery), all on that database. Then, same total
connections and duration:

- collect, **one process**: wrk with all connections against A;
- collect, **two processes**: two wrk processes at once, half the connections (and threads) each,
  one against A and one against B; the rate is the sum of both;
- retrieve the same way (random existing invoices).

Every collect id is used once over all runs. After the collect runs and once the servers have
settled, the database is checked:

- every closed invoice is ``paid`` (or ``payment_due``), and there are at least as many closed
  invoices as 2xx collect answers (each answer closed a distinct invoice);
- a paid invoice has exactly one successful payment transaction and exactly one gateway charge
  (``gateway_operations`` by the transaction's idempotency key); no invoice has two charges;
- invoice numbers are gapless: the closed invoices' numbers are exactly 1..N, no holes, no
  duplicates;
- the worker did its job: no transaction left ``in_progress``, and every ``payment_succeeded``
  event was delivered to the receiver (only the worker delivers: the API processes run no
  background work), and the worker process is still running.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench import cpu, harness, load, noise, pgwait, report, seed
from bench.server import Server, Worker
from billhive import webhook_endpoints
from billhive.store.db import Database, StoreLimits

CALIBRATION_SECONDS = 2
DELIVERY_WAIT = 180.0  # seconds the worker gets, after the runs, to deliver what is left
EVENT = "payment_succeeded"


@dataclass
class Options(harness.LoadOptions):
    invoices: int = 30_000


class Receiver:
    """The webhook endpoint: answers 200 to every POST and remembers the event ids it received."""

    def __init__(self) -> None:
        self.events: set[str] = set()
        self.posts = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    event_id = json.loads(body).get("id")
                except ValueError:
                    event_id = None
                with lock:
                    outer.posts += 1
                    if event_id:
                        outer.events.add(event_id)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # the worker opens many connections at once (the default backlog is 5)
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run(opt: Options) -> dict:
    return seed.on_fresh_postgres("scaleout", opt.pg_admin_url, opt.keep, lambda url, workdir: _run(opt, url, workdir))


def _log(msg: str) -> None:
    print(f"[postgres scaleout] {msg}", flush=True)


def _add_endpoint(url: str, site_pk: int, hook_url: str) -> None:
    db = Database(url, limits=StoreLimits(unit_timeout=60, statement_timeout=60))
    try:
        db.write_sync(lambda tx: webhook_endpoints.add(tx, site_pk, hook_url, now=int(time.time()),
                                                       event_types=[EVENT]))
    finally:
        db.close()


class _Run:
    def __init__(self, opt: Options, url: str, workdir: Path, auth: str):
        self.opt, self.url, self.workdir, self.auth = opt, url, workdir, auth
        self.wrk = load.ensure_wrk()
        self.detail: dict = {}
        self.servers: list[Server] = []
        self.worker: Worker | None = None

    def pids(self) -> tuple[int, ...]:
        return tuple(s.pid for s in self.servers) + ((self.worker.pid,) if self.worker else ())

    def go(self, name: str, method: str, path: str, seconds: int, ids: list[str], mode: str,
           targets: list[Server]) -> dict:
        """One measured run: one wrk per target server, at once, the connections and threads split
        evenly among them, ids split among them; rates summed. CPU per request: each server's,
        the worker's and the database's."""
        k = len(targets)
        conns, threads = self.opt.connections // k, max(1, self.opt.threads // k)
        share = -(-len(ids) // k)
        meters = {f"server_{chr(65 + i)}": cpu.CpuMeter((s.pid,)) for i, s in enumerate(self.servers)}
        meters["worker"] = cpu.CpuMeter((self.worker.pid,)) if self.worker else None  # type: ignore[assignment]
        pg_meter = cpu.CpuMeter((), self.url)
        waits = pgwait.WaitSampler(self.url)
        pg_meter.exclude.add(waits.pid or 0)
        results: list[load.WrkResult | BaseException] = [RuntimeError("wrk did not run")] * k

        def one(i: int) -> None:
            prefix = load.write_ids(self.workdir, f"{name}_{i}", ids[i * share:(i + 1) * share], threads)
            try:
                results[i] = load.run_wrk(self.wrk, targets[i].base_url, seconds=seconds, connections=conns,
                                          threads=threads, method=method, path=path, auth=self.auth,
                                          ids_prefix=prefix, mode=mode, hook=True, our_pids=self.pids())
            except BaseException as exc:  # noqa: BLE001 - raised below, in this thread
                results[i] = exc
        workers = [threading.Thread(target=one, args=(i,)) for i in range(k)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        for r in results:
            if isinstance(r, BaseException):
                raise r
        rs = [r for r in results if isinstance(r, load.WrkResult)]
        requests = sum(r.requests for r in rs)
        used = {key: m.stop() for key, m in meters.items() if m is not None}
        pg = pg_meter.stop()
        pg_waits = waits.stop()
        out = {
            "processes": k, "connections": conns * k, "rps": round(sum(r.rps for r in rs), 1),
            "requests": requests, "seconds": max(r.seconds for r in rs),
            "p50_ms": max(r.p50_ms for r in rs), "p99_ms": max(r.p99_ms for r in rs),
            "errors": sum(r.errors for r in rs), "status_errors": sum(r.status_errors for r in rs),
            "ids_exhausted": any(r.threads_exhausted for r in rs),
            "cpu_us": {key: u.per_request(requests)["server_cpu_us"] for key, u in used.items()},
            "pg_cpu_us": pg.per_request(requests)["pg_cpu_us"], "pg_waits": pg_waits,
            "wrk": [r.as_dict() for r in rs]}
        self.detail[name] = out
        cpu_txt = ", ".join(f"{key} {v}" for key, v in out["cpu_us"].items())
        _log(f"{name:24} {out['rps']:9.1f} req/s  p50 {out['p50_ms']:7.2f} ms  p99 {out['p99_ms']:7.2f} ms  "
             f"errors {out['errors']}  ({requests:,} requests in {out['seconds']:.2f} s; CPU us/req: {cpu_txt}, "
             f"PostgreSQL {out['pg_cpu_us']})")
        _log(f"{'':24} {pgwait.text(pg_waits)}")
        return out

    def quiet(self) -> None:
        if self.opt.quiet_wait > 0:
            noise.wait_quiet(*self.pids(), longest_s=self.opt.quiet_wait)


def _run(opt: Options, url: str, workdir: Path) -> dict:
    _log(f"seeding {opt.invoices:,} customers and pending invoices")
    s = seed.seed(url, opt.invoices, log=_log)
    _log(f"seeded in {s.seconds:.1f} s")
    receiver = Receiver()
    _add_endpoint(url, s.site_pk, receiver.url)
    r = _Run(opt, url, workdir, load.basic_auth(s.key))
    rec: dict = {"store": "postgres", "invoices": opt.invoices, "seed_seconds": s.seconds,
                 "connections": opt.connections, "threads": opt.threads}
    ids = list(s.invoice_ids)
    log_errors = 0
    try:
        r.worker = Worker(url, workdir / "worker.log")
        r.servers = [Server(url, workdir / f"server-{x}.log", ("--no-background",)) for x in "AB"]
        a = r.servers[0]
        method, path, _ = harness.COLLECT
        n_cal = max(opt.threads, int(len(ids) * 0.05))
        cal = r.go("collect_calibration", method, path, CALIBRATION_SECONDS, ids[:n_cal], "once", [a])
        harness.settled(url, _log)
        ids = ids[n_cal:]
        half = len(ids) // 2
        one_ids, two_ids = ids[:half], ids[half:]
        planned = opt.seconds
        # the two-process run may go up to twice as fast as the calibration on one
        for rate, pool in ((cal["rps"], one_ids), (2 * cal["rps"], two_ids)):
            if rate * planned > harness.HEADROOM * len(pool):
                planned = max(1, int(harness.HEADROOM * len(pool) / max(rate, 1.0)))
        if planned != opt.seconds:
            _log(f"not enough invoices for {opt.seconds} s at ~{cal['rps']:.0f}/s: {planned} s each")
        r.quiet()
        one = r.go("collect_1_process", method, path, planned, one_ids, "once", [a])
        harness.settled(url, _log)
        r.quiet()
        two = r.go("collect_2_processes", method, path, planned, two_ids, "once", r.servers)
        harness.settled(url, _log)
        existing = [row[0] for row in seed.query(url, "SELECT id FROM invoices WHERE site_id = ?", (s.site_pk,))]
        sample = random.Random(2).sample(existing, min(harness.RETRIEVE_SAMPLE, len(existing)))
        rmethod, rpath, _ = harness.RETRIEVE
        r.go("retrieve_warmup", rmethod, rpath, 1, sample, "random", r.servers)
        r.quiet()
        rone = r.go("retrieve_1_process", rmethod, rpath, opt.seconds, sample, "random", [a])
        r.quiet()
        rtwo = r.go("retrieve_2_processes", rmethod, rpath, opt.seconds, sample, "random", r.servers)
        answered_2xx = sum(d["requests"] - d["status_errors"] for name, d in r.detail.items()
                           if name.startswith("collect"))
        checks = _checks(url, s.site_pk, answered_2xx, receiver, r.worker)
    finally:
        for srv in r.servers:
            srv.stop()
        if r.worker is not None:
            r.worker.stop()
        receiver.close()
        for f in workdir.glob("*.log"):
            text = f.read_text(errors="replace")
            log_errors += text.count("Traceback") + text.count(" ERROR ")
    rec.update(planned_seconds=planned, calibration_rps=cal["rps"],
               collect_1_rps=one["rps"], collect_2_rps=two["rps"],
               collect_ratio=_ratio(two["rps"], one["rps"]), collect_1_p99_ms=one["p99_ms"],
               collect_2_p99_ms=two["p99_ms"], retrieve_1_rps=rone["rps"], retrieve_2_rps=rtwo["rps"],
               retrieve_ratio=_ratio(rtwo["rps"], rone["rps"]), retrieve_1_p99_ms=rone["p99_ms"],
               retrieve_2_p99_ms=rtwo["p99_ms"], answered_2xx=answered_2xx, checks=checks,
               errors=sum(d["errors"] for d in r.detail.values()), log_errors=log_errors, runs=r.detail)
    rec["targets"] = [
        {"name": f"collect, 2 processes >= {report.SCALEOUT_TARGET:g} x 1",
         "value": f"{two['rps']:,.0f} vs {one['rps']:,.0f} req/s = {rec['collect_ratio']}x",
         "pass": rec["collect_ratio"] is not None and rec["collect_ratio"] >= report.SCALEOUT_TARGET},
        {"name": f"retrieve, 2 processes >= {report.SCALEOUT_TARGET:g} x 1",
         "value": f"{rtwo['rps']:,.0f} vs {rone['rps']:,.0f} req/s = {rec['retrieve_ratio']}x",
         "pass": rec["retrieve_ratio"] is not None and rec["retrieve_ratio"] >= report.SCALEOUT_TARGET},
        *({"name": c["name"], "value": c["value"], "pass": c["pass"], "check": True} for c in checks),
        {"name": "0 errors (wrk runs, server and worker logs)", "value": rec["errors"] + log_errors,
         "pass": rec["errors"] + log_errors == 0}]
    rec["lines"] = lines(rec)
    return rec


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _checks(url: str, site_pk: int, answered_2xx: int, receiver: Receiver, worker: Worker | None) -> list[dict]:
    """The guarantees, on the database once everything has settled."""
    q = seed.query
    closed = q(url, "SELECT status, count(*) FROM invoices WHERE site_id = ? AND status <> 'pending' "
                    "GROUP BY status", (site_pk,))
    by_status = {st: int(n) for st, n in closed}
    n_closed = sum(by_status.values())
    wrong_status = {st: n for st, n in by_status.items() if st not in ("paid", "payment_due")}
    out = [{"name": "every closed invoice paid or payment_due; closed >= 2xx collect answers",
            "value": f"{by_status} closed, {answered_2xx:,} answered 2xx",
            "pass": not wrong_status and n_closed >= answered_2xx > 0}]
    # per closed invoice: successful payment transactions and gateway charges (by idempotency key)
    rows = q(url, """
        SELECT i.id, i.status,
               count(DISTINCT t.id) FILTER (WHERE t.type = 'payment' AND t.status = 'success'),
               count(DISTINCT g.pk) FILTER (WHERE g.kind = 'charge'),
               count(DISTINCT g.pk) FILTER (WHERE g.kind = 'charge' AND g.status = 'success')
        FROM invoices i
        LEFT JOIN invoice_transactions it ON it.site_id = i.site_id AND it.invoice_id = i.id
        LEFT JOIN transactions t ON t.site_id = it.site_id AND t.id = it.txn_id
        LEFT JOIN gateway_operations g ON g.site_id = t.site_id AND g.idempotency_key = t.idempotency_key
        WHERE i.site_id = ? AND i.status <> 'pending'
        GROUP BY i.id, i.status""", (site_pk,))
    paid_not_once = sum(1 for _, st, ok, _, _ in rows if st == "paid" and ok != 1)
    charged_twice = sum(1 for _, _, _, charges, _ in rows if charges > 1)
    paid_charge_not_once = sum(1 for _, st, _, _, ok_charges in rows if st == "paid" and ok_charges != 1)
    out.append({"name": "each paid invoice: exactly 1 successful transaction and 1 gateway charge; none charged "
                        "twice",
                "value": f"{len(rows):,} closed; {paid_not_once} paid without exactly 1 successful transaction, "
                         f"{paid_charge_not_once} without exactly 1 successful charge, {charged_twice} charged "
                         "more than once",
                "pass": paid_not_once == paid_charge_not_once == charged_twice == 0 and len(rows) == n_closed})
    numbers = sorted(int(i) for i, *_ in rows if str(i).isdigit())
    not_numbers = len(rows) - len(numbers)
    gapless = numbers == list(range(1, len(numbers) + 1)) and not_numbers == 0
    holes = (numbers[-1] - len(set(numbers))) if numbers else 0
    dups = len(numbers) - len(set(numbers))
    out.append({"name": "invoice numbers gapless (1..N, no holes, no duplicates)",
                "value": f"{len(numbers):,} numbers, max {numbers[-1] if numbers else 0}, {holes} holes, "
                         f"{dups} duplicates, {not_numbers} closed without a number",
                "pass": gapless})
    # the worker: deliveries drained (it is the only process with background work)
    deadline = time.monotonic() + DELIVERY_WAIT
    while True:
        in_progress = int(q(url, "SELECT count(*) FROM transactions WHERE site_id = ? AND status = 'in_progress'",
                            (site_pk,))[0][0])
        pending = int(q(url, "SELECT count(*) FROM webhook_deliveries WHERE site_id = ? AND status IN "
                             "('scheduled', 're_scheduled')", (site_pk,))[0][0])
        if (in_progress == 0 and pending == 0) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    events = {r[0] for r in q(url, "SELECT id FROM events WHERE site_id = ? AND event_type = ?", (site_pk, EVENT))}
    missing = len(events - receiver.events)
    failed_attempts = q(url, "SELECT coalesce(status_code, 0), error, count(*) FROM webhook_attempts WHERE site_id = ? "
                             "AND error IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 3", (site_pk,))
    alive = worker is not None and worker.alive()
    out.append({"name": f"the worker's job done: nothing in_progress, every {EVENT} delivered, worker alive",
                "value": f"{in_progress} in_progress, {len(events):,} {EVENT} events, {missing} not delivered "
                         f"({pending} deliveries pending; {receiver.posts:,} POSTs received; failed attempts: "
                         f"{[tuple(r) for r in failed_attempts] or 'none'}), worker "
                         f"{'running' if alive else 'not running'}",
                "pass": in_progress == 0 and missing == 0 and len(events) > 0 and alive})
    return out


def lines(rec: dict) -> list[str]:
    out = [f"scaleout (PostgreSQL, {rec['invoices']:,} invoices, 2 x billhive serve --no-background + billhive "
           f"worker, {rec['connections']} connections in all, {rec['planned_seconds']} s per collect run)"]
    out.append(f"  {'run':24} {'secs':>5}  {'req/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'err':>3}  CPU us/req "
               "(servers A, B, worker; PostgreSQL)")
    for name, d in rec["runs"].items():
        if name.endswith(("calibration", "warmup")):
            continue
        c = d["cpu_us"]
        out.append(f"  {name:24} {d['seconds']:>5.1f}  {d['rps']:>8,.0f}  {d['p50_ms']:>7.1f}  {d['p99_ms']:>7.1f}  "
                   f"{d['errors']:>3}  {report.num(c.get('server_A'))}, {report.num(c.get('server_B'))}, "
                   f"{report.num(c.get('worker'))}; {report.num(d['pg_cpu_us'])}")
    for name in ("collect_1_process", "collect_2_processes"):
        out.append(f"  {name}: {pgwait.text(rec['runs'][name].get('pg_waits'))}")
    out.append(f"  collect 2/1 = {rec['collect_ratio']}, retrieve 2/1 = {rec['retrieve_ratio']}")
    return out
