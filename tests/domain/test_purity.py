"""domain/ is pure (STYLE.md, rule 1): it decides on the values it is given, nothing else.

An allow-list, not a deny-list: a domain module may import only the standard library modules
below (computation, no I/O, no clock, no randomness, no environment) and billhive's own domain,
errors and money-free utilities; and it may not read the clock through a datetime method."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import billhive.domain

ALLOWED = {
    "__future__", "calendar", "collections", "collections.abc", "copy", "dataclasses", "datetime", "decimal",
    "enum", "fractions", "functools", "hashlib", "itertools", "json", "math", "operator", "re", "typing",
    "billhive.domain", "billhive.errors",
}
# datetime is allowed for calendar arithmetic on given timestamps; these read the real clock
CLOCK_READS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns"}

ROOT = Path(billhive.domain.__file__).parent
MODULES = sorted(ROOT.rglob("*.py"))


def _allowed(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_domain_module_imports_only_what_is_allowed(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["billhive.domain"] if node.level else [node.module or ""]
        else:
            continue
        for name in names:
            assert _allowed(name), f"{path.name}:{node.lineno} imports {name}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_domain_module_reads_no_clock(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in CLOCK_READS, f"{path.name}:{node.lineno} calls .{node.func.attr}()"
        if isinstance(node, ast.Name) and node.id in ("open", "input", "print", "__import__", "eval", "exec"):
            raise AssertionError(f"{path.name}:{node.lineno} uses {node.id}")


def test_the_check_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nimport datetime as dt\nx = dt.datetime.now()\nfrom billhive.sites import Site\n")
    with pytest.raises(AssertionError, match="imports os"):
        test_domain_module_imports_only_what_is_allowed(bad)
    with pytest.raises(AssertionError, match=r"calls \.now"):
        test_domain_module_reads_no_clock(bad)
