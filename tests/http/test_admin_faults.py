"""Faults on purpose (issue 14, part 5): operation fault rules over the admin API, applied to
the v1 API over HTTP, on both stores. A struck call answers Chargebee's error JSON and changes
nothing; latency delays; the next N calls are counted exactly under concurrency; a seed
reproduces a probability's choices; no rule means no change, and one site's rules never touch
another site. (Webhook delivery modes: tests/delivery/test_webhook_faults.py.)"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from billhive.services import faults as fault_service
from tests.support.admin import Admin
from tests.support.delivery import add_endpoint
from tests.support.server import Api

TOKEN = "admin-token-for-fault-tests"


@pytest.fixture
def admin(server, monkeypatch) -> Admin:
    monkeypatch.setattr(server.app.config, "admin_token", TOKEN)
    return Admin(server.base_url, TOKEN)


def _faults(admin: Admin, site) -> str:
    return f"/sites/{site.name}/faults"


def _customers(site) -> list:
    return site.api.get("/customers", {"limit": 100})["list"]


def test_no_rules_no_change_and_no_database_read_per_call(admin, site, monkeypatch):
    """Off by default: calls answer as ever, and the gate reads which sites have rules at most once
    per cache period for the whole process, never a site's rules while it has none."""
    assert admin.get(_faults(admin, site)).body == {"list": [], "webhook_endpoints": []}
    reads = {"sites": 0, "rules": 0}
    sites_with_rules, site_rules = fault_service.sites_with_rules, fault_service.site_rules

    def count_sites(tx):
        reads["sites"] += 1
        return sites_with_rules(tx)

    def count_rules(tx, pk):
        reads["rules"] += 1
        return site_rules(tx, pk)
    monkeypatch.setattr(fault_service, "sites_with_rules", count_sites)
    monkeypatch.setattr(fault_service, "site_rules", count_rules)
    for i in range(20):
        site.api.post("/customers", {"first_name": f"Ada{i}"})
    assert len(_customers(site)) == 20
    assert reads["sites"] <= 1 and reads["rules"] == 0


def test_the_next_n_calls_answer_the_error_and_change_nothing(admin, site):
    rule = admin.post(_faults(admin, site), {"operation": "create_a_customer", "status": 503, "times": 2})["fault_rule"]
    assert rule["operation"] == "create_a_customer" and rule["remaining"] == 2 and rule["calls"] == 0
    assert (rule["api_error_code"], rule["type"]) == ("internal_temporary_error", "operation_failed")
    for _ in range(2):
        r = site.api.post("/customers", {"first_name": "Ada"}, expect=503)
        assert r.body["api_error_code"] == "internal_temporary_error" and r.body["type"] == "operation_failed"
        assert r.body["http_status_code"] == 503
        assert r.body["error_code"] == "internal_temporary_error" and r.body["error_msg"] == r.body["message"]
        assert r.headers["retry-after"] == "1"
    assert _customers(site) == [] and site.api.get("/events").body == {"list": []}  # nothing happened
    site.api.post("/customers", {"first_name": "Ada"})  # the third call runs
    assert len(_customers(site)) == 1
    (listed,) = admin.get(_faults(admin, site))["list"]
    assert listed["fault_rule"]["calls"] == 2 and listed["fault_rule"]["struck"] == 2
    assert listed["fault_rule"]["remaining"] == 0


def test_other_operations_and_other_sites_are_untouched(admin, make_site):
    a, b = make_site(), make_site()
    admin.post(_faults(admin, a), {"operation": "create_a_customer", "status": 500})
    a.api.post("/customers", {"first_name": "Ada"}, expect=500)
    b.api.post("/customers", {"first_name": "Bob"})  # another site: no rule, no fault
    assert [c["customer"]["first_name"] for c in _customers(b)] == ["Bob"]
    assert _customers(a) == []  # list_customers is another operation of a: not faulted
    (rule,) = admin.get(_faults(admin, a))["list"]
    assert rule["fault_rule"]["calls"] == 1  # b's call and a's list were never counted
    assert admin.get(_faults(admin, b))["list"] == []


def test_a_chosen_code_type_message_and_param(admin, site):
    admin.post(_faults(admin, site), {"operation": "POST /customers", "status": 400,
                                      "api_error_code": "payment_processing_failed", "message": "card declined",
                                      "param": "card[number]", "times": 1})
    r = site.api.post("/customers", {"first_name": "Ada"}, expect=400)
    assert r.body["type"] == "payment" and r.body["api_error_code"] == "payment_processing_failed"
    assert r.body["message"] == "card declined" and r.body["param"] == "card[number]"
    assert r.body["error_param"] == "card[number]"
    admin.post(_faults(admin, site), {"operation": "list_customers", "status": 429, "times": 1})
    r = site.api.get("/customers", expect=429)
    assert r.body["api_error_code"] == "api_request_limit_exceeded" and r.headers["retry-after"] == "1"


