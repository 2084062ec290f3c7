"""Machine info, targets, the printed table, the JSON file and the profile summary."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

from bench import pgwait

ROOT = Path(__file__).resolve().parents[1]
# issue 17, round 2: what PASS/MISS is judged against
RATIO_TARGET = {"sqlite": 0.15, "postgres": 0.08}  # collect / ceiling
LONG_TERM_RATIO = {"sqlite": 0.25, "postgres": 0.15}  # the issue's long-term goal (round 1's target): informational
P99_TARGET_MS = {"sqlite": 25.0, "postgres": 50.0}  # at 32 connections
SCALE_TARGET = 1.2  # SQLite: p99 at the largest size <= 1.2 x p99 at the smallest
SCALE_STORES = ("sqlite",)  # PostgreSQL's factor is printed as information
CPU_TARGET_US = {"sqlite": 150.0}  # server CPU per collect (PostgreSQL: printed, no target)
CPU_CEILING_MULTIPLE = 5.0  # 150 us against round 1's ~30 us per ceiling request: the target in ceiling requests
MULTISITE_TARGET = 2.0  # collect over 50 sites concurrently >= 2 x one site alone (PostgreSQL)
SCALEOUT_TARGET = 1.0  # two API processes >= 1 x one (PostgreSQL)
TIMETRAVEL_TARGET = {"sqlite": 5000.0}  # due jobs/s (PostgreSQL: printed, no target)
OPS = ("collect", "retrieve", "list")
_ERROR_KEYS = ("errors", "calibration_errors", "ceiling_errors", "store_only_errors", "retrieve_errors",
               "retrieve_ceiling_errors", "list_errors", "list_ceiling_errors")


# ---- where and what ------------------------------------------------------------------------------

def commit() -> tuple[str, bool]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    sha = git("rev-parse", "HEAD") or "unknown"
    dirty = any(not line[3:].startswith("bench/results/") for line in git("status", "--porcelain").splitlines())
    return sha, dirty


def machine(pg_url: str | None, wrk_version: str) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "ram_gb": ram,
        "kernel": platform.release(), "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version, "postgresql": None, "wrk": wrk_version,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if pg_url:
        from bench import seed

        try:
            rows = seed.query(pg_url, "SELECT name, setting, unit FROM pg_settings WHERE name IN "
                                      "('server_version', 'synchronous_commit', 'fsync', 'shared_buffers', "
                                      "'max_connections', 'wal_level')")
            settings = {name: f"{value}{' ' + unit if unit else ''}" for name, value, unit in rows}
            info["postgresql"] = settings.pop("server_version", None)
            info["postgresql_settings"] = settings
        except Exception:  # noqa: BLE001 - no PostgreSQL here: leave it out
            pass
    return info


# ---- targets -------------------------------------------------------------------------------------

def total_errors(rec: dict) -> int:
    n = sum(int(rec.get(k) or 0) for k in _ERROR_KEYS)
    n += sum(int(v.get("errors") or 0) for k, v in rec.get("wrk", {}).items()
             if k.endswith("_warmup") or k == "pay_for_list")
    return n


def run_targets(rec: dict) -> list[dict]:
    """One run's targets (issue 17, round 2). A target with "pass": None is information, not judged."""
    out = []
    store = rec["store"]
    if "collect_rps" in rec:
        limit = RATIO_TARGET[store]
        out.append({"name": f"collect/ceiling >= {limit}", "value": rec["ratio"], "limit": limit,
                    "pass": rec["ratio"] is not None and rec["ratio"] >= limit})
        goal = LONG_TERM_RATIO[store]
        out.append({"name": f"collect/ceiling >= {goal} (long term)", "value": rec["ratio"], "limit": goal,
                    "pass": None, "met": rec["ratio"] is not None and rec["ratio"] >= goal})
        cpu_us, ceiling_us = rec.get("server_cpu_us"), rec.get("ceiling_server_cpu_us")
        value = f"{cpu_us} us [ceiling {ceiling_us}]"
        if rec.get("pg_cpu_us") is not None:
            value += f", PostgreSQL backends {rec['pg_cpu_us']} us [ceiling {rec.get('ceiling_pg_cpu_us')}]"
        if store in CPU_TARGET_US:
            limit_us = CPU_TARGET_US[store]
            out.append({"name": f"server CPU/collect <= {limit_us:g} us", "value": value, "limit": limit_us,
                        "pass": cpu_us is not None and cpu_us <= limit_us})
            # the same budget relative to this machine: round 1 measured ~30 us of CPU per ceiling
            # request when the issue set 150 us, i.e. 5 ceiling requests' worth (information only)
            if cpu_us is not None and ceiling_us:
                times = round(cpu_us / ceiling_us, 1)
                name = f"server CPU/collect <= {CPU_CEILING_MULTIPLE:g} x the ceiling's (machine-relative)"
                out.append({"name": name,
                            "value": times, "limit": CPU_CEILING_MULTIPLE, "pass": None,
                            "met": times <= CPU_CEILING_MULTIPLE})
        else:
            out.append({"name": "server CPU/collect", "value": value, "limit": None, "pass": None})
    limit_ms = P99_TARGET_MS[store]
    for op in OPS:
        key = "p99_ms" if op == "collect" else f"{op}_p99_ms"
        if key in rec:
            out.append({"name": f"{op} p99 <= {limit_ms:g} ms", "value": rec[key], "limit": limit_ms,
                        "pass": rec[key] <= limit_ms})
    errors = total_errors(rec)
    out.append({"name": "0 errors", "value": errors, "limit": 0, "pass": errors == 0})
    return out


