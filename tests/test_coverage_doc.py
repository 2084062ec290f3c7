"""docs/coverage.md is generated from the spec and the code; it must be current."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from billhive import coverage, spec
from billhive.http.routes import implemented_operation_ids


@pytest.fixture(scope="module")
def scan() -> coverage.EmitScan:
    """One scan of billhive's code for the tests that only read it (the code does not change meanwhile)."""
    return coverage.scan_emitted()


@pytest.fixture(scope="module")
def rendered(scan: coverage.EmitScan) -> str:
    """docs/coverage.md as `coverage.render()` makes it from that scan."""
    return coverage.render(scan)


def test_coverage_doc_is_current(rendered):
    want = rendered
    have = coverage.DOC.read_text(encoding="utf-8") if coverage.DOC.exists() else ""
    assert have == want, (f"docs/coverage.md is stale (an operation or an event type was added?): "
                          f"regenerate it with `{coverage.COMMAND}` and commit it")


def test_emitted_event_types_are_resolvable_and_known(scan):
    assert coverage.problems(scan) == []


def test_doc_lists_every_operation_and_event_type_from_the_spec(rendered):
    doc = rendered
    ops = spec.operations()
    assert len(ops) == 104 and len(coverage.spec_operations()) == len(ops)
    for op_id, op in ops.items():
        mark = "implemented" if op_id in implemented_operation_ids() else "not yet"
        assert f"| {mark} | {op.method} | `{op.path}` | `{op_id}` |" in doc
    types = coverage.spec_event_types()
    assert len(types) == 35 and set(types) == set(spec.event_types()) | set(spec.webhook_event_types())
    for t in types:
        assert f"| `{t}`" in doc


def _package(tmp_path, files: dict[str, str]):
    pkg = tmp_path / "billhive"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (pkg / "__init__.py").touch()
    return pkg


def test_scan_finds_literals_constants_imports_and_declared_types(tmp_path):
    pkg = _package(tmp_path, {
        "event_types.py": 'INVOICE_GENERATED = "invoice_generated"\n',
        "services/__init__.py": "",
        "services/customers.py": """
            CUSTOMER_CHANGED = "customer_changed"

            def create(w):
                w.emit("customer_created", {})
                w.emit(CUSTOMER_CHANGED, {})
                w.emit(event_type="customer_deleted", content={})
        """,
        "services/invoices.py": """
            from billhive.event_types import INVOICE_GENERATED
            from billhive import event_types as et
            from billhive import event_types

            def close(w, paid):
                w.emit(INVOICE_GENERATED, {})
                w.emit(et.INVOICE_GENERATED, {})
                w.emit(event_types.INVOICE_GENERATED, {})
                w.emit("payment_succeeded" if paid else "payment_failed", {})
        """,
        "services/cards.py": """
            EMITS = ("card_added", "card_updated")

            def save(w, kind):
                w.emit(f"card_{kind}", {})
        """,
        "services/broken.py": """
            def change(w, what):
                w.emit("subscription_" + what, {})
                w.emit("customer_exploded", {})
        """,
    })
    scan = coverage.scan_emitted(pkg)
    assert {t: sorted(f) for t, f in scan.emitted.items()} == {
        "customer_created": ["billhive/services/customers.py"],
        "customer_changed": ["billhive/services/customers.py"],
        "customer_deleted": ["billhive/services/customers.py"],
        "invoice_generated": ["billhive/services/invoices.py"],
        "payment_succeeded": ["billhive/services/invoices.py"],
        "payment_failed": ["billhive/services/invoices.py"],
        "card_added": ["billhive/services/cards.py"],
        "card_updated": ["billhive/services/cards.py"],
        "customer_exploded": ["billhive/services/broken.py"],
    }
    assert scan.unresolved == ["billhive/services/broken.py:3: emit('subscription_' + what, ...)"]
    issues = coverage.problems(scan)
    assert len(issues) == 2
    assert "unresolved event type" in issues[0] and "EMITS" in issues[0]
    assert "'customer_exploded'" in issues[1] and "not a Chargebee v1 event type" in issues[1]
    doc = coverage.render(scan)
    assert "| implemented | `customer_created` | `billhive/services/customers.py` |" in doc
    assert "| not yet | `subscription_created` |  |" in doc


def test_check_mode_reports_a_stale_file(tmp_path, monkeypatch, scan):
    out = tmp_path / "coverage.md"
    cmd = [sys.executable, "-m", "billhive.coverage", "--output", str(out)]
    r = subprocess.run(cmd + ["--check"], capture_output=True, text=True)  # the command itself, once
    assert r.returncode == 1 and "python -m billhive.coverage" in r.stderr
    # then its main(), in this process, three times over the module's one scan of the code (the code
    # does not change in between; the scan is what the other tests here check)
    monkeypatch.setattr(coverage, "scan_emitted", lambda: scan)
    args = ["--output", str(out)]
    assert coverage.main(args) == 0
    assert coverage.main(args + ["--check"]) == 0
    out.write_text(out.read_text() + "edited\n")
    assert coverage.main(args + ["--check"]) == 1
