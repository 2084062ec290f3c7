"""Customer emails over a real SMTP server (aiosmtpd): templates, retries, TLS, auth."""

from __future__ import annotations

import pytest

from billhive.delivery import emails
from tests.support.delivery import (
    CUSTOMER,
    GENESIS,
    SmtpSink,
    add_customer,
    email_attempts,
    email_deliveries,
    emit,
    event,
    run_delivery_pass,
    travel,
    wait_until,
)

INVOICE = {"id": "inv_7", "object": "invoice", "customer_id": "cust_1", "status": "payment_due", "currency_code": "USD",
           "start_date": GENESIS - 86400, "end_date": GENESIS, "sub_total": 1150, "tax": 100, "amount": 1250,
           "amount_paid": 0,
           "amount_adjusted": 0, "credits_applied": 0, "amount_due": 1250, "next_retry": GENESIS + 86400}
TXN = {"id": "txn_9", "object": "transaction", "customer_id": "cust_1", "type": "payment", "date": GENESIS,
       "currency_code": "USD", "amount": 1250, "status": "success", "error_text": "Insufficient funds"}
CARD = {"object": "card", "customer_id": "cust_1", "status": "expiring", "last4": "1111", "card_type": "visa",
        "expiry_month": 12, "expiry_year": 2023}
SUB = {"id": "sub_3", "object": "subscription", "plan_id": "basic", "status": "active",
       "current_term_end": GENESIS + 3 * 86400}


def sent(site, event_id: str, status: str = "sent", attempts: int | None = None) -> dict:
    def check():
        rows = email_deliveries(site, event_id)
        return rows[0] if (rows and rows[0]["status"] == status and rows[0]["claimed_until"] is None
                           and attempts in (None, rows[0]["attempts"])) else None
    return wait_until(check, what=f"email for {event_id} {status}")


@pytest.fixture
def mail_site(tm_site, smtp):
    tm_site.setting(**smtp.settings(), email_from="billing@acme.test")
    return tm_site


def test_invoice_generated_email_finds_the_customer_and_shows_the_amount_due(mail_site, smtp):
    add_customer(mail_site)
    (ev,) = emit(mail_site, "invoice_generated", {"invoice": INVOICE})  # no customer in the content
    d = sent(mail_site, ev["id"])
    assert d["recipient"] == "ada@example.com" and d["template"] == "invoice_generated"
    (mail,) = smtp.for_event(ev["id"])
    assert mail.mail_from == "billing@acme.test" and mail.rcpt_tos == ["ada@example.com"]
    assert mail.subject == "Invoice inv_7: 12.50 USD due"
    assert "Hello Ada Lovelace," in mail.body
    assert "Amount due:   12.50 USD" in mail.body and "dated 2023-11-14" in mail.body
    assert "Amount:       12.50 USD (tax 1.00 USD included)" in mail.body  # the amount includes the tax
    assert mail.message["To"] == "ada@example.com" and mail.message["From"] == "billing@acme.test"
    assert mail.message["Message-ID"] == f"<{ev['id']}.invoice_generated@acme.test>"
    assert mail.message["X-Billhive-Event-Type"] == "invoice_generated"
    (a,) = email_attempts(mail_site, d["pk"])
    assert (a["attempt"], a["attempted_at"], a["status_code"], a["error"]) == (1, GENESIS, 250, None)
    assert event(mail_site, ev["id"])["_email_status"] == "sent"


@pytest.mark.parametrize("event_type, content, subject, phrase", [
    ("payment_succeeded", {"transaction": TXN, "invoice": INVOICE, "customer": CUSTOMER},
     "Payment received: 12.50 USD", "for invoice inv_7\non 2023-11-14"),
    ("payment_failed", {"transaction": {**TXN, "status": "failure"}, "invoice": INVOICE, "customer": CUSTOMER,
                        "card": CARD},
     "Payment failed for invoice inv_7", "(Insufficient funds)"),
    ("card_expiring", {"customer": CUSTOMER, "card": CARD},
     "Your card ending in 1111 expires soon", "end of 12/2023"),
    ("subscription_renewal_reminder", {"subscription": SUB, "customer": CUSTOMER},
     "Your subscription renews on 2023-11-17", "sub_3 (basic)"),
])
def test_built_in_templates(mail_site, smtp, event_type, content, subject, phrase):
    (ev,) = emit(mail_site, event_type, content)
    sent(mail_site, ev["id"])
    (mail,) = smtp.for_event(ev["id"])
    assert mail.subject == subject
    assert phrase in mail.body
    assert "$" not in mail.body  # every placeholder filled


def test_generic_fallback_and_overrides(mail_site, smtp, tmp_path):
    mail_site.setting(email_events="customer_changed,invoice_generated")
    (ev,) = emit(mail_site, "customer_changed")
    sent(mail_site, ev["id"])
    assert smtp.for_event(ev["id"])[0].subject == "Customer changed"
    (tmp_path / "invoice_generated.txt").write_text("Subject: Bill ${invoice_id} for $customer_first_name\n\n"
                                                    "Due: $invoice_amount_due_display. $no_such_field.\n")
    (tmp_path / "default.txt").write_text("Subject: [$site_name] $event_type\n\nSomething happened.\n")
    mail_site.setting(email_templates_dir=str(tmp_path))
    (inv,) = emit(mail_site, "invoice_generated", {"invoice": INVOICE, "customer": CUSTOMER})
    (other,) = emit(mail_site, "customer_changed")
    sent(mail_site, inv["id"])
    sent(mail_site, other["id"])
    mail = smtp.for_event(inv["id"])[0]
    assert mail.subject == "Bill inv_7 for Ada" and mail.body == "Due: 12.50 USD. .\n"
    assert smtp.for_event(other["id"])[0].subject == f"[{mail_site.name}] customer_changed"


