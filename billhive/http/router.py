"""Path matching for the API: a segment trie built from the spec's path templates.

A literal segment always wins over a parameter (``/invoices/charge`` before
``/invoices/{invoice-id}``). Matching costs one dict lookup per segment, whatever the
number of routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote


@dataclass
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    routes: dict[str, Any] = field(default_factory=dict)  # method -> route


class Router:
    def __init__(self) -> None:
        self.root = _Node()

    def add(self, method: str, template: str, route: Any) -> None:
        node = self.root
        for seg in template.strip("/").split("/"):
            if seg.startswith("{") and seg.endswith("}"):
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.literal.setdefault(seg, _Node())
        if method in node.routes:
            raise ValueError(f"duplicate route {method} {template}")
        node.routes[method] = route

    def match(self, method: str, path: str) -> tuple[Any | None, list[str], bool]:
        """Returns (route, path args, path_exists). path_exists without route means 405."""
        segs = path.strip("/").split("/")
        found = self._walk(self.root, segs, 0, [])
        if found is None:
            return None, [], False
        node, args = found
        route = node.routes.get(method)
        return route, [unquote(a) for a in args], True

    def methods(self, path: str) -> list[str]:
        """The methods served at path (for a 405's ``Allow`` header); [] if the path is unknown."""
        found = self._walk(self.root, path.strip("/").split("/"), 0, [])
        return sorted(found[0].routes) if found else []

    def _walk(self, node: _Node, segs: list[str], i: int, args: list[str]) -> tuple[_Node, list[str]] | None:
        if i == len(segs):
            return (node, args) if node.routes else None
        seg = segs[i]
        child = node.literal.get(seg)
        if child is not None:
            hit = self._walk(child, segs, i + 1, args)
            if hit is not None:
                return hit
        if node.param is not None and seg:
            return self._walk(node.param, segs, i + 1, args + [seg])
        return None
