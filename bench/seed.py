"""A fresh database per run, seeded straight through the store (bulk executemany in large
transactions): a test site with a known key, N customers with a card on file (every 5th with
refundable credits) and N pending invoices of two line items, one per customer.

The documents are the ones billhive itself writes: customers and cards shaped as
tests/support/factories.customer makes them, the card's token in the test gateway's vault
(behaviour ``success``), credits as ledger rows matching the balance, invoices built by
``services.invoicing.new_invoice(..., pending=True)``.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import bindparam, insert
from sqlalchemy.engine import make_url

from billhive import sites
from billhive.gateway.test_gateway import books_for, mask
from billhive.services import invoicing
from billhive.store import migrate, postgres
from billhive.store import schema as S
from billhive.store.db import Database, Q, StoreLimits, Tx
from billhive.store.resources import CARDS, CUSTOMERS, INVOICES
from billhive.util.ids import random_id
from billhive.work.context import Origin, Work

SITE = "bench-test"
KEY = "test_bench_0123456789abcdefghij"
KEY_NAME = "full_access_key"  # the name sites.create gives the full-access key
ORIGIN = Origin(source="api", user=KEY_NAME)
CARD_NUMBER = "4111111111111111"  # the test gateway's Visa success card
REFUNDABLE_CREDITS = 500  # every 5th customer's balance (less than any invoice: a charge still follows)
BATCH = 20_000  # customers (and invoices) per transaction

_VAULT = Q(insert(S.gateway_vault).values({c: bindparam(c) for c in
                                           ("site_id", "token", "behaviour", "brand", "last4", "created_at")}))
_LEDGER_COLS = ("site_id", "customer_id", "kind", "amount", "balance_after", "reason", "description",
                "reference_type", "reference_id", "source", "user", "created_at")
_LEDGER = Q(insert(S.credit_ledger).values({c: bindparam(c) for c in _LEDGER_COLS}))


# ---- databases --------------------------------------------------------------------------------

@dataclass
class FreshDatabase:
    store: str
    url: str
    drop: Callable[[], None] = field(repr=False)


def create_database(store: str, workdir: Path, pg_admin_url: str) -> FreshDatabase:
    if store == "sqlite":
        path = workdir / "bench.db"

        def drop_sqlite() -> None:
            for base in (path, path.with_name(path.stem + "-gateway" + path.suffix)):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{base}{suffix}").unlink(missing_ok=True)
        return FreshDatabase(store, f"sqlite:///{path}", drop_sqlite)
    u = make_url(pg_admin_url)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    _admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    return FreshDatabase(store, u.set(database=name).render_as_string(hide_password=False),
                         lambda: _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def on_fresh_postgres(name: str, pg_admin_url: str, keep: bool, fn: Callable[[str, Path], dict]) -> dict:
    """fn(url, workdir) on a fresh PostgreSQL database and work directory, both removed afterwards
    (unless ``keep``); its record gets ``wall_seconds``."""
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"billhive-bench-{name}-"))
    db = create_database("postgres", workdir, pg_admin_url)
    try:
        rec = fn(db.url, workdir)
    finally:
        if keep:
            print(f"[{name}] kept the database {db.url} and {workdir}", flush=True)
        else:
            db.drop()
            remove_dir(workdir)
    rec["wall_seconds"] = round(time.perf_counter() - started, 1)
    return rec


def _admin(url: str, sql: str) -> None:
    conn = connect(url)
    try:
        conn.execute(sql)
    finally:
        conn.close()


def connect(url: str) -> Any:
    """A plain autocommit driver connection, for the harness's own look-ups."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return sqlite3.connect(u.database, isolation_level=None, timeout=30)
    return psycopg.connect(postgres.conninfo(u), autocommit=True, connect_timeout=5)


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = connect(url)
    try:
        if not url.startswith("sqlite"):
            sql = sql.replace("?", "%s")
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


# ---- seeding ----------------------------------------------------------------------------------

