"""Non-API HTTP routes (beside /health and /openapi.json): the portal and hosted checkout pages,
downloads and metrics.

Each entry is a Starlette route factory taking the App; keep them small.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute

from billhive.http import downloads, hosted, portal
from billhive.runtime import App

FACTORIES: list[Callable[[App], list[BaseRoute]]] = [
    portal.routes,
    hosted.routes,
    downloads.routes,
]


def routes(app: App) -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for factory in FACTORIES:
        out.extend(factory(app))
    return out
