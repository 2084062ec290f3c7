"""python -m bench multisite: collect on many sites at once (issue 17, target 3: on PostgreSQL,
collect over 50 sites concurrently runs at >= 2x the single-site rate - a site's invoice number
sequence must not be a global lock).

One fresh database, ``--sites`` test sites (each its own key), ``--invoices`` pending invoices
split among them: the first site (bench-test, the "single" site) gets a fifth of them, the others
share the rest evenly. One ``billhive serve`` (as bench collect runs it: background work on).
Then, in the same run, same connections and same duration:

- **single**: collect on the first site alone (wrk with that site's ids and key);
- **multi**: collect over every site at once: the ids of all sites (the first site's other half
  included) shuffled together, each line with its site's key, so that each request picks a site
  and one of that site's pending invoices (every id once).

Both runs go through the same wrk script the same way (every line carries its key). A 2 s
calibration of each, first, sizes the measured runs so that neither runs out of ids (as bench
collect does). ratio = multi / single; PASS at >= 2.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bench import cpu, harness, load, noise, pgwait, report, seed
from bench.server import Server

SINGLE_SHARE = 0.2  # of the invoices, on the first site
CALIBRATION_SECONDS = 2
CALIBRATION_SHARE = 0.1


@dataclass
class Options(harness.LoadOptions):
    sites: int = 50
    invoices: int = 60_000


def run(opt: Options) -> dict:
    return seed.on_fresh_postgres("multisite", opt.pg_admin_url, opt.keep, lambda url, workdir: _run(opt, url, workdir))


def _log(msg: str) -> None:
    print(f"[postgres multisite] {msg}", flush=True)


def _lines(site: seed.SeededSite, ids: list[str]) -> list[str]:
    auth = load.basic_auth(site.key)
    return [f"{i}\t{auth}" for i in ids]


def _run(opt: Options, url: str, workdir: Path) -> dict:
    if opt.sites < 2:
        raise SystemExit("bench multisite: --sites must be at least 2")
    first = max(1, int(opt.invoices * SINGLE_SHARE))
    rest = opt.invoices - first
    shares = [first] + [rest // (opt.sites - 1) + (1 if k < rest % (opt.sites - 1) else 0)
                        for k in range(opt.sites - 1)]
    _log(f"seeding {opt.sites} sites, {opt.invoices:,} pending invoices ({first:,} on {seed.SITE}, "
         f"~{rest // (opt.sites - 1):,} on each other site)")
    s = seed.seed(url, opt.invoices, sites_n=opt.sites, shares=shares, log=_log)
    _log(f"seeded in {s.seconds:.1f} s")
    one = s.sites[0]
    single_ids = _lines(one, one.invoice_ids[:len(one.invoice_ids) // 2])
    multi_ids = _lines(one, one.invoice_ids[len(one.invoice_ids) // 2:])
    for site in s.sites[1:]:
        multi_ids += _lines(site, site.invoice_ids)
    random.Random(3).shuffle(multi_ids)
    rec: dict = {"store": "postgres", "sites": opt.sites, "invoices": opt.invoices, "invoices_single_site": first,
                 "seed_seconds": s.seconds, "connections": opt.connections, "threads": opt.threads}
    wrk = load.ensure_wrk()
    server = Server(url, workdir / "server.log")
    detail: dict = {}
    auth = load.basic_auth(one.key)

    def go(name: str, ids: list[str], seconds: int) -> load.WrkResult:
        prefix = load.write_ids(workdir, name, ids, opt.threads)
        meter = cpu.CpuMeter((server.pid,), url)
        waits = pgwait.WaitSampler(url)
        meter.exclude.add(waits.pid or 0)
        r = load.run_wrk(wrk, server.base_url, seconds=seconds, connections=opt.connections, threads=opt.threads,
                         method="POST", path=harness.COLLECT[1], auth=auth, ids_prefix=prefix, mode="once",
                         hook=True, our_pids=(server.pid,))
        r.cpu = meter.stop().per_request(r.requests)
        detail[name] = dict(r.as_dict(), pg_waits=waits.stop())
        _log(f"{name:19} {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}  "
             f"({r.requests:,} requests in {r.seconds:.2f} s; {harness.cpu_text(r.cpu)})")
        _log(f"{'':19} {pgwait.text(detail[name]['pg_waits'])}")
        return r

    try:
        n_single_cal = max(opt.threads, int(len(single_ids) * CALIBRATION_SHARE))
        n_multi_cal = max(opt.threads, int(len(multi_ids) * CALIBRATION_SHARE))
        cal_single = go("single_calibration", single_ids[:n_single_cal], CALIBRATION_SECONDS)
        harness.settled(url, _log)
        cal_multi = go("multi_calibration", multi_ids[:n_multi_cal], CALIBRATION_SECONDS)
        harness.settled(url, _log)
        single_ids, multi_ids = single_ids[n_single_cal:], multi_ids[n_multi_cal:]
        planned = opt.seconds
        for cal, pool in ((cal_single, single_ids), (cal_multi, multi_ids)):
            if cal.rps * planned > harness.HEADROOM * len(pool):
                planned = max(1, int(harness.HEADROOM * len(pool) / max(cal.rps, 1.0)))
        if planned != opt.seconds:
            _log(f"not enough invoices for {opt.seconds} s at the calibrated rates: {planned} s each")
        if opt.quiet_wait > 0:
            noise.wait_quiet(server.pid, longest_s=opt.quiet_wait)
        single = go("single", single_ids, planned)
        harness.settled(url, _log)
        if opt.quiet_wait > 0:
            noise.wait_quiet(server.pid, longest_s=opt.quiet_wait)
        multi = go("multi", multi_ids, planned)
        harness.settled(url, _log)
    finally:
        server.stop()
        log_text = (workdir / "server.log").read_text(errors="replace")
        rec["server_log_errors"] = log_text.count("Traceback") + log_text.count(" ERROR ")
    ratio = round(multi.rps / single.rps, 3) if single.rps else None
    errors = sum(d["errors"] for d in detail.values())
    rec.update(planned_seconds=planned, single_rps=single.rps, single_p50_ms=single.p50_ms,
               single_p99_ms=single.p99_ms, single_errors=single.errors, single_seconds=single.seconds,
               multi_rps=multi.rps, multi_p50_ms=multi.p50_ms, multi_p99_ms=multi.p99_ms, multi_errors=multi.errors,
               multi_seconds=multi.seconds, ratio=ratio, errors=errors,
               single_server_cpu_us=single.cpu.get("server_cpu_us"), single_pg_cpu_us=single.cpu.get("pg_cpu_us"),
               multi_server_cpu_us=multi.cpu.get("server_cpu_us"), multi_pg_cpu_us=multi.cpu.get("pg_cpu_us"),
               ids_exhausted=bool(single.threads_exhausted or multi.threads_exhausted), wrk=detail)
    rec["targets"] = [
        {"name": f"collect over {opt.sites} sites >= {report.MULTISITE_TARGET:g} x one site",
         "value": f"{multi.rps:,.0f} vs {single.rps:,.0f} req/s = {ratio}x", "limit": report.MULTISITE_TARGET,
         "pass": ratio is not None and ratio >= report.MULTISITE_TARGET},
        {"name": "0 errors", "value": errors + rec["server_log_errors"], "limit": 0,
         "pass": errors + rec["server_log_errors"] == 0}]
    rec["lines"] = lines(rec)
    return rec


def lines(rec: dict) -> list[str]:
    out = [f"multisite (PostgreSQL, {rec['sites']} sites, {rec['invoices']:,} invoices, wrk -t{rec['threads']} "
           f"-c{rec['connections']}, {rec['planned_seconds']} s each; collect)"]
    header = f"  {'run':8} {'secs':>5}  {'req/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'err':>3}  {'CPU us/req':>10}  " \
             f"{'PG us/req':>9}"
    out += [header]
    for run in ("single", "multi"):
        label = "1 site" if run == "single" else f"{rec['sites']} sites"
        out.append(f"  {label:8} {rec[run + '_seconds']:>5.1f}  {rec[run + '_rps']:>8,.0f}  "
                   f"{rec[run + '_p50_ms']:>7.1f}  {rec[run + '_p99_ms']:>7.1f}  {rec[run + '_errors']:>3}  "
                   f"{report.num(rec.get(run + '_server_cpu_us')):>10}  {report.num(rec.get(run + '_pg_cpu_us')):>9}")
    for run in ("single", "multi"):
        out.append(f"  {run}: {pgwait.text(rec['wrk'][run].get('pg_waits'))}")
    out.append(f"  multi / single = {rec['ratio']}")
    return out