@dataclass
class SeededSite:
    name: str
    site_pk: int
    key: str
    invoice_ids: list[str]  # the site's pending invoices' draft ids, shuffled


@dataclass
class Seeded:
    sites: list[SeededSite]  # the first is bench-test (the one site of a single-site run)
    insert_seconds: float  # building and inserting the rows
    finish_seconds: float  # PostgreSQL: VACUUM ANALYZE; SQLite: WAL checkpoint
    db_bytes: int | None

    @property
    def seconds(self) -> float:
        return round(self.insert_seconds + self.finish_seconds, 2)

    @property
    def site_pk(self) -> int:
        return self.sites[0].site_pk

    @property
    def key(self) -> str:
        return self.sites[0].key

    @property
    def invoice_ids(self) -> list[str]:
        return self.sites[0].invoice_ids


def site_name(k: int) -> str:
    """Site k of a seeded database: bench-test, then bench-02-test, bench-03-test, ..."""
    return SITE if k == 0 else f"bench-{k + 1:02d}-test"


def site_key(k: int) -> str:
    """Site k's full-access key (each site its own)."""
    return KEY if k == 0 else f"test_bench{k + 1:02d}_0123456789abcdefghij"


def seed(url: str, n: int, *, sites_n: int = 1, shares: list[int] | None = None,
         log: Callable[[str], None] = print, seed_value: int = 1) -> Seeded:
    """n customers with one pending invoice each, split among sites_n sites: evenly, or shares[k]
    for site k (shares must add up to n)."""
    if shares is None:
        shares = [n // sites_n + (1 if k < n % sites_n else 0) for k in range(sites_n)]
    if len(shares) != sites_n or sum(shares) != n:
        raise ValueError(f"shares {shares} do not split {n} invoices among {sites_n} sites")
    migrate.upgrade(url)
    started = time.perf_counter()
    # durability is pointless while seeding: the server later opens the file with its own settings
    # and so are the serving limits: a batch of 20,000 customers may take longer than 5 s on a busy machine
    db = Database(url, synchronous="OFF", limits=StoreLimits(unit_timeout=600, statement_timeout=600))
    books = books_for(db)  # the test gateway's books
    out: list[SeededSite] = []
    try:
        now = int(time.time())
        rng = random.Random(seed_value)
        customer_ids = _unique_ids(n, rng)  # distinct over all sites
        step = max(1, n // 10)
        pending = None  # build batch k+1 in this thread while the database inserts batch k
        first = 0
        for k, share in enumerate(shares):
            site, _ = db.write_sync(lambda tx, k=k: sites.create(tx, site_name(k), now=now, api_key=site_key(k)))
            invoice_ids: list[str] = []
            for lo in range(first, first + share, BATCH):
                hi = min(first + share, lo + BATCH)
                rows = _build(site, now, customer_ids, lo, hi)
                invoice_ids += rows.invoice_ids
                if pending is not None:
                    pending.result()
                books.write_sync(rows.insert_vault)
                pending = db.submit_write(rows.insert)
                if n >= 100_000 and (hi // step) != (lo // step):
                    log(f"  seeding: {hi:,}/{n:,} invoices built ({time.perf_counter() - started:.0f} s)")
            first += share
            rng.shuffle(invoice_ids)
            out.append(SeededSite(site.name, site.pk, site_key(k), invoice_ids))
        if pending is not None:
            pending.result()
        inserted = time.perf_counter() - started
    finally:
        if books is not db:
            books.close()
        db.close()
    t = time.perf_counter()
    _finish(url)
    finish = time.perf_counter() - t
    return Seeded(out, round(inserted, 2), round(finish, 2), database_bytes(url))


def _unique_ids(n: int, rng: random.Random) -> list[str]:
    """Customer ids shaped like the factories' (cust_ + 12 hex digits), random and distinct."""
    seen: set[str] = set()
    out = []
    while len(out) < n:
        cid = f"cust_{rng.getrandbits(48):012x}"
        if cid not in seen:
            seen.add(cid)
            out.append(cid)
    return out


@dataclass
class _Rows:
    site_pk: int
    now: int
    customers: list[dict]
    cards: list[dict]
    vault: list[dict]
    ledger: list[dict]
    invoices: list[dict]

    @property
    def invoice_ids(self) -> list[str]:
        return [inv["id"] for inv in self.invoices]

    def insert(self, tx: Tx) -> None:
        CUSTOMERS.insert_many(tx, self.site_pk, self.customers, self.now)
        CARDS.insert_many(tx, self.site_pk, self.cards, self.now)
        INVOICES.insert_many(tx, self.site_pk, self.invoices, self.now)
        tx.executemany(_LEDGER, self.ledger)

    def insert_vault(self, tx: Tx) -> None:
        """Into the test gateway's books (their own SQLite file, or tables on PostgreSQL)."""
        tx.executemany(_VAULT, self.vault)


def _build(site: sites.Site, now: int, customer_ids: list[str], lo: int, hi: int) -> _Rows:
    w = Work(None, None, site, ORIGIN, now)  # type: ignore[arg-type]  # new_invoice reads only the site
    rows = _Rows(site.pk, now, [], [], [], [], [])
    start = now - 30 * 86400
    for i in range(lo, hi):
        cid = customer_ids[i]
        token = random_id("tok_", 20)
        rows.cards.append({"object": "card", "status": "valid", "gateway": "chargebee", "reference_id": token,
                           "iin": CARD_NUMBER[:6], "last4": CARD_NUMBER[-4:], "card_type": "visa",
                           "expiry_month": 12, "expiry_year": 2099, "masked_number": mask(CARD_NUMBER),
                           "customer_id": cid})
        rows.vault.append({"site_id": site.pk, "token": token, "behaviour": "success", "brand": "visa",
                           "last4": CARD_NUMBER[-4:], "created_at": now})
        customer = {"id": cid, "object": "customer", "email": f"{cid}@example.com", "auto_collection": "on",
                    "allow_direct_debit": False, "created_at": now, "taxability": "taxable",
                    "account_credits": 0, "refundable_credits": 0, "excess_payments": 0,
                    "payment_method": {"type": "card", "gateway": "chargebee", "status": "valid",
                                       "reference_id": token}}
        if i % 5 == 0:
            customer["refundable_credits"] = REFUNDABLE_CREDITS
            rows.ledger.append({"site_id": site.pk, "customer_id": cid, "kind": "refundable",
                                "amount": REFUNDABLE_CREDITS, "balance_after": REFUNDABLE_CREDITS, "reason": "add",
                                "description": "bench seed", "reference_type": None, "reference_id": None,
                                "source": ORIGIN.source, "user": ORIGIN.user, "created_at": now})
        rows.customers.append(customer)
        items = [invoicing.line_item(date_from=start, date_to=now, unit_amount=2900, description="Basic plan",
                                     entity_type="adhoc"),
                 invoicing.line_item(date_from=now, date_to=now, unit_amount=1000 + i % 1000,
                                     description="API calls (usage)", entity_type="adhoc")]
        rows.invoices.append(invoicing.new_invoice(w, customer=customer, start_date=start, line_items=items,
                                                   recurring=True, pending=True))
    return rows


def _finish(url: str) -> None:
    """What a settled production database looks like after a bulk load: PostgreSQL vacuumed and
    analysed (autovacuum would get there, at a random moment during the run); SQLite with its
    write-ahead log checkpointed. SQLite gets no ANALYZE: billhive does not run one."""
    conn = connect(url)
    try:
        if url.startswith("sqlite"):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            conn.execute("VACUUM ANALYZE")
    finally:
        conn.close()


def database_bytes(url: str) -> int | None:
    try:
        if url.startswith("sqlite"):
            path = make_url(url).database
            return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
        return int(query(url, "SELECT pg_database_size(current_database())")[0][0])
    except Exception:  # noqa: BLE001
        return None


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
