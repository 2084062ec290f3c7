"""What an operator watches, read from the store: per site, deliveries pending and failed,
the lag of the oldest due job, the time machine, and the overview the console shows (invoices
due, failed payments, dunning in progress). Reads only; every count uses an index on
``(site_id, status, ...)`` or the partial due/failed delivery indexes (see README, "Operating
billhive")."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from billhive import sites
from billhive.runtime import App
from billhive.store import schema as S
from billhive.store.db import Tx
from billhive.util.jsonutil import loads

PENDING = ("scheduled", "re_scheduled")


@dataclass
class SiteHealth:
    """One site's numbers for /metrics and the console overview."""

    site: str
    webhooks_pending: int = 0
    webhooks_failed: int = 0
    emails_pending: int = 0
    emails_failed: int = 0
    job_lag_seconds: int = 0  # site time since the oldest job fell due (0: nothing overdue)
    time_travel_status: str = "not_enabled"
    extra: dict[str, int] = field(default_factory=dict)  # overview only: invoices due, failed payments, dunning


async def all_sites(app: App) -> list[SiteHealth]:
    """Every site's delivery backlog, job lag and time machine status: one statement, whose
    per-site figures are index probes (see _figures), so a scrape stays cheap with many sites."""
    def run(tx: Tx) -> list[SiteHealth]:
        figures = {row[0]: row[1:] for row in tx.all(_figures())}
        return [_health(s, s.now(app.wall), figures.get(s.pk, ())) for s in sites.all_sites(tx)]
    return await app.db.read(run)


async def overview(app: App, site_pk: int) -> SiteHealth:
    """The console's site overview: site_health and the billing counts."""
    def run(tx: Tx) -> SiteHealth:
        site = sites.load(tx, site_pk)
        out = site_health(tx, site, site.now(app.wall))
        out.extra = {
            "invoices_payment_due": _count(tx, S.invoices, site_pk, S.invoices.c.status == "payment_due"),
            "invoices_not_paid": _count(tx, S.invoices, site_pk, S.invoices.c.status == "not_paid"),
            "dunning_in_progress": _count(tx, S.invoices, site_pk, S.invoices.c.status == "payment_due",
                                          S.invoices.c.dunning_started_at.is_not(None)),
            "failed_payments": _count(tx, S.transactions, site_pk, S.transactions.c.status == "failure"),
        }
        return out
    return await app.db.read(run)


def site_health(tx: Tx, site: sites.Site, now: int) -> SiteHealth:
    row = tx.one(_figures(site.pk))
    return _health(site, now, row[1:] if row else ())


def _figures(site_pk: int | None = None):
    """Per site: webhooks pending and failed, emails pending and failed, the oldest job's due
    time. Correlated subqueries, each answered from the partial due/failed delivery indexes or
    ix_jobs_site_due, rather than one query per site and figure."""
    wd, ed, jobs, s = S.webhook_deliveries, S.email_deliveries, S.jobs, S.sites

    def count(table, *where):
        return select(func.count()).select_from(table).where(table.c.site_id == s.c.pk, *where).scalar_subquery()

    query = select(s.c.pk,
                   count(wd, wd.c.status.in_(PENDING)), count(wd, wd.c.status == "failed"),
                   count(ed, ed.c.status.in_(PENDING)), count(ed, ed.c.status == "failed"),
                   select(func.min(jobs.c.due_at)).where(jobs.c.site_id == s.c.pk).scalar_subquery())
    return query if site_pk is None else query.where(s.c.pk == site_pk)


def _health(site: sites.Site, now: int, figures) -> SiteHealth:
    wp, wf, ep, ef, oldest = figures or (0, 0, 0, 0, None)
    return SiteHealth(site=site.name, webhooks_pending=int(wp or 0), webhooks_failed=int(wf or 0),
                      emails_pending=int(ep or 0), emails_failed=int(ef or 0),
                      job_lag_seconds=max(0, now - oldest) if oldest is not None else 0,
                      time_travel_status=site.tm_status or "not_enabled")