def test_every_operation_with_a_star(admin, site):
    admin.post(_faults(admin, site), {"operation": "*", "status": 404, "times": 3})
    site.api.get("/customers", expect=404)
    site.api.post("/plans", {"id": "p", "name": "P", "price": 100}, expect=404)
    site.api.get("/events", expect=404)
    site.api.get("/customers")


@pytest.mark.parametrize("body, param", [
    ({"status": 503}, "operation"),
    ({"operation": "no_such_operation", "status": 503}, "operation"),
    ({"operation": "GET /nowhere", "status": 503}, "operation"),
    ({"operation": "create_a_customer"}, "status"),
    ({"operation": "create_a_customer", "status": 418}, "status"),
    ({"operation": "create_a_customer", "status": 503, "api_error_code": "internal_error"}, "api_error_code"),
    ({"operation": "create_a_customer", "status": 500, "type": "payment"}, "type"),
    ({"operation": "create_a_customer", "status": 503, "probability": 0}, "probability"),
    ({"operation": "create_a_customer", "status": 503, "probability": 1.5}, "probability"),
    ({"operation": "create_a_customer", "status": 503, "times": 0}, "times"),
    ({"operation": "create_a_customer", "latency_ms": 30_001}, "latency_ms"),
    ({"operation": "create_a_customer", "latency_ms": 10, "message": "x"}, "message"),
    ({"operation": "create_a_customer", "status": 503, "colour": "red"}, "colour"),
])
def test_bad_rules_name_the_field_and_store_nothing(admin, site, body, param):
    assert admin.post(_faults(admin, site), body, expect=400)["param"] == param
    assert admin.get(_faults(admin, site))["list"] == []
    site.api.post("/customers", {"first_name": "Ada"})


def test_latency_delays_the_call_which_then_runs(admin, site):
    admin.post(_faults(admin, site), {"operation": "create_a_customer", "latency_ms": 400, "times": 1})
    started = time.monotonic()
    site.api.post("/customers", {"first_name": "Ada"})
    assert time.monotonic() - started >= 0.4
    assert len(_customers(site)) == 1
    started = time.monotonic()
    site.api.post("/customers", {"first_name": "Bob"})  # the rule's one call is spent
    assert time.monotonic() - started < 0.4


def test_latency_then_error(admin, site):
    admin.post(_faults(admin, site), {"operation": "create_a_customer", "latency_ms": 300, "status": 503})
    started = time.monotonic()
    site.api.post("/customers", {"first_name": "Ada"}, expect=503)
    assert time.monotonic() - started >= 0.3
    assert _customers(site) == []


def test_next_n_is_exact_under_concurrency(admin, site):
    admin.post(_faults(admin, site), {"operation": "create_a_customer", "status": 503, "times": 7})

    def call(i: int) -> int:
        return site.api.with_key(site.key).post("/customers", {"first_name": f"C{i}"}, expect=None).status
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(call, range(40)))
    assert statuses.count(503) == 7 and statuses.count(200) == 33
    assert len(_customers(site)) == 33
    (rule,) = admin.get(_faults(admin, site))["list"]
    assert (rule["fault_rule"]["calls"], rule["fault_rule"]["struck"]) == (7, 7)


def _pattern(admin: Admin, site, seed: int | None) -> tuple[list[int], dict]:
    body = {"operation": "list_customers", "status": 503, "probability": 0.5, "times": 40}
    if seed is not None:
        body["seed"] = seed
    rule = admin.post(_faults(admin, site), body)["fault_rule"]
    statuses = [site.api.get("/customers", expect=None).status for _ in range(40)]
    admin.delete(f"/sites/{site.name}/faults/{rule['id']}")
    return statuses, rule


def test_a_seed_reproduces_a_probability(admin, site, make_site):
    first, rule = _pattern(admin, site, 20261203)
    again, _ = _pattern(admin, make_site(), 20261203)  # another site, the same seed: the same calls
    assert first == again
    assert 5 <= first.count(503) <= 35 and set(first) == {200, 503}  # a coin, not a constant
    other, _ = _pattern(admin, site, 7)
    assert other != first
    assert rule["seed"] == 20261203 and rule["probability"] == 0.5
    unseeded, shown = _pattern(admin, site, None)  # a random seed, shown so a run can be replayed
    replayed, _ = _pattern(admin, site, shown["seed"])
    assert unseeded == replayed


