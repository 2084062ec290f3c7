"""Sites (tenants): settings, API keys, and the site clock.

Every setting that changes billing behaviour is declared in ``SETTINGS`` with its type,
default and validation; the CLI (``billhive site set``) and services read them from here.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from billhive import spec, webhook_endpoints
from billhive.errors import NotFound, SettingError
from billhive.store import schema as S
from billhive.store.db import Q, Tx
from billhive.util.jsonutil import dumps, loads

SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")




def _bool(v: str) -> bool:
    low = v.strip().lower()
    if low in ("true", "on", "yes", "1"):
        return True
    if low in ("false", "off", "no", "0"):
        return False
    raise SettingError("expected true or false")


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def conv(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise SettingError("expected an integer") from None
        if lo is not None and n < lo:
            raise SettingError(f"must be at least {lo}")
        if hi is not None and n > hi:
            raise SettingError(f"must be at most {hi}")
        return n
    return conv


def _choice(*options: str) -> Callable[[str], str]:
    def conv(v: str) -> str:
        if v not in options:
            raise SettingError(f"expected one of: {', '.join(options)}")
        return v
    return conv


def _str(max_len: int, pattern: str | None = None) -> Callable[[str], str]:
    rx = re.compile(pattern) if pattern else None

    def conv(v: str) -> str:
        if len(v) > max_len:
            raise SettingError(f"at most {max_len} characters")
        if rx and v and not rx.match(v):
            raise SettingError(f"must match {pattern}")
        return v
    return conv


def _int_list(v: str) -> list[int]:
    items = [x.strip() for x in v.split(",") if x.strip()]
    try:
        out = [int(x) for x in items]
    except ValueError:
        raise SettingError("expected comma-separated whole days, e.g. 1,3,5") from None
    if any(d < 0 or d > 365 for d in out):
        raise SettingError("each offset must be between 0 and 365 days")
    return out


def _word_list(v: str) -> list[str]:
    items = [x.strip() for x in v.split(",") if x.strip()]
    known = set(spec.event_types())
    bad = [x for x in items if x not in known]
    if bad:
        raise SettingError(f"unknown event type(s): {', '.join(bad)}")
    return items


@dataclass(frozen=True)
class Setting:
    name: str
    convert: Callable[[str], Any]
    default: Any
    help: str
    secret: bool = False  # never shown: ``describe`` prints a hint instead (``secret_hint``)


# Settings stored in sites.settings (JSON). currency_code and invoice_next_number are
# columns (the latter is the invoice sequence) but are set the same way.
SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("metered_billing", _bool, False,
            "renewals and plan/quantity changes create pending invoices (closed by collect)"),
    Setting("notify_pending_invoices", _bool, False, "fire invoice_created when a pending invoice is created"),
    Setting("invoice_prefix", _str(20, r"^[A-Za-z0-9_\-/]*$"), "", "prefix of invoice numbers"),
    Setting("close_date", _choice("closing_date", "renewal_date"), "closing_date",
            "end_date of a closed pending invoice: the closing time, or keep the renewal date"),
    Setting("dunning_retry_days", _int_list, [1, 3, 5],
            "retry offsets in days after the first failed automatic charge"),
    Setting("dunning_final_action", _choice("not_paid", "voided", "payment_due"), "not_paid",
            "invoice status when dunning is exhausted (payment_due = leave unpaid)"),
    Setting("dunning_cancel_subscription", _bool, False, "cancel the subscription when dunning is exhausted"),
    Setting("one_off_charge_failure", _choice("void", "dunning"), "void",
            "a one-off invoice (create, charge, charge_addon) whose automatic charge fails: void it and answer "
            "400 payment_processing_failed (Chargebee), or keep it payment_due and start dunning"),
    Setting("price_type", _choice("tax_exclusive", "tax_inclusive"), "tax_exclusive",
            "whether plan, addon and charge prices exclude tax (added on top) or include it (carved out)"),
    Setting("renewal_reminder_days", _int(0, 90), 3, "days before renewal to fire subscription_renewal_reminder"),
    Setting("trial_ending_days", _int(0, 90), 3, "days before trial end to fire subscription_trial_ending"),
    Setting("prorate_subscription_changes", _bool, True,
            "bill prorated charges and credits for mid-term subscription changes unless `prorate` says otherwise"),
    Setting("trial_end_without_card", _choice("cancel", "activate"), "cancel",
            "trial ends, auto-collection on, something to charge, no card: cancel (cancel_reason no_card) or "
            "activate with the invoice payment_due"),
    Setting("card_expiring_days", _int(0, 90), 30, "days before card expiry to fire card_expiring"),
    Setting("rate_limit_per_minute", _int(0, 1_000_000), 0, "API requests per minute (0 = unlimited)"),
    Setting("webhook_timeout", _int(1, 60), 10,
            "seconds a webhook endpoint has to answer 2xx before the attempt counts as failed"),
    Setting("email_enabled", _bool, False, "send customer emails"),
    Setting("email_from", _str(200), "billing@localhost", "sender address"),
    Setting("email_events", _word_list,
            ["invoice_generated", "payment_succeeded", "payment_failed", "card_expiring",
             "subscription_renewal_reminder"],
            "event types that send a customer email"),
    Setting("smtp_host", _str(200), "127.0.0.1", "SMTP server host"),
    Setting("smtp_port", _int(1, 65535), 25, "SMTP server port"),
    Setting("smtp_username", _str(200), "", "SMTP user (empty: no login)"),
    Setting("smtp_password", _str(200), "", "SMTP password"),
    Setting("smtp_tls", _choice("none", "starttls", "ssl"), "none", "SMTP transport security"),
    Setting("smtp_ca_file", _str(500), "", "CA bundle to verify the SMTP server's certificate (empty: system CAs)"),
    Setting("smtp_timeout", _int(1, 300), 30, "seconds an SMTP conversation may take"),
    Setting("email_templates_dir", _str(500), "", "directory with template overrides (empty: built-in)"),
    Setting("gateway", _choice("", "chargebee", "stripe"), "",
            "payment gateway: stripe (needs stripe_secret_key), chargebee (the test gateway, test sites only) or "
            "empty (the test gateway on test sites, none on live sites)"),
    Setting("stripe_secret_key", _str(200, r"^(sk|rk)_[A-Za-z0-9_]+$"), "",
            "the Stripe account's secret (or restricted) key, sk_test_... or sk_live_... (never shown)", secret=True),
    Setting("stripe_api_base", _str(500, r"^https?://[^\s]+$"), "",
            "Stripe API base URL (empty: Stripe's own; tests point it at a Stripe fake)"),
]}

COLUMN_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "currency_code": _str(3, r"^[A-Z]{3}$"),
    "invoice_next_number": _int(1, 10**15),
}
WEBHOOK_SETTINGS = ("webhook_url", "webhook_username", "webhook_password", "webhook_secret")


@dataclass
class Site:
    pk: int
    name: str
    is_test: bool
    currency_code: str
    settings: dict[str, Any]
    invoice_next_number: int
    tm_now: int | None
    tm_genesis_time: int | None
    tm_destination_time: int | None
    tm_status: str | None
    created_at: int
    config_version: int = 0

    def setting(self, name: str) -> Any:
        if name in self.settings:
            return self.settings[name]
        return SETTINGS[name].default

    def now(self, wall: Callable[[], float]) -> int:
        """The site clock: the time machine's time when set, else real time."""
        return self.tm_now if self.tm_now is not None else int(wall())


