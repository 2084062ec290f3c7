"""Modules that register scheduler job handlers or event hooks at import time.

Importing them once at start-up (App.open) makes every handler known before the
scheduler or the time machine runs.
"""

from __future__ import annotations

import importlib

MODULES: list[str] = [
    "billhive.http.routes",  # imports every service module
    "billhive.delivery.webhooks",  # delivery loops (billhive.worker.loop)
    "billhive.delivery.emails",
]


def load() -> None:
    for name in MODULES:
        importlib.import_module(name)
