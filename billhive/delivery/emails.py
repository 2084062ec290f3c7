"""Customer emails: one per scheduled ``email_deliveries`` row, sent over SMTP, at least once.

A row is written with the event when the site has ``email_enabled``, the event type is in
``email_events`` and the customer has an email address (``services.events.record``); the
request headers ``chargebee-event-email`` / ``chargebee-event-actions: all-disabled`` prevent
it. Delivery uses the same outbox as webhooks (``billhive.work.outbox``): claim under a
lease, send outside any transaction, record the attempt in ``email_attempts``.

Retries: +5 min, +30 min, +2 h, +6 h, +1 day after the previous attempt (site clock), then
``failed``. A permanent SMTP refusal (5xx for the sender, the recipient or the message) fails
at once; connection problems, timeouts, 4xx and authentication errors are retried.

Sites are served side by side, one lane each (``billhive.delivery.lanes``): at most
``email_concurrency_per_site`` messages in flight to a site's SMTP server (each attempt is its
own SMTP connection) and ``email_concurrency`` in all (per process), so one site's hanging SMTP
server delays only that site's emails.

Templates are plain text files, ``<event_type>.txt``: a ``Subject:`` line, a blank line, the
body. ``$name`` / ``${name}`` placeholders (``string.Template``) are filled from the event
(see ``variables``); unknown names render empty. The site setting ``email_templates_dir``
names a directory whose files override the built-in ones (``billhive/templates/email``);
``default.txt`` is the fallback for event types without a template.
"""

from __future__ import annotations

import asyncio
import logging
import re
import string
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import select, update

from billhive import sites
from billhive.delivery import lanes
from billhive.domain.invoices import issue_date
from billhive.runtime import App
from billhive.store import schema as S
from billhive.store.db import Tx
from billhive.util.jsonutil import loads
from billhive.work import loops, outbox
from billhive.work.outbox import Batch, Claim, Outcome, lock_event

log = logging.getLogger("billhive.emails")

RETRY_DELAYS = outbox.EMAIL_RETRY_DELAYS
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "email"
_NAME = re.compile(r"^[a-z0-9_]+$")

OUTBOX = outbox.EMAILS

# integer fields that hold money (minor units) - also rendered as <name>_display ("12.50 USD")
_MONEY = {"amount", "amount_due", "amount_paid", "amount_adjusted", "amount_unused", "credits_applied", "sub_total",
          "tax", "total_dues", "account_credits", "refundable_credits", "excess_payments", "amount_to_collect",
          "write_off_amount", "price", "setup_fee"}
# integer fields that hold times (Unix seconds) - also rendered as <name>_display (YYYY-MM-DD, UTC)
_TIME = re.compile(r"(_at|_date|_on|_start|_end|^date|^next_retry|^due_since)$")
_DECIMALS = {**{c: 0 for c in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND",
                                "VUV", "XAF", "XOF", "XPF")},
             **{c: 3 for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")}}


def money(minor: int, currency: str) -> str:
    """12345, USD -> '123.45 USD' (integer arithmetic; the currency's minor unit)."""
    decimals = _DECIMALS.get(currency, 2)
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 10 ** decimals)
    return f"{sign}{units}.{cents:0{decimals}d} {currency}" if decimals else f"{sign}{units} {currency}"


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


class _Vars(dict):
    def __missing__(self, key: str) -> str:  # an optional field the event lacks renders empty
        return ""


def variables(event: dict, site: sites.Site) -> dict[str, str]:
    """Template variables: ``<resource>_<field>`` for every scalar field of every resource in
    the event's content (``invoice_amount_due``, ``customer_first_name``, ``card_last4``...),
    plus a readable ``<resource>_<field>_display`` for money (``invoice_amount_due_display`` =
    "12.50 USD") and times (``subscription_current_term_end_display`` = "2025-01-31", UTC), and
    ``invoice_date_display`` (the date the invoice is issued), ``event_id``, ``event_type``, ``event_title``,
    ``occurred_at_display``, ``site_name``,
    ``customer_name`` (first and last name, else company, else email)."""
    out = _Vars()
    for key, resource in (event.get("content") or {}).items():
        if not isinstance(resource, dict):
            continue
        currency = resource.get("currency_code") or site.currency_code
        for field, value in resource.items():
            if isinstance(value, (dict, list)) or value is None:
                continue
            name = f"{key}_{field}"
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)
            if isinstance(value, int) and not isinstance(value, bool):
                if field in _MONEY:
                    out[name + "_display"] = money(value, currency)
                if _TIME.search(field):
                    out[name + "_display"] = _date(value)
    invoice = (event.get("content") or {}).get("invoice")
    if isinstance(invoice, dict) and invoice.get("start_date"):
        out["invoice_date_display"] = _date(issue_date(invoice))  # the date it is issued (as the PDF)
    customer = (event.get("content") or {}).get("customer") or {}
    full = " ".join(p for p in (customer.get("first_name"), customer.get("last_name")) if p)
    out["customer_name"] = full or customer.get("company") or customer.get("email") or ""
    event_type = event.get("event_type", "")
    out.update(event_id=event.get("id", ""), event_type=event_type,
               event_title=event_type.replace("_", " ").capitalize(), site_name=site.name)
    if isinstance(event.get("occurred_at"), int):
        out["occurred_at_display"] = _date(event["occurred_at"])
    return out


