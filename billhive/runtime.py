"""The composition root: configuration, database, clock and gateways, built once at start-up
and passed to everything that needs them.

``Config`` is the one place billhive reads its environment: every field can be set as
``BILLHIVE_<FIELD NAME>`` (``BILLHIVE_UNIT_TIMEOUT=5``), parsed by the field's type; command-line
flags override it (``Config.from_env(**overrides)``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from billhive.gateway import default_gateways
from billhive.store.db import Database, StoreLimits
from billhive.util import failpoints
from billhive.util.bell import Bell

log = logging.getLogger("billhive")

DEFAULT_DATABASE_URL = "sqlite:///billhive.db"
# the Config fields that limit HTTP requests and connections (env BILLHIVE_<NAME>, serve --<name>)
HTTP_LIMITS = ("max_header_bytes", "max_body_bytes", "header_timeout", "body_timeout", "keep_alive_timeout",
               "max_connections")
# fields that must be positive when given (a zero or negative value would disable a safety bound)
_POSITIVE = {*HTTP_LIMITS, "unit_timeout", "statement_timeout", "read_threads", "recovery_interval", "cache_ttl",
             "refund_recovery_grace",
             "idempotency_stale", "time_travel_lease", "webhook_concurrency", "webhook_concurrency_per_endpoint",
             "email_concurrency", "email_concurrency_per_site", "scheduler_interval", "delivery_interval"}


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
    # HTTP limits (billhive/http/protocol.py for connections and heads, http/bodies.py for bodies);
    # each is also a `billhive serve --<name>` flag
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
    # seconds a time travel's traveller holds it without renewing its lease (after every batch of
    # jobs); a travel whose lease ran out (its process died) is taken over by another
    time_travel_lease: float = 10.0
    # store limits (see billhive.store.db): a unit of work waits at most unit_timeout for its
    # turn; a statement runs at most statement_timeout (SQLite: a unit's time in SQLite)
    unit_timeout: float = 10.0
    statement_timeout: float = 5.0
    read_threads: int = 4  # SQLite: threads serving reads
    read_nice: int = 10  # SQLite: the read threads' lower CPU priority (nice; 0: as the event loop)
    inline_read_budget: float = 0.002  # SQLite: seconds a read may run on the event loop first (0: never)
    sqlite_mmap: int = 1 << 30  # SQLite: bytes of the database file read through mmap (0: off)
    sqlite_checkpointer: bool = True  # SQLite: WAL checkpoints on their own thread (off: on commit)
    recovery_interval: float = 30.0  # seconds between passes of interrupted-payment recovery
    # a refund the gateway has no record of is failed by recovery only once it has been seen so for
    # this long (more than a gateway call may take, Stripe's 30 s): until then a live request may
    # still be asking the gateway for it, and failing it would record as failed a refund then made
    refund_recovery_grace: float = 60.0
    # the interpreter's thread switch interval: the SQLite writer thread releases the GIL for every
    # fsync and needs it back quickly (with the default 5 ms a busy event loop makes it wait)
    switch_interval: float = 0.0005
    gc_defaults: bool = False  # keep Python's default GC thresholds (serve tunes them for request churn)
    failpoints: str = ""  # crash injection for the crash tests (billhive/util/failpoints.py); never in production
    pdf_font_dir: str | None = None  # a directory of TrueType fonts for invoice PDFs (default: built in)
    # the admin API (/admin/api) and console (/admin) authenticate with this token; both are off
    # (404) when it is not set. Never a site's API key. `billhive serve --admin-token`
    admin_token: str | None = None
    # the console's read-only role: signed in with this token one can look but not change
    # (BILLHIVE_ADMIN_READONLY_TOKEN, `billhive serve --admin-readonly-token`)
    admin_readonly_token: str | None = None
    log_format: str = "text"  # text | json (billhive.util.logs); `--log-format`

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """The configuration from ``BILLHIVE_<NAME>`` variables (``environ``, default the process's),
        then ``overrides`` (command-line flags; None leaves a field as it is)."""
        environ = os.environ if environ is None else environ
        cfg = cls()
        for f in dataclasses.fields(cls):
            raw = environ.get("BILLHIVE_" + f.name.upper())
            if raw not in (None, ""):
                setattr(cfg, f.name, parse(f.name, raw))
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg

    def environ(self) -> dict[str, str]:
        """This configuration as ``BILLHIVE_<NAME>`` variables (for processes this one starts)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out["BILLHIVE_" + f.name.upper()] = str(int(value) if isinstance(value, bool) else value)
        return out

    @property
    def store_limits(self) -> StoreLimits:
        return StoreLimits(unit_timeout=self.unit_timeout, statement_timeout=self.statement_timeout,
                           read_threads=self.read_threads, read_nice=self.read_nice,
                           inline_read_budget=self.inline_read_budget, mmap_size=self.sqlite_mmap,
                           checkpointer=self.sqlite_checkpointer)

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host  # a bind-all address is no URL
        return self.public_url or f"http://{host}:{self.port}"


def parse(name: str, raw: Any) -> Any:
    """A Config field's value from text (the environment, a flag), by the field's type."""
    default = getattr(Config, name)
    kind = type(default) if default is not None else str
    if kind is bool:
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be true or false, not {raw!r}")
    if kind is str:
        return str(raw)
    what = f"a {'positive ' if name in _POSITIVE else ''}{'whole ' if kind is int else ''}number"
    try:
        value: Any = kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what}, not {raw!r}") from None
    if name in _POSITIVE and not value > 0:
        raise ValueError(f"{name} must be {what}, not {raw!r}")
    return value


def http_limit(name: str, raw: object) -> float | int:
    """One of HTTP_LIMITS parsed (from the environment or a flag): a positive number of its type."""
    value: float | int = parse(name, raw)
    return value


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
    # payment recovery: (site pk, refund id) -> wall time this process's recovery first found the
    # gateway with no record of that unsettled refund (billhive.services.payments.recover_site;
    # at most one entry per unsettled refund a pass reads, pruned as they settle)
    unanswered_refunds: dict[tuple[int, str], float] = field(default_factory=dict)
    fatal_error: str | None = None
    on_fatal: list[Callable[[str], None]] = field(default_factory=list)
    # rung once a write that recorded due webhook or email deliveries commits: the delivery loops
    # (billhive/delivery) then pass at once instead of at their next poll
    deliveries: Bell = field(default_factory=Bell)

    @classmethod
    def open(cls, config: Config, *, wall: Callable[[], float] = time.time) -> App:
        failpoints.arm(config.failpoints)
        db = Database(config.database_url, limits=config.store_limits)
        app = cls(config=config, db=db, wall=wall)
        db.on_fatal = app.fatal
        db.on_deliveries = app.deliveries.ring
        app.gateways = default_gateways(db)
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