def test_no_email_when_off_not_subscribed_or_no_address(tm_site, smtp):
    (off,) = emit(tm_site, "payment_succeeded")  # email_enabled is off by default
    tm_site.setting(**smtp.settings())
    (unsubscribed,) = emit(tm_site, "customer_created")
    (no_address,) = emit(tm_site, "payment_succeeded", {"customer": {"id": "c9"}})
    for ev in (off, unsubscribed, no_address):
        assert event(tm_site, ev["id"])["_email_status"] == "not_applicable"
        assert email_deliveries(tm_site, ev["id"]) == []
    run_delivery_pass(tm_site.app)
    assert smtp.messages == []


def test_transient_refusal_is_retried_on_the_site_clock_then_failed(mail_site, smtp):
    smtp.rcpt_reply["ada@example.com"] = "451 4.3.0 try again later"
    (ev,) = emit(mail_site, "payment_succeeded")
    at = GENESIS
    times = [at]
    for delay in emails.RETRY_DELAYS:
        d = sent(mail_site, ev["id"], "re_scheduled", attempts=len(times))
        assert len(email_attempts(mail_site, d["pk"])) == len(times)
        assert d["next_attempt_at"] == at + delay and d["last_status_code"] == 451
        assert event(mail_site, ev["id"])["_email_status"] == "re_scheduled"
        at += delay
        travel(mail_site, at)
        times.append(at)
    d = sent(mail_site, ev["id"], "failed")
    attempts = email_attempts(mail_site, d["pk"])
    assert [a["attempted_at"] for a in attempts] == times and len(times) == 6
    assert all(a["status_code"] == 451 for a in attempts)
    assert event(mail_site, ev["id"])["_email_status"] == "failed"
    assert smtp.messages == []


def test_transient_then_delivered(mail_site, smtp):
    smtp.rcpt_reply["ada@example.com"] = "451 4.3.0 try again later"
    (ev,) = emit(mail_site, "payment_succeeded")
    sent(mail_site, ev["id"], "re_scheduled")
    del smtp.rcpt_reply["ada@example.com"]
    travel(mail_site, GENESIS + 300)
    d = sent(mail_site, ev["id"])
    assert [a["status_code"] for a in email_attempts(mail_site, d["pk"])] == [451, 250]
    assert len(smtp.for_event(ev["id"])) == 1


def test_permanent_refusal_fails_at_once(mail_site, smtp):
    smtp.rcpt_reply["ada@example.com"] = "550 5.1.1 no such user"
    (ev,) = emit(mail_site, "payment_succeeded")
    d = sent(mail_site, ev["id"], "failed")
    assert d["attempts"] == 1 and d["last_status_code"] == 550 and "no such user" in d["last_error"]


def test_server_down_is_retried(tm_site, smtp):
    port = smtp.port
    smtp.stop()
    tm_site.setting(**smtp.settings())
    (ev,) = emit(tm_site, "payment_succeeded")
    d = sent(tm_site, ev["id"], "re_scheduled")
    assert d["last_status_code"] is None and d["last_error"]
    back = SmtpSink(port=port)
    try:
        travel(tm_site, GENESIS + 300)
        sent(tm_site, ev["id"])
        assert len(back.for_event(ev["id"])) == 1
    finally:
        back.stop()


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_tls_and_login(tm_site, tmp_path, tls):
    server = SmtpSink(tls=tls, cert_dir=tmp_path, auth=("mailer", "pw") if tls == "starttls" else None)
    try:
        tm_site.setting(**server.settings(), smtp_tls=tls)
        # the self-signed certificate is not trusted yet: verification fails, the email waits
        (ev,) = emit(tm_site, "payment_succeeded")
        d = sent(tm_site, ev["id"], "re_scheduled")
        assert "CERTIFICATE_VERIFY_FAILED" in d["last_error"] or "certificate" in d["last_error"].lower()
        tm_site.setting(smtp_ca_file=server.ca_file)
        if tls == "starttls":
            tm_site.setting(smtp_username="mailer", smtp_password="pw")
        travel(tm_site, GENESIS + 300)
        sent(tm_site, ev["id"])
        assert len(server.for_event(ev["id"])) == 1
        assert server.logins == (["mailer"] if tls == "starttls" else [])
    finally:
        server.stop()


def test_wrong_password_is_retried(tm_site, tmp_path):
    server = SmtpSink(tls="starttls", cert_dir=tmp_path, auth=("mailer", "pw"))
    try:
        tm_site.setting(**server.settings(), smtp_tls="starttls", smtp_ca_file=server.ca_file,
                        smtp_username="mailer", smtp_password="wrong")
        (ev,) = emit(tm_site, "payment_succeeded")
        d = sent(tm_site, ev["id"], "re_scheduled")
        assert d["last_status_code"] == 535
    finally:
        server.stop()


def test_money_formatting():
    assert emails.money(1250, "USD") == "12.50 USD"
    assert emails.money(-5, "EUR") == "-0.05 EUR"
    assert emails.money(1250, "JPY") == "1250 JPY"
    assert emails.money(1250, "KWD") == "1.250 KWD"
