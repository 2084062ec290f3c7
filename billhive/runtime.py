"""The composition root: configuration, database, clock and gateways, built once at start-up
and passed to everything that needs them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from billhive.store.db import Database

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
    # how long a process keeps API keys and site look-ups (and a site's rate limit) cached: a
    # revoked key or a changed limit takes effect in every process within this many seconds
    cache_ttl: float = 5.0
    # a chargebee-idempotency-key claim whose request shows no sign of life for this long
    # (its process died) is taken over by a retry with the same key
    idempotency_stale: float = 120.0

    @classmethod
    def from_env(cls, **overrides: object) -> "Config":
        cfg = cls(database_url=os.environ.get("BILLHIVE_DATABASE_URL", DEFAULT_DATABASE_URL))
        if os.environ.get("BILLHIVE_PUBLIC_URL"):
            cfg.public_url = os.environ["BILLHIVE_PUBLIC_URL"]
        if os.environ.get("BILLHIVE_BENCH_CEILING") == "1":
            cfg.bench_ceiling = True
        for name in ("delivery_interval", "delivery_lease_grace", "cache_ttl", "idempotency_stale"):
            raw = os.environ.get("BILLHIVE_" + name.upper())
            if raw:
                setattr(cfg, name, float(raw))
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host  # a bind-all address is no URL
        return self.public_url or f"http://{host}:{self.port}"


@dataclass
class App:
    config: Config
    db: Database
    wall: Callable[[], float] = time.time
    gateways: dict = field(default_factory=dict)

    @classmethod
    def open(cls, config: Config, *, wall: Callable[[], float] = time.time) -> "App":
        from billhive import plugins
        from billhive.gateway import default_gateways

        plugins.load()
        db = Database(config.database_url)
        app = cls(config=config, db=db, wall=wall)
        app.gateways = default_gateways(app)
        return app

    def close(self) -> None:
        for gateway in self.gateways.values():
            close = getattr(gateway, "close", None)
            if close:
                close()
        self.db.close()
