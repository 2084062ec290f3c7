"""domain/ is pure: no database, HTTP, clock or network imports (STYLE.md, rule 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import billhive.domain

FORBIDDEN = ("sqlalchemy", "sqlite3", "psycopg", "starlette", "uvicorn", "httpx", "time", "datetime.datetime.now",
             "billhive.store", "billhive.http", "billhive.services", "billhive.gateway", "socket", "asyncio")


def test_domain_imports_nothing_impure():
    root = Path(billhive.domain.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), f"{path.name}: {name}"
