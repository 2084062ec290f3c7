"""The composition root: configuration, database, clock and gateways, built once at start-up
and passed to everything that needs them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from billhive.gateway import default_gateways
from billhive.store.db import Database

DEFAULT_DATABASE_URL = "sqlite:///billhive.db"
# the Config fields that limit HTTP requests and connections (env BILLHIVE_<NAME>, serve --<name>)
HTTP_LIMITS = ("max_header_bytes", "max_body_bytes", "header_timeout", "body_timeout", "keep_alive_timeout",
               "max_connections")


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
    # deliveries in flight per process (billhive.delivery.lanes): over all destinations, and per
    # destination (a webhook endpoint; a site's SMTP server), so a slow one slows only itself
    webhook_concurrency: int = 128
    webhook_concurrency_per_endpoint: int = 16
    email_concurrency: int = 32
    email_concurrency_per_site: int = 8
    public_url: str | None = None  # base URL for download links (PDFs); default http://host:port
    bench_ceiling: bool = False  # expose the benchmark's no-database reference route
    # HTTP limits (billhive/http/protocol.py for connections and heads, http/bodies.py for bodies);
    # each is also BILLHIVE_<NAME> in the environment and a `billhive serve --<name>` flag
    max_header_bytes: int = 16 * 1024  # a request's line and headers; beyond: 431
    max_body_bytes: int = 1 << 20  # an API request's body; beyond: 413
    header_timeout: float = 10.0  # seconds for a request's line and headers to arrive; then closed (408)
    body_timeout: float = 30.0  # seconds for its body to arrive once the headers are in; then 408, closed
    keep_alive_timeout: float = 5.0  # an idle keep-alive connection is closed after this many seconds
    max_connections: int = 4096  # open at once (lowered to fit RLIMIT_NOFILE); beyond: 503, closed
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
        for name in ("webhook_concurrency", "webhook_concurrency_per_endpoint", "email_concurrency",
                     "email_concurrency_per_site"):
            raw = os.environ.get("BILLHIVE_" + name.upper())
            if raw:
                setattr(cfg, name, max(1, int(raw)))
        for name in HTTP_LIMITS:
            raw = os.environ.get("BILLHIVE_" + name.upper())
            if raw:
                setattr(cfg, name, http_limit(name, raw))
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host  # a bind-all address is no URL
        return self.public_url or f"http://{host}:{self.port}"


def http_limit(name: str, raw: object) -> float | int:
    """One of HTTP_LIMITS parsed (from the environment or a flag): a positive number of its type."""
    kind = type(getattr(Config, name))
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        value = 0
    if not value > 0:
        raise ValueError(f"{name} must be a positive {'whole ' if kind is int else ''}number, not {raw!r}")
    return value


@dataclass
class App:
    config: Config
    db: Database
    wall: Callable[[], float] = time.time
    gateways: dict = field(default_factory=dict)

    @classmethod
    def open(cls, config: Config, *, wall: Callable[[], float] = time.time) -> "App":
        from billhive import plugins
        plugins.load()
        db = Database(config.database_url)
        app = cls(config=config, db=db, wall=wall)
        app.gateways = default_gateways(db)
        return app

    def close(self) -> None:
        for gateway in self.gateways.values():
            close = getattr(gateway, "close", None)
            if close:
                close()
        self.db.close()
