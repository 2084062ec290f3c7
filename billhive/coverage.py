"""How much of the Chargebee API v1 billhive covers: ``docs/coverage.md``, generated from the spec.

    python -m billhive.coverage            rewrite docs/coverage.md
    python -m billhive.coverage --check    exit 1 if docs/coverage.md is not current

- Operations: every operation of ``billhive/spec/openapi.json``; implemented = in ``ROUTES``.
- Event types: ``components.schemas.Event.properties.event_type.enum`` together with the
  spec's ``webhooks``; implemented = emitted somewhere under ``billhive/``. That is found by
  reading the code (an AST scan of ``*.emit(<event type>, ...)`` calls), not by running it:
  the event type must be a string literal, a conditional of literals, or a module-level
  string constant (``CUSTOMER_CREATED = "customer_created"``, also imported from another
  billhive module). A module that emits computed types lists them in a module-level
  ``EMITS = ("...", ...)`` tuple. Anything else is reported as unresolved, and so is an
  emitted type the spec does not know, and the command fails.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from billhive import spec
from billhive.http.routes import extension_routes, implemented_operation_ids

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
DOC = ROOT / "docs" / "coverage.md"
COMMAND = "python -m billhive.coverage"
DECLARED = "EMITS"  # module-level tuple of event types a module emits by computed name


# ---- what the code emits -------------------------------------------------------------------

@dataclass
class EmitScan:
    emitted: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # type -> files
    unresolved: list[str] = field(default_factory=list)  # "file:line: emit(<expr>)"


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _strings(node: ast.AST) -> tuple[str, ...] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        out: list[str] = []
        for elt in node.elts:
            got = _strings(elt)
            if got is None:
                return None
            out.extend(got)
        return tuple(out)
    return None


class _Module:
    def __init__(self, path: Path, root: Path):
        self.path = path
        self.rel = path.relative_to(root).as_posix()
        self.name = _module_name(path, root)
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.constants: dict[str, tuple[str, ...]] = {}
        self.imported: dict[str, tuple[str, str]] = {}  # local name -> (module, attribute)
        self.modules: dict[str, str] = {}  # local name -> module
        for node in self.tree.body:
            targets: list[ast.expr] = []
            value = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            for t in targets:
                got = _strings(value) if value is not None else None
                if isinstance(t, ast.Name) and got is not None:
                    self.constants[t.id] = got
        for found in ast.walk(self.tree):
            if isinstance(found, ast.ImportFrom) and found.module and found.level == 0:
                for a in found.names:
                    local = a.asname or a.name
                    self.imported[local] = (found.module, a.name)
                    self.modules[local] = f"{found.module}.{a.name}"  # `from billhive import x` (a module)
            elif isinstance(found, ast.Import):
                for a in found.names:
                    if a.asname:
                        self.modules[a.asname] = a.name


def scan_emitted(package: Path = PACKAGE) -> EmitScan:
    modules = {m.name: m for m in (_Module(p, package.parent) for p in sorted(package.rglob("*.py")))}
    scan = EmitScan()

    def const(module: str, name: str, depth: int = 0) -> tuple[str, ...] | None:
        m = modules.get(module)
        if m is None or depth > 10:  # not billhive's, or an import cycle
            return None
        if name in m.constants:
            return m.constants[name]
        if name in m.imported:
            return const(*m.imported[name], depth + 1)
        return None

    def resolve(m: _Module, node: ast.expr) -> tuple[str, ...] | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return (node.value,)
        if isinstance(node, ast.IfExp):
            a, b = resolve(m, node.body), resolve(m, node.orelse)
            return a + b if a is not None and b is not None else None
        if isinstance(node, ast.Name):
            got = m.constants.get(node.id)
            if got is None and node.id in m.imported:
                got = const(*m.imported[node.id])
            return got if got is not None and len(got) == 1 else None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = m.modules.get(node.value.id) or (node.value.id if node.value.id in modules else None)
            got = const(module, node.attr) if module else None
            return got if got is not None and len(got) == 1 else None
        return None

    for m in modules.values():
        rel = m.rel
        declared = m.constants.get(DECLARED)
        for t in declared or ():
            scan.emitted[t].add(rel)
        for node in ast.walk(m.tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name != "emit":
                continue
            arg = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "event_type"), None)
            got = resolve(m, arg) if arg is not None else None
            if got is None:
                if declared is None:
                    expr = ast.unparse(arg) if arg is not None else ""
                    scan.unresolved.append(f"{rel}:{node.lineno}: emit({expr}, ...)")
                continue
            for t in got:
                scan.emitted[t].add(rel)
    return scan


# ---- the document ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    group: str
    method: str
    path: str
    operation_id: str
    summary: str


def spec_operations() -> list[Op]:
    ops = []
    for path, item in spec.raw()["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and "operationId" in op:
                ops.append(Op(path.strip("/").split("/")[0], method.upper(), path, op["operationId"],
                              " ".join(str(op.get("summary", "")).split())))
    return sorted(ops, key=lambda o: (o.group, o.path, o.method != "GET", o.method))


def spec_event_types() -> list[str]:
    """The Event enum in the spec's order, then any webhook the enum lacks."""
    enum = list(spec.event_types())
    return enum + [t for t in spec.webhook_event_types() if t not in enum]


