"""python -m bench snapshot runs end to end on a small site and checks what it restored."""

from __future__ import annotations

from bench import harness, snapshot


def test_bench_snapshot_runs_and_checks_the_restore(capsys):
    assert snapshot.run("sqlite", 40, harness.DEFAULT_PG) == 0
    out = capsys.readouterr().out
    assert "restore into another site" in out and "baseline" in out and "checked (the same rows per table): ok" in out