def scale_targets(runs: list[dict]) -> list[dict]:
    out = []
    for store in sorted({r["store"] for r in runs}):
        mine = sorted((r for r in runs if r["store"] == store), key=lambda r: r["invoices"])
        if len(mine) < 2 or mine[0]["invoices"] == mine[-1]["invoices"]:
            continue
        small, large = mine[0], mine[-1]
        for op in OPS:
            key = "p99_ms" if op == "collect" else f"{op}_p99_ms"
            if key in small and key in large and small[key]:
                factor = round(large[key] / small[key], 3)
                judged = store in SCALE_STORES
                out.append({"name": f"{store} {op} p99 at {large['invoices']:,} <= {SCALE_TARGET} x p99 at "
                                    f"{small['invoices']:,}", "store": store, "op": op,
                            "small": small["invoices"], "large": large["invoices"], "p99_small_ms": small[key],
                            "p99_large_ms": large[key], "factor": factor,
                            "pass": factor <= SCALE_TARGET if judged else None})
    return out


def verdict(passed: bool | None) -> str:
    return "info" if passed is None else ("PASS" if passed else "MISS")


# ---- output --------------------------------------------------------------------------------------

def num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def table(doc: dict) -> str:
    lines = []
    m = doc["machine"]
    lines.append(f"billhive bench  {doc['date']}  commit {doc['commit'][:10]}{' (dirty)' if doc['dirty'] else ''}  "
                 f"{m['cpu']} x{m['cores']}, {m['ram_gb']} GB, {m['python']}, SQLite {m['sqlite']}, "
                 f"PostgreSQL {m['postgresql'] or '-'}")
    s = doc["settings"]
    lines.append(f"wrk -t{s['threads']} -c{s['connections']}, {s['seconds']} s per run; each figure: billhive "
                 "[its ceiling: the same server answering a constant document without the database]")
    header = (f"{'store':8} {'invoices':>9}  {'op':8} {'secs':>5}  {'req/s [ceiling]':>20}  {'ratio':>5}  "
              f"{'store-only':>10}  {'/store':>6}  {'p50 ms [ceiling]':>17}  {'p99 ms [ceiling]':>17}  {'err':>3}  "
              f"{'other%':>6}  {'CPU us/req [ceiling]':>20}  {'PG us/req [ceiling]':>19}")
    if doc["runs"]:
        lines += [header, "-" * len(header)]
    for r in doc["runs"]:
        for op in OPS:
            pre = "" if op == "collect" else f"{op}_"
            rps_key = "collect_rps" if op == "collect" else f"{op}_rps"
            if rps_key not in r:
                continue
            ceil = r["ceiling_rps"] if op == "collect" else r[f"{op}_ceiling_rps"]
            ratio = r["ratio"] if op == "collect" else r[f"{op}_ratio"]
            secs = r["seconds"] if op == "collect" else r[f"{op}_seconds"]
            so = num(r.get("store_only_rps")) if op == "collect" else ""
            over = num(r.get("collect_over_store"), 2) if op == "collect" else ""
            flag = "*" if op == "collect" and r.get("ids_exhausted") else " "
            lines.append(
                f"{r['store']:8} {r['invoices']:>9,}  {op:8} {secs:>5.1f}{flag} "
                f"{num(r[rps_key]):>9} [{num(ceil):>8}]  {num(ratio, 2):>5}  {so:>10}  {over:>6}  "
                f"{num(r[pre + 'p50_ms'], 1):>6} [{num(r[pre + 'ceiling_p50_ms'], 1):>7}]  "
                f"{num(r[pre + 'p99_ms'], 1):>6} [{num(r[pre + 'ceiling_p99_ms'], 1):>7}]  "
                f"{r[pre + 'errors']:>3}  {num(_other(r, pre), 0):>6}  "
                f"{num(r.get(pre + 'server_cpu_us')):>9} [{num(r.get(pre + 'ceiling_server_cpu_us')):>8}]  "
                f"{num(r.get(pre + 'pg_cpu_us')):>8} [{num(r.get(pre + 'ceiling_pg_cpu_us')):>8}]")
    if doc["runs"]:
        lines.append("other%: the most of the machine's CPU that other work took during the run or its ceiling "
                     "(besides billhive, wrk and PostgreSQL)")
        lines.append("CPU us/req: the server process's CPU (all threads, /proc utime+stime) over the run / requests "
                     "completed; PG us/req: the bench database's PostgreSQL backends, the same way")
    if any(r.get("ids_exhausted") for r in doc["runs"]):
        lines.append("* the collect run ran out of pending invoices before its planned duration (secs is actual)")
    for r in doc["runs"]:
        if r.get("pg_waits"):
            lines.append(f"{r['store']} {r['invoices']:,} collect: {pgwait.text(r['pg_waits'])}")
    for extra in EXTRAS:
        for rec in doc.get(extra, []):
            lines.append("")
            lines += rec.get("lines", [])
    lines.append("")
    lines.append("targets (issue 17, round 2; info: printed, not judged)")
    for r in doc["runs"]:
        for t in r["targets"]:
            met = f" ({'met' if t['met'] else 'not yet'})" if "met" in t else ""
            lines.append(f"  {verdict(t['pass'])}  {r['store']:8} {r['invoices']:>9,}  {t['name']:36} "
                         f"{t['value']}{met}")
    for t in doc["scale"]:
        lines.append(f"  {verdict(t['pass'])}  {t['name']}: {t['p99_small_ms']} -> {t['p99_large_ms']} ms "
                     f"({t['factor']}x)")
    for extra in EXTRAS:
        for rec in doc.get(extra, []):
            for t in rec.get("targets", []):
                lines.append(f"  {verdict(t['pass'])}  {rec['store']:8} {extra:10} {t['name']}: {t['value']}")
    for r in doc["runs"]:
        if "seed_seconds" in r:
            lines.append(f"seeding {r['store']} {r['invoices']:,}: {r['seed_seconds']:.1f} s")
        if r.get("server_log_errors"):
            lines.append(f"{r['store']} {r['invoices']:,}: the server logged {r['server_log_errors']} error(s)")
        for op, prof in r.get("profiles", {}).items():
            lines.append(f"profile {r['store']} {r['invoices']:,} {op}: {prof['file']}")
    return "\n".join(lines)


