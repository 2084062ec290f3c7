"""/portal_sessions: create, retrieve, activate, logout; and the portal page behind access_url."""

from __future__ import annotations

from urllib.parse import urlparse

import httpx
import pytest

from tests.support import factories as F
from tests.support import timemachine

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def tsite(site):
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


def travel(site, to: int) -> None:
    timemachine.travel(site.api, to)


def create(site, customer_id: str, **extra) -> dict:
    return site.api.post("/portal_sessions", {"customer[id]": customer_id, **extra})["portal_session"]


def browser(site) -> httpx.Client:
    """A browser: keeps cookies, follows nothing by itself."""
    return httpx.Client(base_url=site.api.server.base_url, timeout=30)


def path_of(session: dict) -> str:
    return urlparse(session["access_url"]).path


def test_create_and_retrieve(tsite):
    cust = F.customer(tsite, email="ada@example.com")
    s = create(tsite, cust["id"], redirect_url="https://example.com/account")
    assert s["id"].startswith("portal_") and s["status"] == "created"
    assert s["created_at"] == GENESIS and s["expires_at"] == GENESIS + 3600
    assert s["customer_id"] == cust["id"] and s["redirect_url"] == "https://example.com/account"
    assert s["access_url"] == f"{tsite.api.server.base_url}/portal/{tsite.name}/{s['token']}"
    assert len(s["token"]) <= 70 and len(s["access_url"]) <= 550
    assert s["linked_customers"] == [{"customer_id": cust["id"], "email": "ada@example.com",
                                      "has_billing_address": False, "has_payment_method": True,
                                      "has_active_subscription": False, "object": "linked_customer"}]
    assert tsite.api.get(f"/portal_sessions/{s['id']}")["portal_session"] == s
    for key in ("login_at", "logout_at", "login_ipaddress", "logout_ipaddress"):
        assert key not in s
    # a second session gets another id and token
    s2 = create(tsite, cust["id"])
    assert s2["id"] != s["id"] and s2["token"] != s["token"] and "redirect_url" not in s2


def test_linked_customer_reports_live_subscription(tsite):
    cust = F.customer(tsite, card=None)
    F.subscription(tsite, cust["id"], status="cancelled")
    (lc,) = create(tsite, cust["id"])["linked_customers"]
    assert lc["has_active_subscription"] is False and lc["has_payment_method"] is False
    F.subscription(tsite, cust["id"], status="in_trial")
    assert create(tsite, cust["id"])["linked_customers"][0]["has_active_subscription"] is True


@pytest.mark.parametrize("params, status, param", [
    ({}, 400, "customer[id]"),
    ({"customer[id]": "nope"}, 404, "customer[id]"),
    ({"customer[id]": "c" * 51}, 400, "customer[id]"),
    ({"customer[id]": "c", "redirect_url": "javascript:alert(1)"}, 400, "redirect_url"),
    ({"customer[id]": "c", "redirect_url": "https://x/" + "a" * 250}, 400, "redirect_url"),
    ({"customer[id]": "c", "forward_url": "https://example.com"}, 400, "forward_url"),
])
def test_create_bad_input(tsite, params, status, param):
    r = tsite.api.post("/portal_sessions", params, expect=status)
    assert r["param"] == param