_SITE_COLS = (S.sites.c.pk, S.sites.c.name, S.sites.c.is_test, S.sites.c.currency_code, S.sites.c.settings,
              S.sites.c.invoice_next_number, S.sites.c.tm_now, S.sites.c.tm_genesis_time,
              S.sites.c.tm_destination_time, S.sites.c.tm_status, S.sites.c.created_at, S.sites.c.config_version)
_BY_PK = Q(select(*_SITE_COLS).where(S.sites.c.pk == bindparam("pk")))
_BY_NAME = Q(select(*_SITE_COLS).where(S.sites.c.name == bindparam("name")))


# a unit whose first statement joins the site's row with its own loads (Work.adopt_site)
COLUMNS = _SITE_COLS


def from_row(row: Sequence[Any]) -> Site:
    """The Site of a row of ``COLUMNS``."""
    return _row_to_site(row)


def _row_to_site(row: Sequence[Any]) -> Site:
    return Site(row[0], row[1], bool(row[2]), row[3], loads(row[4]), row[5], row[6], row[7], row[8], row[9], row[10],
                row[11])


def load(tx: Tx, site_pk: int) -> Site:
    row = tx.one(_BY_PK, {"pk": site_pk})
    if row is None:
        raise NotFound("site not found", api_error_code="site_not_found")
    return _row_to_site(row)