def _mark(done: bool) -> str:
    return "implemented" if done else "not yet"


def render(scan: EmitScan | None = None) -> str:
    scan = scan or scan_emitted()
    implemented = implemented_operation_ids()
    ops = spec_operations()
    types = spec_event_types()
    enum, hooks = set(spec.event_types()), set(spec.webhook_event_types())
    n_ops = sum(o.operation_id in implemented for o in ops)
    n_types = sum(t in scan.emitted for t in types)
    groups: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        groups[o.group].append(o)

    out = [
        "# Chargebee API v1 coverage",
        "",
        f"Generated by `{COMMAND}` from `billhive/spec/openapi.json`; do not edit by hand.",
        "An operation is *implemented* when it is in `ROUTES` (`billhive/http/routes.py`); an event type when",
        "some code under `billhive/` emits it (`w.emit(\"<event type>\", ...)`, found by reading the source).",
        f"`tests/test_coverage_doc.py` fails when this file is stale: run `{COMMAND}`.",
        "",
        f"**Operations: {n_ops} of {len(ops)} implemented. Event types: {n_types} of {len(types)} emitted.**",
        "",
        "## Operations",
        "",
        "| resource | implemented |",
        "|---|---|",
    ]
    for g, items in groups.items():
        out.append(f"| [{g}](#{g}) | {sum(o.operation_id in implemented for o in items)} "
                   f"of {len(items)} |")
    for g, items in groups.items():
        out += ["", f"### {g}", "", "| status | method | path | operationId | summary |", "|---|---|---|---|---|"]
        for o in items:
            out.append(f"| {_mark(o.operation_id in implemented)} | {o.method} | `{o.path}` | `{o.operation_id}` "
                       f"| {o.summary} |")
    out += ["", "## Event types", "",
            "From `components.schemas.Event.properties.event_type.enum` and `webhooks`, in the spec's order.", "",
            "| status | event type | emitted in |", "|---|---|---|"]
    for t in types:
        where = ", ".join(f"`{f}`" for f in sorted(scan.emitted.get(t, ())))
        note = "" if t in enum and t in hooks else (" (not in `webhooks`)" if t in enum else " (not in the enum)")
        out.append(f"| {_mark(t in scan.emitted)} | `{t}`{note} | {where} |")
    extras = extension_routes()
    if extras:
        out += ["", "## Beyond v1", "",
                "Extensions billhive serves (see the README), documented in its `/openapi.json` "
                "(`billhive/spec/extensions.py`).", "",
                "| method | path | operationId |", "|---|---|---|"]
        for r in sorted(extras, key=lambda r: (r.op.path, r.op.method)):
            out.append(f"| {r.op.method} | `{r.op.path}` | `{r.op.operation_id}` |")
    return "\n".join(out) + "\n"


def problems(scan: EmitScan) -> list[str]:
    """What keeps the event-type column from being trustworthy."""
    known = set(spec_event_types())
    out = [f"unresolved event type: {u} - use a literal or a module-level constant, or list the types "
           f"in a module-level {DECLARED} tuple" for u in scan.unresolved]
    for t in sorted(set(scan.emitted) - known):
        files = ", ".join(sorted(scan.emitted[t]))
        out.append(f"event type {t!r} (emitted in {files}) is not a Chargebee v1 event type")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description="Write docs/coverage.md from the spec.")
    p.add_argument("--check", action="store_true", help="exit 1 if the file is not current; write nothing")
    p.add_argument("--output", type=Path, default=DOC)
    args = p.parse_args(argv)
    scan = scan_emitted()
    text = render(scan)
    issues = problems(scan)
    for issue in issues:
        print(f"billhive.coverage: {issue}", file=sys.stderr)
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"billhive.coverage: {args.output} is stale; regenerate it with `{COMMAND}`", file=sys.stderr)
            return 1
        return 1 if issues else 0
    if current != text:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