def test_activate_with_matching_token(tsite):
    cust = F.customer(tsite)
    s = create(tsite, cust["id"])
    r = tsite.api.post(f"/portal_sessions/{s['id']}/activate", {"token": "wrong"}, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == "token"
    tsite.api.post(f"/portal_sessions/{s['id']}/activate", {}, expect=400)
    a = tsite.api.post(f"/portal_sessions/{s['id']}/activate", {"token": s["token"]})["portal_session"]
    assert a["status"] == "activated" and a["id"] == s["id"]
    assert tsite.api.get(f"/portal_sessions/{s['id']}")["portal_session"] == a
    # a token is validated once
    r = tsite.api.post(f"/portal_sessions/{s['id']}/activate", {"token": s["token"]}, expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"


def test_activate_after_expiry_or_logout_is_409(tsite):
    cust = F.customer(tsite)
    s = create(tsite, cust["id"])
    travel(tsite, GENESIS + 3600)
    r = tsite.api.post(f"/portal_sessions/{s['id']}/activate", {"token": s["token"]}, expect=409)
    assert r["api_error_code"] == "invalid_state_for_request"
    s2 = create(tsite, cust["id"])
    tsite.api.post(f"/portal_sessions/{s2['id']}/logout")
    tsite.api.post(f"/portal_sessions/{s2['id']}/activate", {"token": s2["token"]}, expect=409)


def test_logout_from_each_status_and_twice(tsite):
    cust = F.customer(tsite)
    created = create(tsite, cust["id"])
    travel(tsite, GENESIS + 10)
    out = tsite.api.post(f"/portal_sessions/{created['id']}/logout",
                         headers={"chargebee-request-origin-ip": "203.0.113.9"})["portal_session"]
    assert out["status"] == "logged_out" and out["logout_at"] == GENESIS + 10
    assert out["logout_ipaddress"] == "203.0.113.9"
    travel(tsite, GENESIS + 20)
    again = tsite.api.post(f"/portal_sessions/{created['id']}/logout")["portal_session"]
    assert again == out  # logged_out: returned unchanged
    activated = create(tsite, cust["id"])
    tsite.api.post(f"/portal_sessions/{activated['id']}/activate", {"token": activated["token"]})
    assert tsite.api.post(f"/portal_sessions/{activated['id']}/logout")["portal_session"]["status"] == "logged_out"


def test_unknown_session_is_404(tsite):
    for method, path, data in (("GET", "/portal_sessions/portal_nope", None),
                               ("POST", "/portal_sessions/portal_nope/logout", None),
                               ("POST", "/portal_sessions/portal_nope/activate", {"token": "t"})):
        r = tsite.api.request(method, path, data=data, expect=404)
        assert r["api_error_code"] == "resource_not_found"


def test_read_only_key_cannot_create_or_logout(tsite):
    cust = F.customer(tsite)
    s = create(tsite, cust["id"])
    ro = tsite.api.with_key(tsite.read_only_key)
    assert ro.get(f"/portal_sessions/{s['id']}")["portal_session"]["id"] == s["id"]
    ro.post("/portal_sessions", {"customer[id]": cust["id"]}, expect=403)
    ro.post(f"/portal_sessions/{s['id']}/logout", expect=403)
    ro.post(f"/portal_sessions/{s['id']}/activate", {"token": s["token"]}, expect=403)


def test_another_sites_sessions_and_customers_stay_invisible(tsite, make_site):
    other = make_site()
    theirs_customer = F.customer(other)
    theirs = create(other, theirs_customer["id"])
    tsite.api.get(f"/portal_sessions/{theirs['id']}", expect=404)
    tsite.api.post(f"/portal_sessions/{theirs['id']}/logout", expect=404)
    tsite.api.post(f"/portal_sessions/{theirs['id']}/activate", {"token": theirs["token"]}, expect=404)
    r = tsite.api.post("/portal_sessions", {"customer[id]": theirs_customer["id"]}, expect=404)
    assert r["param"] == "customer[id]"
    # their access URL does not open under our site's name
    with browser(tsite) as b:
        assert b.get(f"/portal/{tsite.name}/{theirs['token']}").status_code == 404
    assert other.api.get(f"/portal_sessions/{theirs['id']}")["portal_session"]["status"] == "created"


# ---- the portal page ---------------------------------------------------------------------------

def test_access_url_logs_in_once_and_keeps_the_browser_in(tsite):
    cust = F.customer(tsite, email="ada@example.com")
    sub = F.subscription(tsite, cust["id"])
    draft = F.pending_invoice(tsite, cust["id"], ((700, "Usage"),))
    closing = F.pending_invoice(tsite, cust["id"], ((2500, "Seats"),))
    inv = tsite.api.post(f"/invoices/{closing['id']}/collect")["invoice"]
    s = create(tsite, cust["id"], redirect_url="https://example.com/bye")
    travel(tsite, GENESIS + 60)
    with browser(tsite) as b:
        page = b.get(path_of(s))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
        for text in ("ada@example.com", sub["id"], "basic", "paid", "USD 25.00"):
            assert text in page.text
        assert f"<td>{inv['id']}</td>" in page.text and draft["id"] not in page.text  # no drafts
        got = tsite.api.get(f"/portal_sessions/{s['id']}")["portal_session"]
        assert got["status"] == "logged_in" and got["login_at"] == GENESIS + 60
        assert got["login_ipaddress"] == "127.0.0.1"
        assert b.get(path_of(s)).status_code == 200  # same browser: its cookie
        with browser(tsite) as stranger:  # the URL alone no longer opens the portal
            assert stranger.get(path_of(s)).status_code == 404
        out = b.post(path_of(s) + "/logout")
        assert out.status_code == 303 and out.headers["location"] == "https://example.com/bye"
        assert b.get(path_of(s)).status_code == 404
    got = tsite.api.get(f"/portal_sessions/{s['id']}")["portal_session"]
    assert got["status"] == "logged_out" and got["logout_at"] == GENESIS + 60
    assert got["logout_ipaddress"] == "127.0.0.1"


def test_access_url_expires_after_an_hour(tsite):
    cust = F.customer(tsite)
    s = create(tsite, cust["id"])
    travel(tsite, GENESIS + 3600)
    with browser(tsite) as b:
        assert b.get(path_of(s)).status_code == 404
    assert tsite.api.get(f"/portal_sessions/{s['id']}")["portal_session"]["status"] == "created"


def test_activated_session_opens_and_logged_out_does_not(tsite):
    cust = F.customer(tsite)
    s = create(tsite, cust["id"])
    tsite.api.post(f"/portal_sessions/{s['id']}/activate", {"token": s["token"]})
    with browser(tsite) as b:
        assert b.get(path_of(s)).status_code == 200
        assert tsite.api.get(f"/portal_sessions/{s['id']}")["portal_session"]["status"] == "activated"
        tsite.api.post(f"/portal_sessions/{s['id']}/logout")
        assert b.get(path_of(s)).status_code == 404


def test_portal_logout_without_redirect_url_shows_a_page(tsite):
    cust = F.customer(tsite)
    s = create(tsite, cust["id"])
    with browser(tsite) as b:
        r = b.post(path_of(s) + "/logout")
        assert r.status_code == 200 and "logged out" in r.text
    assert tsite.api.get(f"/portal_sessions/{s['id']}")["portal_session"]["status"] == "logged_out"


def test_portal_escapes_customer_data(tsite):
    cust = F.customer(tsite, email="x@example.com")

    def rename(w):  # a name with markup in it
        from billhive.store.resources import CUSTOMERS
        doc = CUSTOMERS.get(w.tx, w.site_id, cust["id"])
        doc["first_name"] = "<script>alert(1)</script>"
        CUSTOMERS.save(w.tx, w.site_id, doc, w.now)
    tsite.ctx().write_sync(rename)
    s = create(tsite, cust["id"])
    with browser(tsite) as b:
        page = b.get(path_of(s)).text
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize("path", ["/portal/no-such-site/abc", "/portal/UPPER/abc", "/portal/{site}/not-a-token"])
def test_unknown_portal_links_are_404(tsite, path):
    with browser(tsite) as b:
        r = b.get(path.format(site=tsite.name))
        assert r.status_code == 404 and "not valid" in r.text
        assert b.post(path.format(site=tsite.name) + "/logout").status_code == 404


def test_factory_makes_a_session(tsite):
    assert tsite.api.get(f"/portal_sessions/{F.portal_session_id(tsite)}")["portal_session"]["status"] == "created"
