"""The benchmark harness end to end at a tiny size, so that CI notices when it breaks:
SQLite, 300 invoices, 1 second per run; every figure present, no errors anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_KEYS = {"store", "invoices", "collect_rps", "ceiling_rps", "store_only_rps", "ratio", "p50_ms", "p99_ms", "errors"}
READ_KEYS = {"rps", "ceiling_rps", "ratio", "p50_ms", "p99_ms", "errors"}


@pytest.mark.slow  # ~25 s: seeds, serves and measures every run of `bench all` at a tiny size
def test_bench_all_runs_end_to_end_and_writes_its_json(tmp_path):
    if shutil.which("wrk") is None and shutil.which("apt-get") is None:
        pytest.skip("wrk is not installed and apt-get cannot install it")
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "bench", "all", "--stores", "sqlite", "--sizes", "300",
                           "--seconds", "1", "--quiet-wait", "0", "--subscriptions", "5", "--months", "2",
                           "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert {"cpu", "cores", "ram_gb", "python", "sqlite", "postgresql"} <= set(doc["machine"])
    assert len(doc["commit"]) == 40
    (run,) = doc["runs"]
    assert RUN_KEYS <= set(run)
    for op in ("retrieve", "list"):
        assert {f"{op}_{k}" for k in READ_KEYS} <= set(run)
    assert (run["store"], run["invoices"]) == ("sqlite", 300)
    assert min(run["collect_rps"], run["ceiling_rps"], run["store_only_rps"], run["retrieve_rps"], run["list_rps"]) > 0
    assert run["list_paid_invoices"] >= 100  # a full page of paid invoices to list
    errors = {t["name"]: t["value"] for t in run["targets"]}["0 errors"]
    assert errors == 0 and run["errors"] == run["store_only_errors"] == run["server_log_errors"] == 0
    assert "collect" in proc.stdout and "[" in proc.stdout  # the table, each figure beside its ceiling
    # round 2: CPU per request beside its ceiling's, from /proc
    assert run["server_cpu_us"] > 0 and run["ceiling_server_cpu_us"] > 0 and run["pg_cpu_us"] is None
    names = [t["name"] for t in run["targets"]]
    assert "collect/ceiling >= 0.15" in names and "server CPU/collect <= 150 us" in names
    # time travel is part of all: 2 sites x 5 subscriptions x 2 months (at least one due job each), checked
    (tt,) = doc["timetravel"]
    assert tt["store"] == "sqlite" and tt["jobs"] >= 2 * 5 * 2 and tt["ok"] and tt["jobs_per_s"] > 0
    assert "multisite" not in doc and "scaleout" not in doc  # PostgreSQL only
