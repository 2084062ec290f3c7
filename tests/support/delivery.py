"""Test support for webhook and email delivery: a real HTTP receiver, a real SMTP server,
event producers, outbox inspection, and ``no_deliveries`` - the check that a request's
events cause no webhook and/or no email.

    from tests.support.delivery import no_deliveries, receiver, smtp  # noqa: F401 (fixtures)

    def test_collect_skips_everything(site, receiver, smtp):
        with no_deliveries(site, webhook=True, email=True, receiver=receiver, smtp=smtp) as events:
            site.api.post(f"/invoices/{inv_id}/collect", headers={"chargebee-event-actions": "all-disabled"})
        assert "invoice_generated" in {e["event_type"] for e in events}

(``receiver`` / ``smtp`` are optional: without them the check is on the outbox alone, which
is where every delivery starts.)
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from billhive import sites, webhook_endpoints
from billhive.store import schema as S
from billhive.util.jsonutil import loads
from billhive.work.context import Origin, Work
from tests.support import documents, timemachine
from tests.support.server import TestSite

GENESIS = 1_700_000_000  # where tm_site's clock starts


def travel(site: TestSite, to: int) -> None:
    """Move a test site's clock with the time machine."""
    timemachine.travel(site.api, to)


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a webhook receiver ---------------------------------------------------------------------

@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.json["id"]


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the worker opens a batch of connections at once
    daemon_threads = True


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1. ``status`` (or ``respond(received) -> status``) sets
    the answer, ``delay`` delays it; ``stop()`` takes it down (connections refused) and
    ``start()`` brings it back on the same port."""

    def __init__(self) -> None:
        self.port = 0  # the first start() binds port 0 and keeps the port it got (no race for a free one)
        self.received: list[Received] = []
        self.status = 200
        self.delay = 0.0
        self.respond: Callable[[Received], int] | None = None
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender went away mid-request: not received
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver.received.append(got)
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.respond(got) if receiver.respond else receiver.status
                payload = b"ok" if 200 <= status < 300 else b"receiver says no"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[str]:
        with self._lock:
            return [r.event_id for r in self.received]

    def for_event(self, event_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.event_id == event_id]


class SilentServer:
    """A TCP listener that never answers (a hanging webhook endpoint or SMTP server): connections
    are accepted and held open, nothing is ever sent back. ``close()`` drops them all."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1024)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        for conn in self._held:
            conn.close()


# ---- an SMTP server -------------------------------------------------------------------------