def template_text(name: str, override_dir: str = "") -> str:
    """The template for an event type: the override's, else the built-in, else the override's
    default.txt, else the built-in default.txt."""
    dirs = [Path(override_dir)] if override_dir else []
    candidates = []
    if _NAME.match(name):
        candidates += [d / f"{name}.txt" for d in [*dirs, TEMPLATES]]
    candidates += [d / "default.txt" for d in [*dirs, TEMPLATES]]
    for path in candidates:
        if path.is_file():
            return path.read_text("utf-8")
    raise FileNotFoundError(f"no email template for {name}")


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def render(template: str, event: dict, site: sites.Site) -> Rendered:
    text = template_text(template, site.setting("email_templates_dir")).replace("\r\n", "\n")
    subject_t, body_t = "$event_title", text
    first, _, rest = text.partition("\n")
    if first.lower().startswith("subject:"):
        subject_t, body_t = first[len("subject:"):].strip(), rest.lstrip("\n")
    v = variables(event, site)
    subject = " ".join(string.Template(subject_t).safe_substitute(v).split())  # one line
    return Rendered(subject, string.Template(body_t).safe_substitute(v))


def message(site: sites.Site, event: dict, template: str, recipient: str) -> EmailMessage:
    r = render(template, event, site)
    sender = site.setting("email_from")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = r.subject
    msg["Date"] = formatdate(usegmt=True)
    # stable per event: a duplicate delivery (at-least-once) carries the same Message-ID
    msg["Message-ID"] = f"<{event['id']}.{template}@{sender.rpartition('@')[2] or 'billhive'}>"
    msg["X-Billhive-Event-Id"] = event["id"]
    msg["X-Billhive-Event-Type"] = event.get("event_type", "")
    msg.set_content(r.body)
    return msg


def _permanent(exc: aiosmtplib.SMTPException) -> tuple[int | None, bool]:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        return (codes[0] if codes else None), bool(codes) and all(500 <= c < 600 for c in codes)
    if isinstance(exc, (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError)):
        return exc.code, 500 <= exc.code < 600
    code = getattr(exc, "code", None)
    return (code if isinstance(code, int) and code > 0 else None), False


