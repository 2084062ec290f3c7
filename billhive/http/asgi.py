"""ASGI factory for multi-process serving (uvicorn --workers with PostgreSQL)."""

from __future__ import annotations

import os
import signal

from billhive.http import protocol
from billhive.http.app import build
from billhive.runtime import App, Config
from billhive.util import logs
from billhive.worker import run_background


def create_app():
    config = Config.from_env()  # what billhive serve --workers exported (Config.environ)
    logs.configure(config.log_format)
    protocol.configure(config)  # this worker's connection limits (uvicorn runs http.protocol's class)
    app = App.open(config)
    # a store thread or background loop died: stop this worker process (exit status 1; the
    # supervisor starts another)
    app.on_fatal.append(lambda reason: os.kill(os.getpid(), signal.SIGTERM))
    background = run_background if config.background else None
    return build(app, background=background)
