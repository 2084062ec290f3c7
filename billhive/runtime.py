"""The composition root: configuration, database, clock and gateways, built once at start-up
and passed to everything that needs them."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from billhive.store.db import Database, StoreLimits

log = logging.getLogger("billhive")

DEFAULT_DATABASE_URL = "sqlite:///billhive.db"


@dataclass
class Config:
    database_url: str = DEFAULT_DATABASE_URL
    domain: str = "localhost"
    host: str = "127.0.0.1"
    port: int = 8080
    background: bool = True  # run the scheduler and delivery workers inside serve
    scheduler_interval: float = 1.0
    delivery_interval: float = 0.5  # idle pause of the webhook/email delivery loops
    # a delivery claim lasts the site's timeout plus this; a worker that dies mid-delivery
    # holds its claims this much longer before another worker retries them
    delivery_lease_grace: float = 30.0
    public_url: str | None = None  # base URL for download links (PDFs); default http://host:port
    bench_ceiling: bool = False  # expose the benchmark's no-database reference route
    # store limits (see billhive.store.db): a unit of work waits at most unit_timeout for its
    # turn; a statement runs at most statement_timeout (SQLite: a unit's time in SQLite)
    unit_timeout: float = 10.0
    statement_timeout: float = 5.0
    read_threads: int = 4  # SQLite: threads serving reads
    read_nice: int = 10  # SQLite: the read threads' lower CPU priority (nice; 0: as the event loop)
    inline_read_budget: float = 0.002  # SQLite: seconds a read may run on the event loop first (0: never)
    recovery_interval: float = 30.0  # seconds between passes of interrupted-payment recovery

    @classmethod
    def from_env(cls, **overrides: object) -> "Config":
        cfg = cls(database_url=os.environ.get("BILLHIVE_DATABASE_URL", DEFAULT_DATABASE_URL))
        if os.environ.get("BILLHIVE_PUBLIC_URL"):
            cfg.public_url = os.environ["BILLHIVE_PUBLIC_URL"]
        if os.environ.get("BILLHIVE_BENCH_CEILING") == "1":
            cfg.bench_ceiling = True
        for name in ("delivery_interval", "delivery_lease_grace", "unit_timeout", "statement_timeout",
                     "inline_read_budget", "recovery_interval"):
            raw = os.environ.get("BILLHIVE_" + name.upper())
            if raw:
                setattr(cfg, name, float(raw))
        for name in ("read_threads", "read_nice"):
            raw = os.environ.get("BILLHIVE_" + name.upper())
            if raw:
                setattr(cfg, name, int(raw))
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg

    @property
    def store_limits(self) -> StoreLimits:
        return StoreLimits(unit_timeout=self.unit_timeout, statement_timeout=self.statement_timeout,
                           read_threads=self.read_threads, read_nice=self.read_nice,
                           inline_read_budget=self.inline_read_budget)

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host  # a bind-all address is no URL
        return self.public_url or f"http://{host}:{self.port}"


@dataclass
class LoopState:
    """A background loop's liveness, as /health reports it (kept by billhive.worker)."""

    name: str
    running: bool = True  # False once the loop has stopped (which makes the process exit)
    passes: int = 0
    failures: int = 0  # failed passes in a row
    last_pass_at: float | None = None  # wall time the last pass ended
    last_error: str | None = None

    def report(self, now: float) -> dict:
        return {"alive": self.running, "passes": self.passes, "failing": self.failures > 0,
                "last_error": self.last_error,
                "seconds_since_pass": None if self.last_pass_at is None else round(now - self.last_pass_at, 3)}


@dataclass
class App:
    config: Config
    db: Database
    wall: Callable[[], float] = time.time
    gateways: dict = field(default_factory=dict)
    # background work in this process: "off", "standby" (another process holds the SQLite
    # background lock), "running", "stopped" (a loop died)
    background: str = "off"
    loops: dict[str, LoopState] = field(default_factory=dict)
    fatal_error: str | None = None
    on_fatal: list[Callable[[str], None]] = field(default_factory=list)

    @classmethod
    def open(cls, config: Config, *, wall: Callable[[], float] = time.time) -> "App":
        from billhive import plugins
        from billhive.gateway import default_gateways

        plugins.load()
        db = Database(config.database_url, limits=config.store_limits)
        app = cls(config=config, db=db, wall=wall)
        db.on_fatal = app.fatal
        app.gateways = default_gateways(app)
        return app

    def fatal(self, reason: str) -> None:
        """Something this process cannot recover from (a store thread or a background loop died):
        stop serving and exit non-zero, for a supervisor to restart the process. Thread-safe."""
        if self.fatal_error is None:
            self.fatal_error = reason
            log.critical("billhive cannot go on (%s): stopping; exit status 1", reason)
            for hook in list(self.on_fatal):
                hook(reason)

    def close(self) -> None:
        for gateway in self.gateways.values():
            close = getattr(gateway, "close", None)
            if close:
                close()
        self.db.close()