async def send(site: sites.Site, msg: EmailMessage) -> Outcome:
    """One SMTP attempt with the site's settings. Never raises (except cancellation)."""
    tls = site.setting("smtp_tls")
    timeout = float(site.setting("smtp_timeout"))
    kwargs: dict[str, Any] = dict(hostname=site.setting("smtp_host"), port=site.setting("smtp_port"),
                                  timeout=timeout, use_tls=tls == "ssl", start_tls=tls == "starttls")
    if site.setting("smtp_username"):
        kwargs.update(username=site.setting("smtp_username"), password=site.setting("smtp_password"))
    if site.setting("smtp_ca_file") and tls != "none":
        kwargs["cert_bundle"] = site.setting("smtp_ca_file")
    started = time.monotonic()
    try:
        await asyncio.wait_for(aiosmtplib.send(msg, **kwargs), timeout)
    except (TimeoutError, aiosmtplib.SMTPTimeoutError):
        return Outcome(False, None, f"timed out after {timeout:g}s", _ms(started))
    except aiosmtplib.SMTPException as exc:
        code, permanent = _permanent(exc)
        return Outcome(False, code, f"{type(exc).__name__}: {exc}"[:1000], _ms(started), permanent=permanent)
    except Exception as exc:  # connection refused, TLS, DNS...
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:1000], _ms(started))
    return Outcome(True, 250, None, _ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def aggregate(statuses: list[str]) -> str:
    """The event's email status (an internal column) from its email deliveries."""
    if any(s in ("scheduled", "re_scheduled") for s in statuses):
        return "re_scheduled" if any(s in ("re_scheduled", "failed") for s in statuses) else "scheduled"
    return "failed" if "failed" in statuses else "sent"


def _record(batch: Batch, results: dict[int, Outcome]):
    def unit(tx: Tx) -> None:
        by_event: dict[str, list[Claim]] = defaultdict(list)
        for c in batch.claims:
            by_event[c.event_id].append(c)
        for event_id in sorted(by_event):  # the lock order every delivery transaction uses
            event = lock_event(tx, batch.site.pk, event_id)
            changed = [OUTBOX.finish(tx, c, results[c.pk]) for c in by_event[event_id]]
            if event is not None and any(s is not None for s in changed):
                statuses = [r[-1] for r in OUTBOX.statuses(tx, batch.site.pk, event_id)]
                ev = S.events
                tx.execute(update(ev).where(ev.c.site_id == batch.site.pk, ev.c.id == event_id)
                           .values(email_status=aggregate(statuses)))
    return unit


def _customers(tx: Tx, site_id: int, ids: list[str]) -> dict[str, dict]:
    c = S.customers
    rows = tx.all(select(c.c.id, c.c.data).where(c.c.site_id == site_id, c.c.id.in_(ids)))
    return {r[0]: loads(r[1]) for r in rows}


def _with_customer(event: dict, customers: dict[str, dict]) -> dict:
    """Events like invoice_generated carry no customer: add it for the template's sake."""
    content = event.get("content") or {}
    if "customer" not in content:
        for resource in content.values():
            if isinstance(resource, dict) and resource.get("customer_id") in customers:
                event = {**event, "content": {**content, "customer": customers[resource["customer_id"]]}}
                break
    return event


def _claim(app: App, site_id: int, limit: int):
    def unit(tx: Tx) -> Batch:
        return OUTBOX.claim(tx, site_id, wall=app.wall(), limit=limit,
                            lease=lambda site: site.setting("smtp_timeout") + app.config.delivery_lease_grace)
    return unit


async def _deliver(app: App, batch: Batch) -> None:
    """Send a claimed batch (one site's emails) concurrently and record the answers."""
    site_id = batch.site.pk
    events = {eid: loads(data) for eid, data in batch.events.items()}
    wanted = sorted({r.get("customer_id") for e in events.values() if "customer" not in (e.get("content") or {})
                     for r in (e.get("content") or {}).values() if isinstance(r, dict) and r.get("customer_id")})
    customers = await app.db.read(lambda tx: _customers(tx, site_id, wanted)) if wanted else {}

    async def one(c: Claim) -> Outcome:
        event = events.get(c.event_id)
        if event is None:
            return Outcome(False, None, "event not found", 0, permanent=True)
        try:
            msg = message(batch.site, _with_customer(event, customers), c.row["template"], c.row["recipient"])
        except Exception as exc:  # a broken template override: retried after it is fixed
            return Outcome(False, None, f"template: {type(exc).__name__}: {exc}"[:1000], 0)
        return await send(batch.site, msg)

    outcomes = await asyncio.gather(*(one(c) for c in batch.claims))
    await app.db.write(_record(batch, {c.pk: o for c, o in zip(batch.claims, outcomes)}))
    for c, o in zip(batch.claims, outcomes):
        log.log(logging.INFO if o.ok else logging.WARNING, "email %s (%s) %s: %s", c.event_id, c.row["template"],
                "sent" if o.ok else "failed", o.error or o.status_code,
                extra={"site": batch.site.name, "event_id": c.event_id, "template": c.row["template"],
                       "attempt": c.attempt, "status_code": o.status_code, "duration_ms": o.duration_ms})


def dispatcher(app: App) -> lanes.Dispatcher:
    """Email lanes: one per site, whose SMTP server it is (see billhive.delivery.lanes)."""
    async def due(a: App) -> list:
        return await a.db.read(lambda tx: OUTBOX.due_lanes(tx, int(a.wall())))

    async def claim(a: App, site_id: int, limit: int) -> Batch:
        return await a.db.write(_claim(a, site_id, limit))

    return lanes.Dispatcher(lanes.Channel("email delivery", due, claim, _deliver,
                                          per_lane=app.config.email_concurrency_per_site,
                                          total=app.config.email_concurrency))


async def run_once(app: App) -> int:
    """Send what is due now, every site side by side, and wait for it; returns how many
    deliveries were handled."""
    return await dispatcher(app).run_once(app)


async def email_loop(app: App) -> None:
    d = dispatcher(app)
    interval = app.config.delivery_interval
    try:
        # claims of a failed pass expire and are retried
        await loops.drain(app, interval, lambda a: d.step(a, interval), "email delivery", bell=app.deliveries)
    finally:
        await d.close()
