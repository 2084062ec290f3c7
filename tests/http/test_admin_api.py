"""The admin API (/admin/api): test sites with their keys over HTTP, behind the admin token.

Not a Chargebee API (Chargebee makes test sites in its web app); its errors are Chargebee's error
JSON so the same clients can read them, and it is documented in billhive's /openapi.json."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from sqlalchemy import update

from billhive.store import schema as S
from tests.support.admin import Admin
from tests.support.server import Api

TOKEN = "admin-token-for-tests"


@pytest.fixture
def admin(server, monkeypatch) -> Admin:
    monkeypatch.setattr(server.app.config, "admin_token", TOKEN)
    return Admin(server.base_url, TOKEN)


def _api(server, site: dict, key: str | None = None) -> Api:
    return Api(server, site["name"], key or site["api_key"], use_host=False)  # the key chooses the site


def test_off_without_a_token(server):
    assert server.app.config.admin_token is None
    r = Admin(server.base_url, "anything").get("/sites", expect=404)
    assert r["api_error_code"] == "resource_not_found"


def test_only_the_admin_token_gets_in(admin, server, site):
    assert admin.get("/sites", token=None, expect=401)["api_error_code"] == "api_authentication_failed"
    assert admin.get("/sites", token="wrong", expect=401)["api_error_code"] == "api_authentication_failed"
    admin.get("/sites", token=site.key, expect=401)  # never a site's key
    basic = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()
    r = httpx.get(server.base_url + "/admin/api/sites", headers={"authorization": basic})
    assert r.status_code == 200  # curl -u TOKEN: works too


def test_create_a_site_and_use_its_keys(admin, server):
    site = admin.post("/sites", {"currency_code": "EUR"})["site"]
    assert site["name"].endswith("-test") and site["test_site"] is True and site["currency_code"] == "EUR"
    assert site["api_url"] == server.base_url + "/api/v1"
    assert site["time_travel_status"] == "not_enabled"
    api = _api(server, site)
    cust = api.post("/customers", {"first_name": "Ada"})["customer"]
    assert api.get(f"/customers/{cust['id']}")["customer"]["first_name"] == "Ada"
    ro = _api(server, site, site["read_only_key"])
    ro.get(f"/customers/{cust['id']}")
    assert ro.post("/customers", {"first_name": "No"}, expect=403)["api_error_code"] == "api_authorization_failed"

    named = admin.post("/sites", {"name": f"{site['name'][:-5]}-b-test", "metered_billing": True})["site"]
    assert named["name"] == f"{site['name'][:-5]}-b-test"
    listed = {s["site"]["name"] for s in admin.get("/sites")["list"]}
    assert {site["name"], named["name"]} <= listed
    got = admin.get(f"/sites/{site['name']}")["site"]
    assert "api_key" not in got and got["name"] == site["name"]  # keys are shown once


@pytest.mark.parametrize("body, param", [
    ({"name": "not-a-test-site"}, "name"),
    ({"name": "Bad_Name-test"}, "name"),
    ({"currency_code": "euro"}, "currency_code"),
    ({"metered_billing": "yes"}, "metered_billing"),
])
def test_bad_input_names_the_parameter(admin, body, param):
    before = len(admin.get("/sites")["list"])
    r = admin.post("/sites", body, expect=400)
    assert r["param"] == param
    assert len(admin.get("/sites")["list"]) == before  # nothing made


def test_a_taken_name_and_bad_bodies(admin):
    site = admin.post("/sites")["site"]
    assert admin.post("/sites", {"name": site["name"]}, expect=400)["param"] == "name"
    admin.request("POST", "/sites", content=b"{not json", headers={"content-type": "application/json"}, expect=400)
    admin.request("POST", "/sites", content=b"name=x", headers={"content-type": "application/x-www-form-urlencoded"},
                  expect=400)
    assert admin.get("/sites/no-such-site-test", expect=404)["api_error_code"] == "resource_not_found"
    admin.delete("/sites/no-such-site-test", expect=404)


def test_rotate_keys_revokes_the_old_ones_at_once(admin, server):
    site = admin.post("/sites")["site"]
    old = _api(server, site)
    old.get("/customers")
    rotated = admin.post(f"/sites/{site['name']}/rotate_keys")["site"]
    assert rotated["api_key"] != site["api_key"] and rotated["read_only_key"] != site["read_only_key"]
    assert old.get("/customers", expect=401)["api_error_code"] == "api_authentication_failed"
    _api(server, site, site["read_only_key"]).get("/customers", expect=401)
    _api(server, site, rotated["api_key"]).get("/customers")


def test_reset_wipes_data_and_the_time_machine_but_keeps_keys(admin, server):
    site = admin.post("/sites")["site"]
    api = _api(server, site)
    api.post("/customers", {"first_name": "Ada"})
    api.post("/time_machines/delorean/start_afresh", {"genesis_time": 1_700_000_000})
    assert admin.get(f"/sites/{site['name']}")["site"]["time_travel_status"] == "succeeded"
    reset = admin.post(f"/sites/{site['name']}/reset")["site"]
    assert reset["time_travel_status"] == "not_enabled"
    assert api.get("/customers").body == {"list": []}
    assert api.get("/time_machines/delorean")["time_machine"]["time_travel_status"] == "not_enabled"
    assert api.get("/events").body == {"list": []}


def test_delete_removes_the_site_and_its_keys(admin, server):
    site = admin.post("/sites")["site"]
    api = _api(server, site)
    api.post("/customers", {"first_name": "Ada"})
    assert admin.delete(f"/sites/{site['name']}")["site"] == {"name": site["name"], "deleted": True}
    api.get("/customers", expect=401)
    admin.get(f"/sites/{site['name']}", expect=404)
    assert site["name"] not in {s["site"]["name"] for s in admin.get("/sites")["list"]}


def test_documented_in_openapi_beside_the_v1_operations(server):
    doc = httpx.get(server.base_url + "/openapi.json").json()
    item = doc["paths"]["/admin/api/sites"]
    assert item["servers"] == [{"url": server.base_url}]
    assert item["post"]["operationId"] == "admin_create_site"
    assert item["post"]["security"] == [{"billhive_admin_token": []}]
    assert doc["components"]["securitySchemes"]["billhive_admin_token"]["scheme"] == "bearer"
    assert "/customers" in doc["paths"]  # v1, under the /api/v1 server


# SQLite only (the budget is SQLite's): a PostgreSQL variant that skips would still wait for the
# other workers to stop (an `alone` test takes the lock before its body runs) only to do nothing
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")
@pytest.mark.alone
def test_creating_a_site_is_fast_on_sqlite(admin, server, backend):
    """The issue's budget: p99 under 50 ms on SQLite, for a test suite making a site per test.
    Measured over HTTP; a loaded machine's own commit latency (a trivial committed write through
    the same store, measured here too) is allowed on top, as it is no cost of creating a site."""
    admin.post("/sites")  # warm (and held to the contract once)
    took, commits = [], []
    with httpx.Client(base_url=admin.client.base_url, headers={"authorization": f"Bearer {TOKEN}"}) as client:
        for _ in range(100):
            started = time.perf_counter()
            assert client.post("/admin/api/sites").status_code == 200
            took.append(time.perf_counter() - started)
            started = time.perf_counter()
            server.app.db.write_sync(lambda tx: tx.execute(update(S.sites).where(S.sites.c.pk == 0).values(
                config_version=S.sites.c.config_version + 1)))
            commits.append(time.perf_counter() - started)
    took.sort()
    commits.sort()
    assert took[98] < 0.050 + commits[98], (f"p99 {took[98] * 1000:.1f} ms (median {took[50] * 1000:.1f} ms); "
                                            f"a trivial commit's p99 here: {commits[98] * 1000:.1f} ms")
