"""The admin console over HTTP (no browser): off without a token, sign-in and its cookie, CSRF,
the read-only role, and every page rendering real data. Browser tests: test_browser.py."""

from __future__ import annotations

import uuid

import httpx

from tests.console.conftest import ADMIN_TOKEN, csrf
from tests.support import factories
from tests.support.delivery import add_endpoint, emit, wait_until, webhook_deliveries


def test_the_console_is_off_without_an_admin_token(server, app, monkeypatch):
    monkeypatch.setattr(app.config, "admin_token", None)
    monkeypatch.setattr(app.config, "admin_readonly_token", "something")
    for path in ("/admin", "/admin/signin", "/admin/sites"):
        assert httpx.get(server.base_url + path).status_code == 404
    assert httpx.post(server.base_url + "/admin/signin", data={"token": "something"}).status_code == 404


def test_sign_in_sets_a_strict_httponly_cookie_and_keeps_the_token_out_of_urls(server, console_on):
    with httpx.Client(base_url=server.base_url, follow_redirects=False) as c:
        assert c.get("/admin/sites").headers["location"] == "/admin/signin"
        assert c.post("/admin/signin", data={"token": "wrong"}).status_code == 403
        r = c.post("/admin/signin", data={"token": ADMIN_TOKEN})
        assert r.status_code == 303 and r.headers["location"] == "/admin/sites"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie
        assert ADMIN_TOKEN not in r.headers["set-cookie"]
        page = c.get("/admin/sites")
        assert page.status_code == 200 and "no-store" in page.headers["cache-control"]
        assert "<script" not in page.text  # server-rendered, no JavaScript
        c.post("/admin/signout", data={})
        c.cookies.clear()
        assert c.get("/admin/sites").status_code == 303


def test_a_changed_token_ends_sessions(admin, app, monkeypatch):
    assert admin.get("/admin/sites").status_code == 200
    monkeypatch.setattr(app.config, "admin_token", "a-new-token-0123456789")
    assert admin.get("/admin/sites").status_code == 303


def test_forms_need_the_csrf_token_and_the_admin_role(admin, viewer, site, receiver):
    add_endpoint(site, receiver.url)
    ev = emit(site)[0]
    page = admin.get(f"/admin/sites/{site.name}/events/{ev['id']}")
    assert page.status_code == 200 and "Resend" in page.text
    url = f"/admin/sites/{site.name}/events/{ev['id']}/resend"
    assert admin.post(url, data={}).status_code == 403
    assert admin.post(url, data={"csrf": "0" * 64}).status_code == 403
    # the read-only role sees the page without the button and cannot post the form
    seen = viewer.get(f"/admin/sites/{site.name}/events/{ev['id']}")
    assert seen.status_code == 200 and "Resend" not in seen.text
    r = viewer.post(url, data={"csrf": csrf(viewer.get("/admin/sites").text)})
    assert r.status_code == 403 and "read-only" in r.text
    ok = admin.post(url, data={"csrf": csrf(page.text)})
    assert ok.status_code == 303 and ok.headers["location"].endswith("?resent=1")


def test_site_pages_show_the_site(admin, site):
    cust = site.api.post("/customers", {"id": "cus_console", "email": "ada@example.com", "first_name": "Ada",
                                        "last_name": "Lovelace"})["customer"]
    site.api.post(f"/customers/{cust['id']}/add_account_credits", {"amount": 500, "description": "welcome"})
    inv = factories.invoice_id(site)
    site.setting(smtp_password="hunter2-not-shown")
    sites = admin.get("/admin/sites").text
    assert site.name in sites
    overview = admin.get(f"/admin/sites/{site.name}")
    assert overview.status_code == 200 and "invoices due" in overview.text and "full_access_key" in overview.text
    assert site.key not in overview.text and "hunter2" not in overview.text  # keys: hints only; no passwords
    for q in ("cus_console", "ada@example.com", "Ada", "Love"):
        found = admin.get(f"/admin/sites/{site.name}/customers", params={"q": q}).text
        assert "cus_console" in found, q
    assert "cus_console" not in admin.get(f"/admin/sites/{site.name}/customers", params={"q": "nobody"}).text
    detail = admin.get(f"/admin/sites/{site.name}/customers/cus_console").text
    assert "welcome" in detail and "USD 5.00" in detail  # the credits ledger
    listed = admin.get(f"/admin/sites/{site.name}/invoices", params={"status[is]": "payment_due"}).text
    link = f'/invoices/{inv}"'
    assert link in listed
    assert link not in admin.get(f"/admin/sites/{site.name}/invoices", params={"status[is]": "paid"}).text
    bad = admin.get(f"/admin/sites/{site.name}/invoices", params={"status[is]": "nonsense"})
    assert bad.status_code == 400 and "status" in bad.text
    page = admin.get(f"/admin/sites/{site.name}/invoices/{inv}")
    assert page.status_code == 200 and "Download PDF" in page.text
    pdf = admin.get(f"/admin/sites/{site.name}/invoices/{inv}/pdf")
    assert pdf.status_code == 303
    got = httpx.get(pdf.headers["location"])
    assert got.status_code == 200 and got.content.startswith(b"%PDF")
    for kind in ("subscriptions", "transactions", "events"):
        assert admin.get(f"/admin/sites/{site.name}/{kind}").status_code == 200
    assert admin.get("/admin/sites/no-such-site").status_code == 404


def test_an_event_page_shows_its_webhook_attempts(admin, site, receiver):
    receiver.status = 500
    add_endpoint(site, receiver.url)
    ev = emit(site)[0]
    wait_until(lambda: any(d["attempts"] for d in webhook_deliveries(site, ev["id"])), what="a first attempt")
    page = wait_until(lambda: (t := admin.get(f"/admin/sites/{site.name}/events/{ev['id']}").text)
                      and "HTTP 500" in t and t, what="the attempt on the page")
    assert "receiver says no" in page and " ms" in page


def test_create_a_test_site(admin):
    page = admin.get("/admin/sites")
    name = f"made-{uuid.uuid4().hex[:8]}"
    r = admin.post("/admin/sites", data={"csrf": csrf(page.text), "name": name, "currency": "EUR"})
    assert r.status_code == 200 and f"{name}-test" in r.text and "test_" in r.text
