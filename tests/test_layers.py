"""billhive's import graph: layers without cycles (docs/DEVELOPING.md, "Layers").

The graph is computed from the source, every import counted - at module level, inside
functions, and under ``if TYPE_CHECKING:``. It fails on any cycle, on any import of a higher
layer, and on imports inside functions (which is how cycles used to hide)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import billhive

ROOT = Path(billhive.__file__).parent
# top to bottom: a module may import its own layer (without cycles) or any layer below
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry", ("billhive.cli", "billhive.__main__", "billhive.coverage")),
    ("http", ("billhive.http",)),
    ("runners", ("billhive.worker", "billhive.delivery")),
    ("services", ("billhive.services",)),
    ("work", ("billhive.work",)),
    ("runtime", ("billhive.runtime",)),
    ("adapters", ("billhive.gateway", "billhive.sites", "billhive.webhook_endpoints")),
    ("domain", ("billhive.domain",)),
    ("store", ("billhive.store",)),
    ("base", ("billhive.util", "billhive.errors", "billhive.spec", "billhive")),
]
SIBLINGS = {frozenset({"domain", "store"})}  # the same height, neither imports the other


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _target(current: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = current.split(".")
            if MODULES[current].name != "__init__.py":
                parts = parts[:-1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name.startswith("billhive") and name != current:
            out.append(name)
    return out


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    inner: list[tuple[str, str, int]] = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[mod].update(_target(mod, node))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        inner += [(mod, t, sub.lineno) for t in _target(mod, sub)]
    return edges, inner


def layer_of(module: str) -> int:
    best, index = -1, len(LAYERS) - 1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    return index


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """billhive's import graph, parsed once for the three tests that only read it."""
    return _graph()


def test_no_import_cycles(graph):
    assert _cycles(graph[0]) == []


def test_no_import_of_a_higher_layer(graph):
    edges, _ = graph
    bad = []
    for mod, targets in edges.items():
        for t in targets:
            a, b = layer_of(mod), layer_of(t)
            sideways = a != b and frozenset({LAYERS[a][0], LAYERS[b][0]}) in SIBLINGS
            if b < a or sideways:
                bad.append(f"{mod} ({LAYERS[a][0]}) imports {t} ({LAYERS[b][0]})")
    assert bad == []


def test_no_imports_inside_functions(graph):
    _, inner = graph
    assert [f"{m}:{line} imports {t}" for m, t, line in inner] == []


def test_the_checks_catch_what_they_should():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("billhive.services.invoices") < layer_of("billhive.domain.closing")
    assert layer_of("billhive.http.app") < layer_of("billhive.services.invoices")
    assert layer_of("billhive.errors") == len(LAYERS) - 1


@pytest.mark.parametrize("module", ["billhive.domain.closing", "billhive.services.invoices", "billhive.work.context"])
def test_known_modules_are_found(module):
    assert module in MODULES