def by_name(tx: Tx, name: str) -> Site | None:
    row = tx.one(_BY_NAME, {"name": name})
    return _row_to_site(row) if row else None


def require(tx: Tx, name: str) -> Site:
    site = by_name(tx, name)
    if site is None:
        raise SettingError(f"no site named {name!r}")
    return site


def all_sites(tx: Tx) -> list[Site]:
    return [_row_to_site(r) for r in tx.all(_ALL)]


def all_sites_and(extra: Any) -> Callable[[Tx], list[tuple[Site, Any]]]:
    """A reader of every site (pk order), each with ``extra``: one more column of the same read (a
    scalar subquery correlated on ``sites.pk``), its statement compiled once."""
    q = Q(select(*_SITE_COLS, extra).order_by(S.sites.c.pk))

    def read(tx: Tx) -> list[tuple[Site, Any]]:
        return [(_row_to_site(r), r[len(_SITE_COLS)]) for r in tx.all(q)]
    return read


_ALL = Q(select(*_SITE_COLS).order_by(S.sites.c.pk))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(is_test: bool) -> str:
    return ("test_" if is_test else "live_") + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")


@dataclass(frozen=True)
class KeyInfo:
    site_pk: int
    name: str
    access: str  # full | read_only

    @property
    def read_only(self) -> bool:
        return self.access == "read_only"


_KEY_BY_HASH = Q(select(S.api_keys.c.site_id, S.api_keys.c.name, S.api_keys.c.access)
                 .where(S.api_keys.c.key_hash == bindparam("h")))


def key_info(tx: Tx, key: str) -> KeyInfo | None:
    row = tx.one(_KEY_BY_HASH, {"h": hash_key(key)})
    return KeyInfo(row[0], row[1], row[2]) if row else None


def add_key(tx: Tx, site_pk: int, key: str, access: str, name: str, now: int) -> None:
    if len(key) < 8 or len(key) > 200 or not re.match(r"^[A-Za-z0-9_\-]+$", key):
        raise SettingError("API keys are 8-200 characters of letters, digits, '_' and '-'")
    if tx.one(_KEY_BY_HASH, {"h": hash_key(key)}) is not None:
        raise SettingError("that API key is already in use")
    tx.execute(_NEW_KEY, {"site_id": site_pk, "key_hash": hash_key(key), "key_hint": key[:9] + "…", "name": name,
                          "access": access, "created_at": now})


_NEW_KEY = Q(insert(S.api_keys).values({c: bindparam(c) for c in (
    "site_id", "key_hash", "key_hint", "name", "access", "created_at")}))
_NEW_SITE = Q(insert(S.sites).values({**{c: bindparam(c) for c in (
    "name", "is_test", "currency_code", "settings", "created_at")}, "invoice_next_number": 1}))


