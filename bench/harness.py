"""One benchmark run: a fresh database with N pending invoices on one store, ``billhive serve``
over it, wrk at 32 connections against the real routes and their ceilings, then the store-only
reference. Returns the run's record (flat keys; see bench/README.md)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import cpu, load, noise, pgwait, seed
from bench.report import profile_summary
from bench.server import ROOT, Profiler, Server

OPS = ("collect", "retrieve", "list")
DEFAULT_PG = os.environ.get("BILLHIVE_BENCH_PG") or os.environ.get(
    "BILLHIVE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

COLLECT = ("POST", "/api/v1/invoices/{id}/collect", "/api/v1/_bench/ceiling/{id}")
RETRIEVE = ("GET", "/api/v1/invoices/{id}", "/api/v1/_bench/ceiling/{id}")
LIST = ("GET", "/api/v1/invoices?limit=100&status%5Bis%5D=paid", "/api/v1/_bench/ceiling?limit=100&status%5Bis%5D=paid")

STORE_SHARE = 0.4  # of the pending invoices, kept for the store-only run (collect)
CALIBRATION_SHARE = 0.1  # of the rest, for the calibration run
HEADROOM = 0.9  # plan the collect run to use at most this share of its ids
LIST_MIN_PAID = 1000  # paid invoices wanted before the list run
RETRIEVE_SAMPLE = 100_000  # random existing ids that retrieve draws from


@dataclass
class LoadOptions:
    """What every wrk-driven run takes (the matrix, multisite, scaleout)."""

    seconds: int = 10
    connections: int = 32
    threads: int = 2
    pg_admin_url: str = DEFAULT_PG
    keep: bool = False  # keep the database and the work directory (their paths are printed)
    quiet_wait: float = 30.0  # longest wait for a quiet machine before each measured pair


@dataclass
class Options(LoadOptions):
    # --profile: py-spy on the server in each measured run; <prefix>-<store>-<n>-<op>...
    profile_prefix: str | None = None
    log: Callable[[str], None] = field(default=lambda msg: print(msg, flush=True))


class Run:
    def __init__(self, store: str, n: int, ops: tuple[str, ...], opt: Options):
        self.store, self.n, self.ops, self.opt = store, n, ops, opt
        self.wrk = load.ensure_wrk()
        self.rec: dict = {"store": store, "invoices": n}
        self.profiler_pids: tuple[int, ...] = ()  # py-spy's CPU is the harness's, not other work
        self.detail: dict = {}

    def log(self, msg: str) -> None:
        self.opt.log(f"[{self.store} {self.n:,}] {msg}")

    def execute(self) -> dict:
        workdir = Path(tempfile.mkdtemp(prefix=f"billhive-bench-{self.store}-"))
        try:
            db = seed.create_database(self.store, workdir, self.opt.pg_admin_url)
        except BaseException:
            seed.remove_dir(workdir)
            raise
        try:
            self._execute(db.url, workdir)
        finally:
            if self.opt.keep:
                self.log(f"kept the database {db.url} and {workdir}")
            else:
                db.drop()
                seed.remove_dir(workdir)
        self.rec["wrk"] = self.detail
        return self.rec

    def _execute(self, url: str, workdir: Path) -> None:
        self.log(f"seeding {self.n:,} customers and pending invoices")
        s = seed.seed(url, self.n, log=self.log)
        self.site_pk, self.auth = s.site_pk, load.basic_auth(s.key)
        self.rec.update(seed_seconds=s.seconds, seed_insert_seconds=s.insert_seconds,
                        seed_finish_seconds=s.finish_seconds, db_bytes_seeded=s.db_bytes)
        self.log(f"seeded in {s.seconds:.1f} s ({s.insert_seconds:.1f} s inserting, {s.finish_seconds:.1f} s "
                 f"{'VACUUM ANALYZE' if self.store == 'postgres' else 'checkpoint'})")
        ids = s.invoice_ids
        n_store = int(len(ids) * STORE_SHARE) if "collect" in self.ops else 0
        store_pool, http_pool = ids[:n_store], ids[n_store:]
        self.workdir, self.url = workdir, url
        server = Server(url, workdir / "server.log")
        self.base_url, self.server_pid = server.base_url, server.pid
        try:
            if "collect" in self.ops:
                self._collect(http_pool)
            if "retrieve" in self.ops:
                self._retrieve()
            if "list" in self.ops:
                self._list(http_pool)
        finally:
            code = server.stop()
            log_text = (workdir / "server.log").read_text(errors="replace")
            self.rec["server_log_errors"] = log_text.count("Traceback") + log_text.count(" ERROR ")
            if self.rec["server_log_errors"]:
                self.log(f"the server logged errors (exit {code}):\n{server.log_tail()}")
        if "collect" in self.ops:
            self._store_only(store_pool)
        self.rec["db_bytes_after"] = seed.database_bytes(url)

    # ---- collect -------------------------------------------------------------------------------

    def _wrk(self, name: str, method: str, path: str, seconds: int, ids: list[str] | None = None,
             mode: str = "cycle", hook: bool = False) -> load.WrkResult:
        prefix = load.write_ids(self.workdir, name, ids, self.opt.threads) if ids else "-"
        meter = cpu.CpuMeter((self.server_pid,), self.url)
        waits = pgwait.WaitSampler(self.url)
        meter.exclude.add(waits.pid or 0)
        r = load.run_wrk(self.wrk, self.base_url, seconds=seconds, connections=self.opt.connections,
                         threads=self.opt.threads, method=method, path=path, auth=self.auth, ids_prefix=prefix,
                         mode=mode, hook=hook, our_pids=(self.server_pid, *self.profiler_pids))
        r.cpu = meter.stop().per_request(r.requests)
        self.detail[name] = dict(r.as_dict(), pg_waits=waits.stop())
        self.log(f"{name:19} {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
                 f"errors {r.errors}  ({r.requests:,} requests in {r.seconds:.2f} s; other work "
                 f"{_pct(r.other_cpu_pct)} of the CPU; {cpu_text(r.cpu)})")
        if self.detail[name]["pg_waits"]:
            self.log(f"{'':19} {pgwait.text(self.detail[name]['pg_waits'])}")
        return r

    def _collect(self, http_pool: list[str]) -> None:
        method, path, ceiling_path = COLLECT
        n_cal = max(self.opt.threads, min(20_000, int(len(http_pool) * CALIBRATION_SHARE)))
        cal_pool, pool = http_pool[:n_cal], http_pool[n_cal:]
        cal = self._wrk("collect_calibration", method, path, min(2, self.opt.seconds), cal_pool, "once", True)
        self._quiesce()
        planned = self.opt.seconds
        if cal.rps * planned > HEADROOM * len(pool):
            planned = max(1, int(HEADROOM * len(pool) / max(cal.rps, 1.0)))
            self.log(f"{len(pool):,} invoices left for the collect run at ~{cal.rps:.0f}/s: "
                     f"{planned} s instead of {self.opt.seconds} s")
        self._wait_quiet()
        ceiling = self._wrk("collect_ceiling", method, ceiling_path, planned, pool, "cycle", True)
        profiler = self._profiler("collect", planned)
        r = self._wrk("collect", method, path, planned, pool, "once", True)
        self._profiled("collect", profiler)
        self._quiesce()
        self.rec.update(
            collect_rps=r.rps, ceiling_rps=ceiling.rps, ratio=_ratio(r.rps, ceiling.rps), p50_ms=r.p50_ms,
            p99_ms=r.p99_ms, errors=r.errors, seconds=r.seconds, planned_seconds=planned,
            ids_exhausted=r.threads_exhausted > 0, calibration_rps=cal.rps, calibration_errors=cal.errors,
            ceiling_p50_ms=ceiling.p50_ms, ceiling_p99_ms=ceiling.p99_ms, ceiling_errors=ceiling.errors,
            other_cpu_pct=r.other_cpu_pct, ceiling_other_cpu_pct=ceiling.other_cpu_pct,
            profiled=profiler is not None, pg_waits=self.detail["collect"]["pg_waits"], **cpu_keys("", r, ceiling))

    def _profiler(self, op: str, seconds: int) -> Profiler | None:
        """--profile: py-spy on the server for the measured run of op."""
        if self.opt.profile_prefix is None:
            return None
        out = Path(f"{self.opt.profile_prefix}-{self.store}-{self.n}-{op}.speedscope.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(self.server_pid, out, seconds + 1)
        self.profiler_pids = (profiler.proc.pid,)
        return profiler

    def _profiled(self, op: str, profiler: Profiler | None) -> None:
        path = profiler.wait() if profiler is not None else None
        self.profiler_pids = ()
        if path is not None:
            self.rec.setdefault("profiles", {})[op] = {"file": str(path), **profile_summary(path)}
            self.log(f"profile of {op}: {path}")

    def _wait_quiet(self) -> None:
        """Start a measured pair when the shared machine is quiet (or after 30 s of waiting)."""
        if self.opt.quiet_wait <= 0:
            return
        t = time.perf_counter()
        pct = noise.wait_quiet(self.server_pid, longest_s=self.opt.quiet_wait)
        if time.perf_counter() - t > 1.5:
            self.log(f"waited {time.perf_counter() - t:.0f} s for other work to calm down (now {_pct(pct)})")

    def _quiesce(self, timeout: float = 60) -> None:
        settled(self.url, self.log, timeout)

    def _pay(self, ids: list[str]) -> None:
        """Collect invoices so that list has paid ones to page through (not measured)."""
        errors = 0

        async def go() -> None:
            nonlocal errors
            queue = list(ids)
            async with httpx.AsyncClient(base_url=self.base_url, headers={"Authorization": self.auth},
                                         timeout=60) as client:
                async def worker() -> None:
                    nonlocal errors
                    while queue:
                        r = await client.post(COLLECT[1].replace("{id}", queue.pop()))
                        errors += r.status_code != 200
                await asyncio.gather(*(worker() for _ in range(self.opt.connections)))
        started = time.perf_counter()
        asyncio.run(go())
        self.detail["pay_for_list"] = {"requests": len(ids), "errors": errors}
        self.log(f"paid {len(ids):,} invoices for list in {time.perf_counter() - started:.1f} s ({errors} errors)")

    def _store_only(self, pool: list[str]) -> None:
        ids_file = self.workdir / "store_only_ids.txt"
        ids_file.write_text("\n".join(pool))
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "bench", "store-only", "--url", self.url, "--site-pk", str(self.site_pk),
               "--ids", str(ids_file), "--seconds", str(self.opt.seconds), "--concurrency",
               str(self.opt.connections)]
        meter = noise.Meter()  # the child's CPU counts as ours once it has exited
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT),
                              timeout=self.opt.seconds + 300)
        other = meter.other_pct()
        r = load.bench_json(proc.stdout)
        if proc.returncode != 0 or r is None:
            raise RuntimeError(f"store-only run failed: {proc.stdout[-2000:]}{proc.stderr[-3000:]}")
        r["other_cpu_pct"] = other
        self.detail["store_only"] = r
        self.log(f"{'store_only':19} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                 f"errors {r['errors']}  ({r['requests']:,} collects in {r['seconds']:.2f} s; other work "
                 f"{_pct(other)} of the CPU)")
        self.rec.update(store_only_rps=r["rps"], store_only_p50_ms=r["p50_ms"], store_only_p99_ms=r["p99_ms"],
                        store_only_errors=r["errors"], store_only_seconds=r["seconds"],
                        store_only_other_cpu_pct=other,
                        collect_over_store=_ratio(self.rec["collect_rps"], r["rps"]))

    # ---- reads ---------------------------------------------------------------------------------

    def _reads(self, op: str, spec: tuple[str, str, str], ids: list[str] | None) -> None:
        method, path, ceiling_path = spec
        mode = "random" if ids else "cycle"
        self._wrk(f"{op}_warmup", method, path, 1, ids, mode)
        self._wait_quiet()
        ceiling = self._wrk(f"{op}_ceiling", method, ceiling_path, self.opt.seconds, ids, mode)
        profiler = self._profiler(op, self.opt.seconds)
        r = self._wrk(op, method, path, self.opt.seconds, ids, mode)
        self._profiled(op, profiler)
        self.rec.update({
            f"{op}_rps": r.rps, f"{op}_ceiling_rps": ceiling.rps, f"{op}_ratio": _ratio(r.rps, ceiling.rps),
            f"{op}_p50_ms": r.p50_ms, f"{op}_p99_ms": r.p99_ms, f"{op}_errors": r.errors, f"{op}_seconds": r.seconds,
            f"{op}_ceiling_p50_ms": ceiling.p50_ms, f"{op}_ceiling_p99_ms": ceiling.p99_ms,
            f"{op}_ceiling_errors": ceiling.errors, f"{op}_other_cpu_pct": r.other_cpu_pct,
            f"{op}_ceiling_other_cpu_pct": ceiling.other_cpu_pct, f"{op}_profiled": profiler is not None,
            **cpu_keys(f"{op}_", r, ceiling)})

    def _retrieve(self) -> None:
        existing = [r[0] for r in seed.query(self.url, "SELECT id FROM invoices WHERE site_id = ?", (self.site_pk,))]
        sample = random.Random(2).sample(existing, min(RETRIEVE_SAMPLE, len(existing)))
        self._reads("retrieve", RETRIEVE, sample)

    def _list(self, http_pool: list[str]) -> None:
        paid = self._paid()
        if paid < min(LIST_MIN_PAID, len(http_pool)):
            pending = {r[0] for r in seed.query(self.url, "SELECT id FROM invoices WHERE site_id = ? AND status = ?",
                                                  (self.site_pk, "pending"))}
            self._pay([i for i in http_pool if i in pending][:LIST_MIN_PAID - paid])  # may be none left
            paid = self._paid()
        self.rec["list_paid_invoices"] = paid
        self._reads("list", LIST, None)

    def _paid(self) -> int:
        return int(seed.query(self.url, "SELECT count(*) FROM invoices WHERE site_id = ? AND status = ?",
                              (self.site_pk, "paid"))[0][0])


def settled(url: str, log: Callable[[str], None], timeout: float = 60) -> bool:
    """wrk ends a run with requests in flight, and the server finishes them: wait until it has
    (closed invoices and unsettled payments stop changing, on every site), so that they neither
    overlap the next run nor rename an invoice that retrieve has just drawn."""
    sql = ("SELECT (SELECT count(*) FROM invoices WHERE status <> 'pending'), "
           "(SELECT count(*) FROM transactions WHERE status = 'in_progress')")
    last, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = seed.query(url, sql)[0]
        if now == last and now[1] == 0:
            return True
        last = now
        time.sleep(0.3)
    log(f"the server was still busy {timeout:.0f} s after the run ({last})")
    return False


def cpu_keys(pre: str, r: load.WrkResult, ceiling: load.WrkResult) -> dict:
    """The run's and its ceiling's CPU per request (bench/cpu.py), side by side: server_cpu_us
    (the server process, all threads), pg_cpu_us (the bench database's PostgreSQL backends)."""
    return {f"{pre}server_cpu_us": r.cpu.get("server_cpu_us"), f"{pre}pg_cpu_us": r.cpu.get("pg_cpu_us"),
            f"{pre}ceiling_server_cpu_us": ceiling.cpu.get("server_cpu_us"),
            f"{pre}ceiling_pg_cpu_us": ceiling.cpu.get("pg_cpu_us")}


def cpu_text(c: dict) -> str:
    out = f"server CPU {c.get('server_cpu_us') if c.get('server_cpu_us') is not None else '?'} us/req"
    if c.get("pg_cpu_us") is not None:
        out += f", PostgreSQL {c['pg_cpu_us']} us/req"
    return out


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.0f} %"


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def run(store: str, n: int, ops: tuple[str, ...], opt: Options) -> dict:
    started = time.perf_counter()
    rec = Run(store, n, ops, opt).execute()
    rec["wall_seconds"] = round(time.perf_counter() - started, 1)
    return rec
