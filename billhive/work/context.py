"""What every service operation receives: who is asking (Origin), on which site (Ctx), and,
inside a transaction, the unit of work (Work) with the site, its clock and the event recorder.

Service shape (one function per API operation):

    async def collect(ctx: Ctx, invoice_id: str, params: dict) -> dict:
        return await ctx.write(_close, invoice_id)      # one transaction

    def _close(w: Work, invoice_id: str) -> dict:       # load -> domain -> save -> events
        ...
        w.emit("invoice_generated", {"invoice": invoice})
        return {"invoice": invoice}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from billhive import sites
from billhive.errors import InvalidState
from billhive.store.db import Tx
from billhive.util import failpoints
from billhive.work import outbox
from billhive.work.origin import SCHEDULER, SYSTEM, Origin

__all__ = ["SCHEDULER", "SYSTEM", "Claim", "Ctx", "Grouped", "Origin", "Work", "site_first"]

if TYPE_CHECKING:
    from billhive.runtime import App

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# what an API write gets while the site's time machine travels (choice: Chargebee documents no
# code for it; invalid_state_for_request is its code for "not in this state", see docs/CHOICES.md)
TRAVELLING = ("The site's time machine is travelling: retry once GET /time_machines/delorean no longer answers "
              "time_travel_status in_progress")

# units that load the site themselves, with their first statement (``Work.adopt_site``), or else
# call ``Work.require_site`` before anything else: the write guard waits for that (``site_first``)
_SITE_FIRST: set[Callable[..., Any]] = set()


def site_first(fn: F) -> F:
    """Mark a unit whose first statement joins the site's row (``sites.COLUMNS``) into its own load
    and hands it to ``Work.adopt_site`` - or that calls ``Work.require_site`` first when that load
    finds nothing - so that ``Ctx.write`` need not load the site in a statement of its own: the
    write guard (the time machine) is checked there, before the unit has written anything."""
    _SITE_FIRST.add(fn)
    return fn


@dataclass(frozen=True)
class Grouped:
    """After-commit work that may run together with others: the scheduler hands consecutive hooks
    of the same ``runner`` and ``key`` (in a batch of jobs) to one ``runner(items)`` call, e.g.
    every renewal charge of a batch settled in one transaction (payments.charge_and_settle_all).
    Alone (``Ctx.write``) it is ``runner([item])``."""

    runner: Callable[[list], Awaitable[Any]]
    key: Any
    item: Any

    def __call__(self) -> Awaitable[Any]:
        return self.runner([self.item])


class Work:
    """One transaction's context. Created inside the transaction; never outlives it.

    The site (settings, clock) is loaded when first used: many reads never need it, and on
    PostgreSQL that saves a round trip.
    """

    __slots__ = ("tx", "app", "_site", "_site_pk", "_now", "origin", "_cache", "emitted", "after", "_guard")

    def __init__(self, tx: Tx, app: App, site: sites.Site | None, origin: Origin, now: int | None = None, *,
                 site_pk: int | None = None, guard: bool = False):
        """guard: an API write, refused (TRAVELLING) when the site's time machine travels - checked
        when the site is loaded (``Ctx._unit`` loads it first, unless the unit is ``site_first``)."""
        self.tx = tx
        self.app = app
        self._site = site
        self._site_pk = site.pk if site is not None else site_pk
        self._now = now
        self.origin = origin
        self._cache: dict[str, Any] = {}
        self.emitted: list[dict] = []
        self.after: list[Callable[[], Awaitable[Any]]] = []
        self._guard = guard

    @property
    def site(self) -> sites.Site:
        if self._site is None:
            self.adopt_site(sites.load(self.tx, self._site_pk))  # type: ignore[arg-type]
        return self._site  # type: ignore[return-value]

    def require_site(self) -> sites.Site:
        """Load the site now (a ``site_first`` unit whose joined first load found nothing)."""
        return self.site

    def adopt_site(self, site: sites.Site) -> None:
        """The site as this transaction loaded it (``sites.COLUMNS`` joined into a ``site_first``
        unit's first statement, which saves a statement); the write guard is checked here."""
        if self._site is not None:
            return
        if self._guard and site.tm_status == "in_progress":
            raise InvalidState(TRAVELLING)
        self._site = site

    @property
    def now(self) -> int:
        """The site clock (the time machine's time on test sites that use it)."""
        if self._now is None:
            self._now = self.site.now(self.app.wall)
        return self._now

    @property
    def site_id(self) -> int:
        return self._site_pk  # type: ignore[return-value]

    def cached(self, key: str, load: Callable[[], T]) -> T:
        """Per-transaction memo (e.g. the site's webhook endpoints)."""
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def forget(self, prefix: str) -> None:
        """Drop the memos whose key starts with ``prefix`` (after a write that changes them)."""
        for key in [k for k in self._cache if k.startswith(prefix)]:
            del self._cache[key]

    def after_commit(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Run ``await fn()`` once this transaction is durable (e.g. call the payment gateway).

        If the process dies before it runs, the committed state must be enough to finish the
        work later (e.g. an ``in_progress`` transaction that recovery settles)."""
        self.after.append(fn)

    def after_commit_grouped(self, runner: Callable[[list], Awaitable[Any]], key: Any, item: Any) -> None:
        """``after_commit`` of work that may be grouped with the same runner's (``Grouped``)."""
        self.after.append(Grouped(runner, key, item))

    def emit(self, event_type: str, content: dict, *, held: bool = False) -> dict:
        """Record an event in this transaction (the outbox); returns the event as the API shows it.
        ``held``: delivered once the charge of its invoice settles (``outbox.record``)."""
        event = outbox.record(self.tx, self.site, self.origin, self.now, event_type, content, held=held)
        self.emitted.append(event)
        return event


class Claim(Protocol):
    """A request's chargebee-idempotency-key claim (billhive.http.idempotency.Claim)."""

    committed: bool  # the operation's first write is durable
    resumed: bytes | None  # an interrupted earlier attempt committed the first write already

    def journal(self, tx: Tx, fn: Callable, result: Any) -> None: ...

    def replay(self, fn: Callable) -> Any: ...


@dataclass
class Ctx:
    """A request's (or a scheduler run's) handle on one site."""

    app: App
    site_id: int
    origin: Origin = field(default_factory=Origin)
    claim: Claim | None = None  # set for a POST with chargebee-idempotency-key
    # an API request's writes are refused while the site's time machine travels (the
    # traveller's own jobs run as the scheduler); the time machine's operations say True
    while_travelling: bool = False

    def _unit(self, fn: Callable[..., T], args: tuple, now: int | None,
              claim: Claim | None = None, write: bool = False) -> Callable[[Tx], tuple[T, list]]:
        app, site_id, origin = self.app, self.site_id, self.origin
        guard = write and origin.source == "api" and not self.while_travelling

        def unit(tx: Tx) -> tuple[T, list]:
            w = Work(tx, app, None, origin, now, site_pk=site_id, guard=guard)
            if guard and fn not in _SITE_FIRST:
                w.require_site()  # the guard, before anything else
            result = fn(w, *args)
            if claim is not None:
                claim.journal(tx, fn, result)  # in the same transaction: committed means journaled
            return result, w.after
        return unit

    async def write(self, fn: Callable[..., T], *args: Any, now: int | None = None, lane: bool = False) -> T:
        """Run fn(work, *args) in one durable write transaction, then its after-commit work.
        lane: fn takes an invoice number (see Database.write).

        Under an idempotency key the operation's first write is its commit point: it records
        the claim's outcome in its own transaction, and a retry resuming an interrupted attempt
        gets that write's journaled result instead of running it again (its after-commit work
        is not repeated either: committed state must be enough to finish it, see after_commit).
        Later writes of the operation run on a retry again, so they must be safe to repeat
        (settling a recorded charge is). See billhive/http/idempotency.py."""
        claim = self.claim
        key: bool | int = self.site_id if lane else False  # the site's own lane (its number sequence)
        if claim is not None and not claim.committed:
            if claim.resumed is not None:
                return claim.replay(fn)
            result, after = await self.app.db.write(self._unit(fn, args, now, claim, write=True), lane=key)
            claim.committed = True
            failpoints.hit("idempotency.committed")
        else:
            result, after = await self.app.db.write(self._unit(fn, args, now, write=True), lane=key)
        for hook in after:
            await hook()
        return result

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return (await self.app.db.read(self._unit(fn, args, None)))[0]

    def write_sync(self, fn: Callable[..., T], *args: Any, now: int | None = None) -> T:
        """Synchronous write for tests and tools; refuses units that need after-commit work."""
        result, after = self.app.db.write_sync(self._unit(fn, args, now, write=True))
        if after:
            raise RuntimeError("this unit needs after-commit work: use `await ctx.write(...)`")
        return result

    def read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self.app.db.read_sync(self._unit(fn, args, None))[0]