def new_api_key(tx: Tx, site: Site, *, read_only: bool, now: int, key: str | None = None,
                name: str | None = None) -> str:
    """Add a key to the site (generated unless given); returns it - the only time it is shown."""
    key = key or new_key(site.is_test)
    access = "read_only" if read_only else "full"
    if name is not None and not 1 <= len(name) <= 100:
        raise SettingError("key names are 1-100 characters")
    add_key(tx, site.pk, key, access, name or ("read_only_key" if read_only else "full_access_key"), now)
    return key


_KEY_ROWS = (S.api_keys.c.pk, S.api_keys.c.name, S.api_keys.c.access, S.api_keys.c.key_hint, S.api_keys.c.key_hash,
             S.api_keys.c.created_at)


def list_keys(tx: Tx, site_pk: int) -> list[dict[str, Any]]:
    """A site's API keys as the CLI shows them: never the key, only its hint."""
    rows = tx.all(select(*_KEY_ROWS).where(S.api_keys.c.site_id == site_pk).order_by(S.api_keys.c.pk))
    return [_key_view(r) for r in rows]


def _key_view(row: tuple) -> dict[str, Any]:
    return {"name": row[1], "access": row[2], "hint": row[3], "created_at": row[5]}


def revoke_key(tx: Tx, site_pk: int, hint_or_key: str) -> dict[str, Any]:
    """Delete one of the site's keys, named by the key itself or by its hint (as
    ``list_keys`` shows it, with or without the trailing "…"). Returns what was revoked.
    Processes that cached the key stop accepting it within their cache's TTL."""
    rows = tx.all(select(*_KEY_ROWS).where(S.api_keys.c.site_id == site_pk).order_by(S.api_keys.c.pk))
    given = hint_or_key.strip()
    matches = [r for r in rows if r[4] == hash_key(given)]
    if not matches and given:
        prefix = given.rstrip("…")
        matches = [r for r in rows if r[3] == given or r[3].rstrip("…") == prefix]
    if not matches:
        raise SettingError(f"no API key of this site matches {given!r} (see `billhive site key list`)")
    if len(matches) > 1:
        raise SettingError(f"{len(matches)} keys have the hint {given!r}: give the whole key to revoke one")
    tx.execute(delete(S.api_keys).where(S.api_keys.c.pk == matches[0][0]))
    return _key_view(matches[0])


def create(tx: Tx, name: str, *, now: int, currency: str = "USD", metered_billing: bool = False,
           api_key: str | None = None, read_only_key: str | None = None) -> tuple[Site, dict[str, str]]:
    """Create a site and its keys; returns the site and {"full": key, "read_only": key?}."""
    if not SITE_NAME.match(name):
        raise SettingError("site names are 1-63 lowercase letters, digits and '-', starting with a letter or digit")
    if by_name(tx, name) is not None:
        raise SettingError(f"a site named {name!r} already exists")
    currency = COLUMN_SETTINGS["currency_code"](currency)
    is_test = name.endswith("-test")
    settings = {"metered_billing": True} if metered_billing else {}
    tx.execute(_NEW_SITE, {"name": name, "is_test": 1 if is_test else 0, "currency_code": currency,
                           "settings": dumps(settings), "created_at": now})
    site = require(tx, name)
    keys = {"full": api_key or new_key(is_test)}
    add_key(tx, site.pk, keys["full"], "full", "full_access_key", now)
    if read_only_key:
        keys["read_only"] = read_only_key
        add_key(tx, site.pk, read_only_key, "read_only", "read_only_key", now)
    return site, keys


