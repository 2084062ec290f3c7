"""Every table billhive keeps, declared once (SQLAlchemy Core).

Conventions:
- ``site_id`` (sites.pk) is on every row, leads every unique key and index, and every
  query filters by it (tenant isolation; the distribution column for Citus).
- Resources exposed by the API are *document tables*: the full API representation
  lives in ``data`` (JSON text, written by billhive.store.docs), and the fields that
  are looked up, filtered, sorted or guarded by conditional updates are also columns,
  derived from the document on every write so they can never disagree.
- Money is BigInteger minor units; time is BigInteger Unix seconds (site clock).
- ``pk`` is a surrogate autoincrement key giving a stable insertion order for keyset
  pagination (ids can change: a pending invoice is renumbered when it is closed).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# sqlite: INTEGER PRIMARY KEY is the rowid alias; PostgreSQL: BIGINT identity.
PK = BigInteger().with_variant(Integer(), "sqlite")


def _pk() -> Column:
    return Column("pk", PK, primary_key=True, autoincrement=True)


def doc_table(name: str, *columns: Column, indexes: tuple[tuple[str, ...], ...] = (),
              unique: tuple[tuple[str, ...], ...] = (), id_length: int = 100) -> Table:
    """A resource table: pk, site_id, id, created_at, updated_at, data + index columns."""
    t = Table(
        name,
        metadata,
        _pk(),
        Column("site_id", Integer, nullable=False),
        Column("id", String(id_length), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("updated_at", BigInteger, nullable=False),
        *columns,
        Column("data", Text, nullable=False),
        UniqueConstraint("site_id", "id"),
    )
    Index(f"ix_{name}_site_created", t.c.site_id, t.c.created_at, t.c.pk)
    Index(f"ix_{name}_site_updated", t.c.site_id, t.c.updated_at, t.c.pk)
    for cols in indexes:
        Index(f"ix_{name}_site_" + "_".join(cols), t.c.site_id, *(t.c[c] for c in cols), t.c.pk)
    for cols in unique:
        t.append_constraint(UniqueConstraint(t.c.site_id, *(t.c[c] for c in cols),
                                             name=f"uq_{name}_site_" + "_".join(cols)))
    return t


# --- sites, keys, settings ---------------------------------------------------------

sites = Table(
    "sites",
    metadata,
    _pk(),
    Column("name", String(100), nullable=False, unique=True),
    Column("is_test", Integer, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("settings", Text, nullable=False),  # JSON; see billhive.sites.SETTINGS
    Column("config_version", Integer, nullable=False, server_default="0"),  # bumped on settings/endpoint changes
    # invoice number sequence: taken inside the closing transaction (gapless)
    Column("invoice_next_number", BigInteger, nullable=False),
    # time machine (test sites): when tm_now is set the site clock is frozen there
    Column("tm_now", BigInteger, nullable=True),
    Column("tm_genesis_time", BigInteger, nullable=True),
    Column("tm_destination_time", BigInteger, nullable=True),
    Column("tm_status", String(20), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # signs the site's download links (invoice PDFs); set on first use, never shown
    Column("download_key", String(100), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex of the key
    Column("key_hint", String(20), nullable=False),  # first characters, for display
    Column("name", String(100), nullable=False),
    Column("access", String(20), nullable=False),  # full | read_only
    Column("created_at", BigInteger, nullable=False),
    Index("ix_api_keys_site", "site_id", "pk"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("id", String(40), nullable=False),
    Column("url", Text, nullable=False),
    Column("username", String(200), nullable=True),
    Column("password", String(200), nullable=True),
    Column("secret", String(200), nullable=True),
    Column("event_types", Text, nullable=True),  # JSON list; NULL = all
    Column("enabled", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # faults on purpose (admin API): JSON of the delivery modes (duplicate, out_of_order, delay
    # seconds, fail_first_n); NULL = delivered normally (billhive/domain/faults.py)
    Column("fault", Text, nullable=True),
    UniqueConstraint("site_id", "id"),
)

# faults on purpose (admin API, billhive/services/faults.py): an operation answers an error and/or
# waits, for a share of its calls or the next N; off while a site has no rule
fault_rules = Table(
    "fault_rules",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("id", String(40), nullable=False),
    Column("operation", String(120), nullable=False),  # the spec's operationId, or "*"
    Column("rule", Text, nullable=False),  # JSON: status, api_error_code, type, message, param, latency_ms...
    Column("times", Integer, nullable=True),  # applies to this many calls, then never again; NULL = no limit
    Column("calls", BigInteger, nullable=False, server_default=text("0")),  # calls counted so far (exact)
    Column("struck", BigInteger, nullable=False, server_default=text("0")),  # calls it answered
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("site_id", "id"),
)

# --- events (the outbox) -------------------------------------------------------------

events = doc_table(
    "events",
    Column("occurred_at", BigInteger, nullable=False),
    Column("event_type", String(60), nullable=False),
    Column("source", String(30), nullable=False),
    Column("webhook_status", String(20), nullable=False),
    Column("email_status", String(20), nullable=False),
    indexes=(("occurred_at",), ("event_type", "occurred_at"), ("webhook_status",)),
    id_length=40,
)

# Deliveries still to be made. The "due" indexes are partial: they hold only these rows, so
# finding due work stays cheap however many finished deliveries the tables keep.
PENDING_DELIVERY = "status IN ('scheduled', 're_scheduled')"


def _due_index(name: str, table: Table) -> Index:
    where = text(PENDING_DELIVERY)
    return Index(name, table.c.site_id, table.c.next_attempt_at, postgresql_where=where, sqlite_where=where)


def _failed_index(name: str, table: Table) -> Index:
    """Failed deliveries per site, for /metrics and the console (the rest of a site's deliveries
    grow without bound; these stay few until someone resends them)."""
    where = text("status = 'failed'")
    return Index(name, table.c.site_id, postgresql_where=where, sqlite_where=where)


webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("endpoint_id", String(40), nullable=False),
    Column("status", String(20), nullable=False),  # scheduled | re_scheduled | succeeded | failed | disabled
    Column("attempts", Integer, nullable=False),  # every attempt ever claimed (the fencing token)
    Column("round_start", Integer, nullable=False, server_default=text("0")),  # attempts before the last resend
    Column("next_attempt_at", BigInteger, nullable=True),  # site clock
    Column("claimed_until", BigInteger, nullable=True),  # wall clock lease
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("site_id", "event_id", "endpoint_id"),
)
_due_index("ix_webhook_deliveries_site_due", webhook_deliveries)
_failed_index("ix_webhook_deliveries_site_failed", webhook_deliveries)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("delivery_pk", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", BigInteger, nullable=False),  # site clock
    Column("status_code", Integer, nullable=True),  # HTTP status
    Column("error", Text, nullable=True),  # NULL = success; "in progress" while the request runs
    Column("duration_ms", Integer, nullable=True),
    Index("ix_webhook_attempts_site_delivery", "site_id", "delivery_pk", "attempt"),
)

email_deliveries = Table(
    "email_deliveries",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("template", String(60), nullable=False),
    Column("recipient", String(200), nullable=False),
    Column("status", String(20), nullable=False),  # scheduled | re_scheduled | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("round_start", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", BigInteger, nullable=True),
    Column("claimed_until", BigInteger, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("site_id", "event_id", "template", "recipient"),
)
_due_index("ix_email_deliveries_site_due", email_deliveries)
_failed_index("ix_email_deliveries_site_failed", email_deliveries)

email_attempts = Table(
    "email_attempts",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("delivery_pk", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", BigInteger, nullable=False),  # site clock
    Column("status_code", Integer, nullable=True),  # SMTP reply code
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Index("ix_email_attempts_site_delivery", "site_id", "delivery_pk", "attempt"),
)

# --- scheduler: due work on the site clock ---------------------------------------------

jobs = Table(
    "jobs",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("key", String(200), nullable=False),  # e.g. "renewal:sub_123"; one live job per key
    Column("kind", String(60), nullable=False),
    Column("ref_id", String(100), nullable=False),
    Column("due_at", BigInteger, nullable=False),  # site clock
    Column("payload", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("claimed_until", BigInteger, nullable=True),  # wall clock lease
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("site_id", "key"),
    Index("ix_jobs_site_due", "site_id", "due_at", "pk"),
)

# --- request idempotency (chargebee-idempotency-key) -------------------------------------

# the time machine's travel in progress on a test site (billhive/services/time_machines.py): its
# progress and failure as GET /time_machines/delorean shows them, and the lease of the process
# advancing it (wall clock) - a travel whose process died is resumed once its lease has expired
time_travels = Table(
    "time_travels",
    metadata,
    Column("site_id", Integer, primary_key=True, autoincrement=False),
    Column("origin_time", BigInteger, nullable=False),  # the site clock when the travel began
    Column("started_at", BigInteger, nullable=False),  # wall clock
    Column("jobs_done", Integer, nullable=False),
    Column("failure_code", String(100), nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("error_json", Text, nullable=True),
    Column("lease_owner", String(40), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("key", String(100), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(20), nullable=False),  # running | done
    Column("status_code", Integer, nullable=True),
    Column("response", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),  # wall clock
    Column("expires_at", BigInteger, nullable=False),
    # the running request's claim token (NULL: nobody runs it - resumable at once) and when it
    # last showed it is alive (wall clock)
    Column("owner", String(32), nullable=True),
    Column("heartbeat_at", BigInteger, nullable=True),
    # written in the operation's own first committing transaction: what that write returned
    # (pickled), so a retry after a crash resumes from it instead of running it again
    Column("committed", LargeBinary, nullable=True),
    UniqueConstraint("site_id", "key"),
    Index("ix_idempotency_keys_expires", "expires_at"),
)

# --- API rate limits (site setting rate_limit_per_minute; PostgreSQL keeps the count here) ---
# One row per limited site: requests admitted in the current minute (window_start, wall clock)
# and in the minute before it (the sliding-window estimate weighs the two).

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("site_id", Integer, primary_key=True, autoincrement=False),
    Column("window_start", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("prev_count", Integer, nullable=False),
)

# --- catalog ----------------------------------------------------------------------------
# in_use: set once a subscription or invoice links the plan/addon (services.plans.use_plan);
# Chargebee then allows only a few fields to change. It is not a field of the document.

plans = doc_table(
    "plans",
    Column("status", String(20), nullable=False),
    Column("name", String(100), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("period", Integer, nullable=False),
    Column("period_unit", String(20), nullable=False),
    Column("trial_period", Integer, nullable=True),
    Column("charge_model", String(20), nullable=False),
    Column("in_use", Integer, nullable=False),
    indexes=(("status",), ("name",), ("price",), ("period_unit",)),
)
addons = doc_table(
    "addons",
    Column("status", String(20), nullable=False),
    Column("name", String(100), nullable=False),
    Column("type", String(20), nullable=False),
    Column("charge_type", String(20), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("period_unit", String(20), nullable=False),
    Column("in_use", Integer, nullable=False),
    indexes=(("status",), ("name",), ("charge_type",), ("price",)),
)
coupons = doc_table(  # status: as stored; an active coupon past valid_till reads as expired
    "coupons",
    Column("status", String(20), nullable=False),
    Column("name", String(50), nullable=False),
    Column("discount_type", String(20), nullable=False),
    Column("duration_type", String(20), nullable=False),
    Column("apply_on", String(30), nullable=False),
    Column("valid_till", BigInteger, nullable=True),
    indexes=(("status",), ("name",), ("discount_type",), ("duration_type",), ("valid_till",)),
)
coupon_codes = doc_table(  # id = the code; status (enabled | redeemed | archived) is not in the v1 document
    "coupon_codes",
    Column("coupon_id", String(100), nullable=False),
    Column("coupon_set_name", String(50), nullable=False),
    Column("status", String(20), nullable=False),
    indexes=(("coupon_id",), ("coupon_set_name",)),
)

# --- customers, cards, credits ------------------------------------------------------------

customers = doc_table(
    "customers",
    Column("email", String(100), nullable=True),
    Column("first_name", String(150), nullable=True),
    Column("last_name", String(150), nullable=True),
    Column("company", String(250), nullable=True),
    Column("auto_collection", String(10), nullable=False),
    # email, first and last name: the admin console's customer search (prefix ranges on these)
    indexes=(("email",), ("first_name",), ("last_name",)),
)

cards = doc_table(  # id = customer id (one card per customer in v1)
    "cards",
    Column("status", String(20), nullable=False),
    Column("expires_at", BigInteger, nullable=True),  # end of expiry month (UTC)
)

credit_ledger = Table(
    "credit_ledger",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("customer_id", String(100), nullable=False),
    Column("kind", String(20), nullable=False),  # promotional | refundable | excess
    Column("amount", BigInteger, nullable=False),  # signed: + credit, - debit
    Column("balance_after", BigInteger, nullable=False),
    Column("reason", String(40), nullable=False),  # add | deduct | set | applied | released | overpayment | refund
    Column("description", Text, nullable=True),
    Column("reference_type", String(40), nullable=True),
    Column("reference_id", String(100), nullable=True),
    Column("source", String(30), nullable=False),
    Column("user", String(150), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_credit_ledger_site_customer", "site_id", "customer_id", "kind", "pk"),
)

payment_intents = doc_table(
    "payment_intents",
    Column("customer_id", String(100), nullable=False),
    Column("status", String(30), nullable=False),
    # JSON, not part of the resource: whether customer_id was given (the intent is then that
    # customer's only) and, once authorized, the stored card's details (never the number)
    Column("internal", Text, nullable=True),
    indexes=(("customer_id",),),
)

addresses = doc_table(  # id = resources.address_row_id(doc): a digest of (subscription_id, label)
    "addresses",
    Column("subscription_id", String(100), nullable=False),
    Column("label", String(50), nullable=False),
    indexes=(("subscription_id",),),
)

# --- subscriptions, invoices, payments -------------------------------------------------------

subscriptions = doc_table(
    "subscriptions",
    Column("customer_id", String(100), nullable=False),
    Column("plan_id", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("current_term_end", BigInteger, nullable=True),
    # JSON, not part of the resource: billing anchor, scheduled changes and cancellation,
    # charges waiting for the term end (domain.subscriptions.State)
    Column("internal", Text, nullable=True),
    indexes=(("customer_id", "created_at"), ("status", "created_at"), ("plan_id",), ("current_term_end",)),
)

invoices = doc_table(
    "invoices",
    Column("customer_id", String(100), nullable=False),
    Column("subscription_id", String(100), nullable=True),
    Column("status", String(20), nullable=False),
    Column("date", BigInteger, nullable=True),  # start_date (invoice date)
    Column("paid_on", BigInteger, nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("amount_due", BigInteger, nullable=False),
    Column("next_retry", BigInteger, nullable=True),
    Column("draft_id", String(100), nullable=True),  # the draft_inv_ id a closed invoice had while pending
    Column("dunning_attempts", Integer, nullable=True),  # failed automatic charges so far
    Column("dunning_started_at", BigInteger, nullable=True),  # site time of the first failure
    # lists filter by one column and page newest first: (site_id, column, created_at, pk)
    indexes=(("customer_id", "created_at"), ("subscription_id", "created_at"), ("status", "created_at"),
             ("paid_on",), ("draft_id",)),
)

transactions = doc_table(
    "transactions",
    Column("customer_id", String(100), nullable=True),
    Column("subscription_id", String(100), nullable=True),
    Column("type", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("date", BigInteger, nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("unused_amount", BigInteger, nullable=False),  # excess payment still available
    Column("idempotency_key", String(100), nullable=True),  # gateway idempotency key
    Column("purpose", String(20), nullable=True),  # close | collect_payment | dunning (settlement needs it)
    # transaction lists page by date, newest first
    indexes=(("date",), ("customer_id", "date"), ("subscription_id", "date"), ("status", "date")),
)

invoice_transactions = Table(  # which transactions touched which invoices
    "invoice_transactions",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("invoice_id", String(100), nullable=False),
    Column("txn_id", String(100), nullable=False),
    Column("applied_amount", BigInteger, nullable=False),
    Column("applied_at", BigInteger, nullable=False),
    UniqueConstraint("site_id", "invoice_id", "txn_id"),
    Index("ix_invoice_transactions_site_txn", "site_id", "txn_id"),
)

orders = doc_table(
    "orders",
    Column("invoice_id", String(100), nullable=True),
    Column("status", String(20), nullable=False),
    indexes=(("invoice_id",),),
)

# --- the rest of the v1 surface ------------------------------------------------------------

comments = doc_table(
    "comments",
    Column("entity_type", String(30), nullable=False),
    Column("entity_id", String(100), nullable=False),
    indexes=(("entity_type", "entity_id"),),
)

hosted_pages = doc_table(
    "hosted_pages",
    Column("state", String(20), nullable=False),
    # JSON: the checkout the page completes (the operation's parameters, redirect and cancel URLs,
    # who asked, a payment in flight); not a field of the document
    Column("checkout", Text, nullable=False),
)

portal_sessions = doc_table(
    "portal_sessions",
    Column("customer_id", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("token", String(100), nullable=False),  # the access URL's secret: the portal page looks it up
    # sha256 of the cookie set in the browser that opened the access URL (the URL itself is single-use);
    # not a field of the document
    Column("browser_key", String(64), nullable=True),
    indexes=(("customer_id",),),
    unique=(("token",),),
)

csv_tax_rules = doc_table(  # id: billhive's own handle (the resource has none and is never looked up by it)
    "csv_tax_rules",
    Column("region_key", String(64), nullable=False),  # domain.tax_rules.region_key: rules of one region
    Column("country", String(2), nullable=False),  # the rule's country and state (``*``): the rules that
    Column("state", String(3), nullable=False),  # can match an address (services/csv_tax_rules.basis)
    indexes=(("region_key",), ("country", "state")),
)

# --- the test gateway's own books (stands in for the remote gateway) --------------------------

gateway_vault = Table(  # stored cards: token -> behaviour; never the card number
    "gateway_vault",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("token", String(60), nullable=False),
    Column("behaviour", String(30), nullable=False),
    Column("brand", String(30), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("site_id", "token"),
)

gateway_operations = Table(  # every charge/refund/void, keyed by the caller's idempotency key
    "gateway_operations",
    metadata,
    _pk(),
    Column("site_id", Integer, nullable=False),
    Column("idempotency_key", String(100), nullable=False),
    Column("kind", String(20), nullable=False),  # charge | refund | void
    Column("token", String(60), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("status", String(20), nullable=False),  # success | failure | timeout
    Column("reference", String(60), nullable=False),  # cb_...
    Column("error_code", String(20), nullable=True),
    Column("error_text", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("site_id", "idempotency_key"),
    Index("ix_gateway_operations_site_reference", "site_id", "reference"),
)

# Tables that hold a site's data (wiped by the time machine's start_afresh); settings,
# keys and webhook endpoints survive.
SITE_DATA_TABLES = (
    events, webhook_deliveries, webhook_attempts, email_deliveries, email_attempts, jobs, time_travels,
    idempotency_keys,
    plans, addons, coupons, coupon_codes, customers, cards, credit_ledger, payment_intents,
    addresses, subscriptions, invoices, transactions, invoice_transactions, orders, comments,
    hosted_pages, portal_sessions, csv_tax_rules, gateway_vault, gateway_operations,
)