def _count(tx: Tx, table, site_pk: int, *where) -> int:
    return int(tx.scalar(select(func.count()).select_from(table).where(table.c.site_id == site_pk, *where)) or 0)


async def describe_site(app: App, site_pk: int) -> dict:
    """A site's settings, keys (hints only) and webhook endpoints (billhive.sites.describe)."""
    return await app.db.read(lambda tx: sites.describe(tx, sites.load(tx, site_pk)))


async def event_deliveries(app: App, site_pk: int, event_id: str) -> dict[str, list[dict]]:
    """An event's webhook and email deliveries, each with its attempts (time, status, duration,
    error), oldest first."""
    def run(tx: Tx) -> dict[str, list[dict]]:
        return {"webhooks": _deliveries(tx, site_pk, event_id, S.webhook_deliveries, S.webhook_attempts,
                                        S.webhook_deliveries.c.endpoint_id),
                "emails": _deliveries(tx, site_pk, event_id, S.email_deliveries, S.email_attempts,
                                      S.email_deliveries.c.recipient)}
    return await app.db.read(run)


async def credit_ledger(app: App, site_pk: int, customer_id: str, limit: int = 100) -> list[dict]:
    """A customer's promotional, refundable and excess credit movements, newest first."""
    t = S.credit_ledger
    cols = (t.c.kind, t.c.amount, t.c.balance_after, t.c.reason, t.c.description, t.c.reference_type,
            t.c.reference_id, t.c.source, t.c.user, t.c.created_at)

    def run(tx: Tx) -> list[dict]:
        rows = tx.all(select(*cols).where(t.c.site_id == site_pk, t.c.customer_id == customer_id)
                      .order_by(t.c.pk.desc()).limit(limit))
        return [dict(zip([c.name for c in cols], r)) for r in rows]
    return await app.db.read(run)


def _deliveries(tx: Tx, site_pk: int, event_id: str, deliveries, attempts, target) -> list[dict]:
    d, a = deliveries, attempts
    rows = tx.all(select(d.c.pk, target, d.c.status, d.c.attempts, d.c.next_attempt_at, d.c.last_status_code,
                         d.c.last_error).where(d.c.site_id == site_pk, d.c.event_id == event_id).order_by(d.c.pk))
    out = []
    for pk, to, status, n, next_at, code, error in rows:
        tries = tx.all(select(a.c.attempt, a.c.attempted_at, a.c.status_code, a.c.error, a.c.duration_ms)
                       .where(a.c.site_id == site_pk, a.c.delivery_pk == pk).order_by(a.c.attempt))
        out.append({"to": to, "status": status, "attempts": n, "next_attempt_at": next_at, "last_status_code": code,
                    "last_error": error,
                    "tries": [{"attempt": t[0], "at": t[1], "status_code": t[2], "error": t[3], "duration_ms": t[4]}
                              for t in tries]})
    return out


async def search_customers(app: App, site_pk: int, q: str, limit: int = 25) -> list[dict]:
    """Customers whose id or email is ``q`` or whose id, email, first or last name starts with it
    (case-sensitive), as the API shows them: exact matches first, then prefixes, each by its index
    (``(site_id, column, pk)``), so a search costs a few index ranges however many customers the
    site has."""
    t = S.customers
    # every string that starts with q sorts in [q, upper) in code-point order (SQLite; PostgreSQL in
    # the C / C.UTF-8 collation; a linguistic collation may order otherwise and miss prefixes)
    upper = q + "\U0010ffff"

    def run(tx: Tx) -> list[dict]:
        found: dict[str, str] = {}
        searches = [(t.c.id, True), (t.c.email, True), (t.c.id, False), (t.c.email, False),
                    (t.c.first_name, False), (t.c.last_name, False)]
        for col, exact in searches:
            cond = col == q if exact else (col >= q) & (col < upper)
            for cid, data in tx.all(select(t.c.id, t.c.data).where(t.c.site_id == site_pk, cond)
                                    .order_by(col, t.c.pk).limit(limit)):
                found.setdefault(cid, data)
            if len(found) >= limit:
                break
        return [loads(d) for d in list(found.values())[:limit]]
    return await app.db.read(run)