@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        return self.message.get_content().replace("\r\n", "\n")

    @property
    def event_id(self) -> str:
        return str(self.message["X-Billhive-Event-Id"])


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 collecting messages. ``rcpt_reply`` maps a
    recipient to a reply (e.g. "550 no such user") to refuse it; ``tls`` = none | starttls |
    ssl with a self-signed certificate (``ca_file`` verifies it); ``auth`` = (user, password)."""

    def __init__(self, *, tls: str = "none", cert_dir: Path | None = None, auth: tuple[str, str] | None = None,
                 port: int | None = None):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[Mail] = []
        self.rcpt_reply: dict[str, str] = {}
        self.logins: list[str] = []
        self.port = port or free_port()
        self.ca_file: str | None = None
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
                reply = sink.rcpt_reply.get(address)
                if reply:
                    return reply
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                sink.messages.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), msg))
                return "250 Message accepted"

        kwargs: dict[str, Any] = {}
        if tls != "none":
            assert cert_dir is not None
            cert, key = self_signed_cert(cert_dir)
            self.ca_file = str(cert)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            if tls == "ssl":
                kwargs["ssl_context"] = ctx
            else:
                kwargs.update(tls_context=ctx, require_starttls=True)
        if auth:
            def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
                ok = (auth_data.login.decode(), auth_data.password.decode()) == auth
                if ok:
                    sink.logins.append(auth_data.login.decode())
                return AuthResult(success=ok, handled=False)  # failure: answer 535
            kwargs.update(authenticator=authenticator, auth_required=True)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        self._stopped = False

    def settings(self) -> dict[str, Any]:
        """Site settings that point a site at this server."""
        return {"email_enabled": "true", "smtp_host": "127.0.0.1", "smtp_port": self.port}

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.controller.stop()

    def for_event(self, event_id: str) -> list[Mail]:
        return [m for m in self.messages if m.event_id == event_id]


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


# ---- producing events and inspecting the outbox ----------------------------------------------

CUSTOMER = documents.CUSTOMER


def add_customer(site: TestSite, **fields: Any) -> dict:
    """A customer row (for events whose content has no customer, e.g. invoice_generated)."""
    from billhive.store.docs import DocTable

    doc = {**CUSTOMER, "auto_collection": "on", "created_at": GENESIS, **fields}
    site.app.db.write_sync(lambda tx: DocTable(S.customers, "customer").insert(tx, site.pk, doc, GENESIS))
    return doc


def add_endpoint(site: TestSite, url: str, **kw: Any) -> webhook_endpoints.Endpoint:
    return site.app.db.write_sync(lambda tx: webhook_endpoints.add(tx, site.pk, url, now=int(time.time()), **kw))


def set_endpoint(site: TestSite, endpoint_id: str, **values: Any) -> None:
    site.app.db.write_sync(lambda tx: webhook_endpoints.update(tx, site.pk, endpoint_id, **values))


def emit(site: TestSite, event_type: str = "customer_created", content: dict | None = None, *, n: int = 1,
         origin: Origin | None = None, per_tx: int = 100) -> list[dict]:
    """Record n events as services do (each chunk of per_tx in one transaction)."""
    origin = origin or Origin(user="test")
    out: list[dict] = []
    while len(out) < n:
        k = min(per_tx, n - len(out))

        def unit(tx, k=k):  # type: ignore[no-untyped-def]
            w = Work(tx, site.app, sites.load(tx, site.pk), origin)
            return [w.emit(event_type, content if content is not None else {"customer": CUSTOMER}) for _ in range(k)]
        out += site.app.db.write_sync(unit)
    return out


def event(site: TestSite, event_id: str) -> dict:
    ev = S.events
    row = site.app.db.read_sync(lambda tx: tx.one(select(ev.c.data, ev.c.email_status)
                                                  .where(ev.c.site_id == site.pk, ev.c.id == event_id)))
    assert row is not None, event_id
    return {**loads(row[0]), "_email_status": row[1]}


def _rows(site: TestSite, table: Any, where: list) -> list[dict]:
    def run(tx):  # type: ignore[no-untyped-def]
        res = tx.execute(select(table).where(table.c.site_id == site.pk, *where).order_by(table.c.pk))
        cols = [c.name for c in table.c]
        return [dict(zip(cols, r)) for r in res.fetchall()]
    return site.app.db.read_sync(run)


def webhook_deliveries(site: TestSite, event_id: str | None = None) -> list[dict]:
    d = S.webhook_deliveries
    return _rows(site, d, [d.c.event_id == event_id] if event_id else [])


def webhook_attempts(site: TestSite, delivery_pk: int | None = None) -> list[dict]:
    a = S.webhook_attempts
    return _rows(site, a, [a.c.delivery_pk == delivery_pk] if delivery_pk else [])


def email_deliveries(site: TestSite, event_id: str | None = None) -> list[dict]:
    d = S.email_deliveries
    return _rows(site, d, [d.c.event_id == event_id] if event_id else [])


def email_attempts(site: TestSite, delivery_pk: int | None = None) -> list[dict]:
    a = S.email_attempts
    return _rows(site, a, [a.c.delivery_pk == delivery_pk] if delivery_pk else [])


def run_delivery_pass(app: Any) -> None:
    """One webhook pass and one email pass, now, in this thread (besides the server's loops)."""
    from billhive.delivery import emails, webhooks

    async def both() -> None:
        await webhooks.run_once(app)
        await emails.run_once(app)
    asyncio.run(both())


# ---- "this request's events cause no webhook / no email" -----------------------------------

@contextlib.contextmanager
def no_deliveries(site: TestSite, *, webhook: bool = True, email: bool = True,
                  receiver: WebhookReceiver | None = None, smtp: SmtpSink | None = None) -> Iterator[list[dict]]:
    """Assert that the events recorded on ``site`` inside the block cause no webhook (when
    ``webhook``) and no email (when ``email``): they are still recorded (at least one), a
    skipped webhook shows ``webhook_status: skipped`` (and ``skipped`` per endpoint), no
    delivery rows exist for them, and after a delivery pass the optional ``receiver`` /
    ``smtp`` got nothing for them. Yields the list of those events (filled on exit)."""
    ev = S.events
    app = site.app
    start = app.db.read_sync(lambda tx: tx.scalar(select(func.coalesce(func.max(ev.c.pk), 0))
                                                  .where(ev.c.site_id == site.pk)))
    found: list[dict] = []
    yield found
    rows = app.db.read_sync(lambda tx: tx.all(select(ev.c.data, ev.c.email_status)
                                              .where(ev.c.site_id == site.pk, ev.c.pk > start).order_by(ev.c.pk)))
    found.extend(loads(r[0]) for r in rows)
    assert found, "the request recorded no events, so it proves nothing about deliveries"
    ids = [e["id"] for e in found]
    run_delivery_pass(app)
    if webhook:
        for e in found:
            assert e["webhook_status"] == "skipped", (e["id"], e["event_type"], e["webhook_status"])
            assert all(w["webhook_status"] == "skipped" for w in e.get("webhooks", [])), e
        d = S.webhook_deliveries
        assert not _rows(site, d, [d.c.event_id.in_(ids)]), "webhook deliveries were scheduled"
        if receiver is not None:
            assert not set(receiver.events()) & set(ids), "the receiver got a skipped event"
    if email:
        assert all(r[1] == "skipped" for r in rows), [r[1] for r in rows]
        d = S.email_deliveries
        assert not _rows(site, d, [d.c.event_id.in_(ids)]), "emails were scheduled"
        if smtp is not None:
            assert not {m.event_id for m in smtp.messages} & set(ids), "an email was sent for a skipped event"


# ---- fixtures (import them into a test module or conftest to use them) ------------------------

@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.stop()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    s = SilentServer()
    yield s
    s.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    s = SmtpSink()
    yield s
    s.stop()