def test_a_faulted_call_does_not_take_its_idempotency_key(admin, site):
    admin.post(_faults(admin, site), {"operation": "create_a_customer", "status": 503, "times": 1})
    headers = {"chargebee-idempotency-key": "retry-me"}
    site.api.post("/customers", {"first_name": "Ada"}, headers=headers, expect=503)
    made = site.api.post("/customers", {"first_name": "Ada"}, headers=headers)["customer"]
    again = site.api.post("/customers", {"first_name": "Ada"}, headers=headers)["customer"]
    assert made["id"] == again["id"] and len(_customers(site)) == 1


def test_faults_need_the_admin_token_and_auth_still_comes_first(admin, site, server):
    admin.post(_faults(admin, site), {"operation": "*", "status": 503}, token=None, expect=401)
    admin.post(_faults(admin, site), {"operation": "*", "status": 503})
    wrong = Api(server, site.name, "test_wrong_key")
    assert wrong.get("/customers", expect=401)["api_error_code"] == "api_authentication_failed"
    ro = site.api.with_key(site.read_only_key)
    ro.post("/customers", {"first_name": "No"}, expect=403)  # the key's privileges are checked first
    admin.get("/sites/no-such-site-test/faults", expect=404)


def test_delete_one_rule_or_all(admin, site):
    one = admin.post(_faults(admin, site), {"operation": "create_a_customer", "status": 503})["fault_rule"]
    admin.post(_faults(admin, site), {"operation": "list_customers", "status": 500})
    gone = admin.delete(f"/sites/{site.name}/faults/{one['id']}")["fault_rule"]
    assert gone["id"] == one["id"] and gone["deleted"] is True
    site.api.post("/customers", {"first_name": "Ada"})  # at once in this process
    site.api.get("/customers", expect=500)
    admin.delete(f"/sites/{site.name}/faults/{one['id']}", expect=404)
    cleared = admin.delete(_faults(admin, site))["faults"]
    assert cleared["fault_rules_deleted"] == 1
    assert len(_customers(site)) == 1


def test_reset_keeps_rules_delete_drops_them(admin, server):
    site = admin.post("/sites")["site"]
    api = Api(server, site["name"], site["api_key"], use_host=False)
    admin.post(f"/sites/{site['name']}/faults", {"operation": "create_a_customer", "status": 503})
    admin.post(f"/sites/{site['name']}/reset")
    api.post("/customers", {"first_name": "Ada"}, expect=503)  # a setting, like webhook endpoints
    admin.delete(f"/sites/{site['name']}")
    admin.get(f"/sites/{site['name']}/faults", expect=404)


def test_documented_in_openapi(server):
    doc = httpx.get(server.base_url + "/openapi.json").json()
    item = doc["paths"]["/admin/api/sites/{name}/faults"]
    assert item["post"]["operationId"] == "admin_add_fault_rule"
    assert item["post"]["security"] == [{"billhive_admin_token": []}]
    assert {"operation", "status", "probability", "seed", "times", "latency_ms"} <= \
        set(item["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"])
    assert "delete" in doc["paths"]["/admin/api/sites/{name}/faults/{id}"]
    hook = doc["paths"]["/admin/api/sites/{name}/webhook_endpoints/{id}/fault"]
    assert {"get", "post", "delete"} <= set(hook)
    assert "AdminFaultRule" in doc["components"]["schemas"]


def test_the_readme_snippet_bodies_are_accepted(admin, site):
    """The README's "Faults on purpose": each body it posts is accepted as printed."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    text = readme.split("### Faults on purpose", 1)[1].split("\n### ", 1)[0]
    calls = re.findall(r"\$S(/\S+) \\?\s*-d '([^']+)'", text, flags=re.S)
    assert len(calls) == 3, calls
    ep = add_endpoint(site, "http://127.0.0.1:9/hook", endpoint_id="wh_1")
    for path, body in calls:
        admin.post(f"/sites/{site.name}{path.replace('wh_1', ep.id)}", json.loads(body))
    listed = admin.get(_faults(admin, site))
    assert len(listed["list"]) == 2 and [e["endpoint_id"] for e in listed["webhook_endpoints"]] == ["wh_1"]
    admin.delete(_faults(admin, site))
    assert admin.get(_faults(admin, site)).body == {"list": [], "webhook_endpoints": []}