def set_settings(tx: Tx, name: str, assignments: dict[str, str], now: int) -> Site:
    """Apply SETTING=VALUE pairs atomically; any unknown name or bad value changes nothing."""
    site = require(tx, name)
    settings = dict(site.settings)
    columns: dict[str, Any] = {}
    webhook: dict[str, str] = {}
    for key, raw in assignments.items():
        try:
            if key in SETTINGS:
                settings[key] = SETTINGS[key].convert(raw)
            elif key in COLUMN_SETTINGS:
                columns[key] = COLUMN_SETTINGS[key](raw)
            elif key in WEBHOOK_SETTINGS:
                webhook[key[len("webhook_"):]] = raw
            else:
                known = sorted([*SETTINGS, *COLUMN_SETTINGS, *WEBHOOK_SETTINGS])
                raise SettingError(f"unknown setting; known settings: {', '.join(known)}")
        except SettingError as exc:
            raise SettingError(f"{key}: {exc}") from None
    _check_gateway(site, settings)
    tx.execute(update(S.sites).where(S.sites.c.pk == site.pk).values(settings=dumps(settings), **columns,
                                                                    config_version=S.sites.c.config_version + 1))
    if webhook:
        _set_default_webhook(tx, site, webhook, now)
    return require(tx, name)


def _check_gateway(site: Site, settings: dict[str, Any]) -> None:
    """A site's gateway settings must make sense together: the test gateway takes any Luhn-valid
    number, so a live site never uses it; Stripe needs the account's secret key."""
    gateway = settings.get("gateway", "")
    if gateway == "chargebee" and not site.is_test:
        raise SettingError("gateway: the chargebee test gateway serves test sites only")
    if gateway == "stripe" and not settings.get("stripe_secret_key"):
        raise SettingError("gateway: stripe needs the account's secret key (stripe_secret_key=sk_...)")


def secret_hint(value: str) -> str:
    """What ``describe`` shows of a secret setting: its kind and last four characters."""
    if not value:
        return ""
    kind = value[: value.index("_", 3) + 1] if value.count("_") >= 2 else ""
    return f"{kind}…{value[-4:]}" if len(value) >= len(kind) + 12 else f"{kind}…"


def _set_default_webhook(tx: Tx, site: Site, values: dict[str, str], now: int) -> None:
    """``webhook_url=...`` manages the endpoint named ``default`` (``billhive webhook`` manages all)."""
    existing = webhook_endpoints.get(tx, site.pk, "default")
    if "url" in values and not values["url"]:
        if existing:
            webhook_endpoints.remove(tx, site.pk, "default")
        return
    if existing is None:
        if not values.get("url"):
            raise SettingError("webhook_url: set the URL first")
        webhook_endpoints.add(tx, site.pk, values["url"], now=now, endpoint_id="default",
                              username=values.get("username") or None, password=values.get("password") or None,
                              secret=values.get("secret") or None)
    else:
        webhook_endpoints.update(tx, site.pk, "default", **{k: (v or None) for k, v in values.items()})


def describe(tx: Tx, site: Site) -> dict[str, Any]:
    keys = [(k["name"], k["access"], k["hint"]) for k in list_keys(tx, site.pk)]
    return {
        "name": site.name,
        "test_site": site.is_test,
        "currency_code": site.currency_code,
        "invoice_next_number": site.invoice_next_number,
        "settings": {name: (secret_hint(site.setting(name)) if SETTINGS[name].secret else site.setting(name))
                     for name in SETTINGS},
        "time_machine": ({"now": site.tm_now, "genesis_time": site.tm_genesis_time,
                          "destination_time": site.tm_destination_time, "status": site.tm_status}
                         if site.is_test else None),
        "api_keys": [{"name": n, "access": a, "hint": h} for n, a, h in keys],
        "webhook_endpoints": [webhook_endpoints.describe(e) for e in webhook_endpoints.list_all(tx, site.pk)],
    }


def wipe_data(tx: Tx, site_pk: int) -> None:
    """Delete every row of the site's data (customers, invoices, events...); keep settings and keys."""
    for table in S.SITE_DATA_TABLES:
        tx.execute(delete(table).where(table.c.site_id == site_pk))
