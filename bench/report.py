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

ROOT = Path(__file__).resolve().parents[1]
RATIO_TARGET = {"sqlite": 0.25, "postgres": 0.15}  # collect / ceiling
P99_TARGET_MS = 25.0  # at 32 connections
SCALE_TARGET = 1.2  # p99 at the largest size <= 1.2 x p99 at the smallest, per store
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
    out = []
    if "collect_rps" in rec:
        limit = RATIO_TARGET[rec["store"]]
        out.append({"name": f"collect/ceiling >= {limit}", "value": rec["ratio"], "limit": limit,
                    "pass": rec["ratio"] is not None and rec["ratio"] >= limit})
    for op in OPS:
        key = "p99_ms" if op == "collect" else f"{op}_p99_ms"
        if key in rec:
            out.append({"name": f"{op} p99 <= {P99_TARGET_MS:g} ms", "value": rec[key], "limit": P99_TARGET_MS,
                        "pass": rec[key] <= P99_TARGET_MS})
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
                out.append({"name": f"{store} {op} p99 at {large['invoices']:,} <= {SCALE_TARGET} x p99 at "
                                    f"{small['invoices']:,}", "store": store, "op": op,
                            "small": small["invoices"], "large": large["invoices"], "p99_small_ms": small[key],
                            "p99_large_ms": large[key], "factor": factor, "pass": factor <= SCALE_TARGET})
    return out


# ---- output --------------------------------------------------------------------------------------

def _n(x: float | None, digits: int = 0) -> str:
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
              f"{'other%':>6}")
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
            so = _n(r.get("store_only_rps")) if op == "collect" else ""
            over = _n(r.get("collect_over_store"), 2) if op == "collect" else ""
            flag = "*" if op == "collect" and r.get("ids_exhausted") else " "
            lines.append(
                f"{r['store']:8} {r['invoices']:>9,}  {op:8} {secs:>5.1f}{flag} "
                f"{_n(r[rps_key]):>9} [{_n(ceil):>8}]  {_n(ratio, 2):>5}  {so:>10}  {over:>6}  "
                f"{_n(r[pre + 'p50_ms'], 1):>6} [{_n(r[pre + 'ceiling_p50_ms'], 1):>7}]  "
                f"{_n(r[pre + 'p99_ms'], 1):>6} [{_n(r[pre + 'ceiling_p99_ms'], 1):>7}]  "
                f"{r[pre + 'errors']:>3}  {_n(_other(r, pre), 0):>6}")
    lines.append("other%: the most of the machine's CPU that other work took during the run or its ceiling "
                 "(besides billhive, wrk and PostgreSQL)")
    if any(r.get("ids_exhausted") for r in doc["runs"]):
        lines.append("* the collect run ran out of pending invoices before its planned duration (secs is actual)")
    lines.append("")
    lines.append("targets")
    for r in doc["runs"]:
        for t in r["targets"]:
            lines.append(f"  {'PASS' if t['pass'] else 'MISS'}  {r['store']:8} {r['invoices']:>9,}  {t['name']:26} "
                         f"{t['value']}")
    for t in doc["scale"]:
        lines.append(f"  {'PASS' if t['pass'] else 'MISS'}  {t['name']}: {t['p99_small_ms']} -> {t['p99_large_ms']} ms "
                     f"({t['factor']}x)")
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


def document(runs: list[dict], settings: dict, machine_info: dict, sha: str, dirty: bool, started: str) -> dict:
    for r in runs:
        r["targets"] = run_targets(r)
    scale = scale_targets(runs)
    return {
        "date": started, "commit": sha, "dirty": dirty,
        "machine": machine_info, "settings": settings, "runs": runs, "scale": scale,
        "targets_met": all(t["pass"] for r in runs for t in r["targets"]) and all(t["pass"] for t in scale),
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