def _other(r: dict, pre: str) -> float | None:
    values = [r.get(f"{pre}other_cpu_pct"), r.get(f"{pre}ceiling_other_cpu_pct")]
    if not pre:
        values.append(r.get("store_only_other_cpu_pct"))
    values = [v for v in values if v is not None]
    return max(values) if values else None


EXTRAS = ("multisite", "scaleout", "timetravel")  # their own records: store, lines (printed), targets


def document(runs: list[dict], settings: dict, machine_info: dict, sha: str, dirty: bool, started: str,
             extras: dict[str, list[dict]] | None = None) -> dict:
    for r in runs:
        r["targets"] = run_targets(r)
    scale = scale_targets(runs)
    extras = {k: v for k, v in (extras or {}).items() if v}
    judged = [t["pass"] for r in runs for t in r["targets"]] + [t["pass"] for t in scale]
    judged += [t["pass"] for recs in extras.values() for rec in recs for t in rec.get("targets", [])]
    return {
        "date": started, "commit": sha, "dirty": dirty,
        "machine": machine_info, "settings": settings, "runs": runs, "scale": scale, **extras,
        "targets_met": all(p for p in judged if p is not None),
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def default_json_path() -> Path:
    sha, _ = commit()
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    return ROOT / "bench" / "results" / f"{stamp}-{sha[:10]}.json"


def write(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


# ---- profiles ------------------------------------------------------------------------------------

def profile_summary(path: Path, top: int = 20) -> dict:
    """Where the sampled time went (py-spy's speedscope file: busy threads only, weights in seconds):
    by thread, by function (self: a C call such as a SQLite step counts for the Python function
    that made it), and by billhive function (inclusive)."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    key = [f"{f['name']} ({_short(f.get('file', ''))})" for f in frames]
    threads: Counter = Counter()
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for prof in doc["profiles"]:
        for stack, weight in zip(prof.get("samples", ()), prof.get("weights", ())):
            total += weight
            threads[prof.get("name", "?")] += weight
            if stack:
                self_time[key[stack[-1]]] += weight
            for k in {key[i] for i in stack}:
                inclusive[k] += weight

    def pct(counter: Counter, only: str | None = None) -> list[list]:
        items = [(k, v) for k, v in counter.most_common() if only is None or only in k]
        return [[k, round(100 * v / total, 1)] for k, v in items[:top]] if total else []
    return {"sampled_seconds": round(total, 2), "threads": pct(threads), "self": pct(self_time),
            "billhive_inclusive": pct(inclusive, "billhive/")}


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    root = str(ROOT) + "/"
    return file[len(root):] if file.startswith(root) else file


def print_profile(summary: dict, lines: int = 12) -> str:
    out = [f"  {summary['sampled_seconds']} s of busy thread time sampled; by thread: " +
           ", ".join(f"{name} {p}%" for name, p in summary["threads"][:4])]
    out.append("  self time:")
    out += [f"    {p:5.1f}%  {name}" for name, p in summary["self"][:lines]]
    out.append("  billhive functions, inclusive:")
    out += [f"    {p:5.1f}%  {name}" for name, p in summary["billhive_inclusive"][:lines]]
    return "\n".join(out)
