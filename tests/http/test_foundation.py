"""The wire contract every operation shares: hosts and keys, errors, parameters, lists."""

from __future__ import annotations

import base64
import time

import httpx

from billhive import sites
from billhive.work.context import Origin
from tests.support import documents
from tests.support.server import Api


def _event(site, event_type: str = "customer_created", **origin) -> dict:
    """Record one event directly (as a service would), for list/retrieve tests."""
    from billhive.work.context import Work

    def unit(tx):
        w = Work(tx, site.app, sites.load(tx, site.pk), Origin(user="test", **origin))
        return w.emit(event_type, {"customer": {**documents.CUSTOMER, "id": "c1"}})
    return site.app.db.write_sync(unit)


def test_events_list_empty_then_listed(api, site):
    assert api.get("/events").body == {"list": []}
    ev = _event(site)
    body = api.get("/events").body
    assert [e["event"]["id"] for e in body["list"]] == [ev["id"]]
    got = api.get(f"/events/{ev['id']}").body["event"]
    assert got["event_type"] == "customer_created"
    assert got["source"] == "api" and got["user"] == "test"
    assert got["webhook_status"] == "not_configured"
    assert got["content"]["customer"]["id"] == "c1"


def test_host_without_site_resolves_site_from_key(server, site):
    _event(site)
    plain = Api(server, site.name, site.key, use_host=False)
    assert len(plain.get("/events").body["list"]) == 1


def test_bad_key_is_401_and_missing_key_is_401(api):
    r = api.with_key("test_wrong").get("/events", expect=401)
    assert r["api_error_code"] == "api_authentication_failed"
    assert r["error_code"] == "api_authentication_failed"
    r = api.with_key(None).get("/events", expect=401)
    assert r["api_error_code"] == "api_authentication_failed"


def test_key_of_another_site_is_401(server, site, make_site):
    other = make_site()
    r = Api(server, site.name, other.key).get("/events", expect=401)
    assert r["api_error_code"] == "api_authentication_failed"


def test_unknown_site_is_404_site_not_found(server, site):
    r = Api(server, "no-such-site-test", site.key).get("/events", expect=404)
    assert r["api_error_code"] == "site_not_found"


def test_unknown_route_is_404_json(api):
    r = api.get("/no_such_resource", expect=404)
    assert r["api_error_code"] == "resource_not_found"
    r = httpx.get(f"{api.server.base_url}/nothing/here")
    assert r.status_code == 404 and r.json()["api_error_code"] == "resource_not_found"


def test_wrong_method_is_405(api):
    r = api.request("DELETE", "/events", expect=405)
    assert r["api_error_code"] == "http_method_not_supported"


def test_read_only_key_cannot_write(api, site):
    ro = api.with_key(site.read_only_key)
    assert ro.get("/events").status == 200
    r = ro.post("/time_machines/delorean/travel_forward", {"destination_time": int(time.time()) + 3600}, expect=403)
    assert r["api_error_code"] == "api_authorization_failed"
    assert api.get("/time_machines/delorean")["time_machine"]["time_travel_status"] == "not_enabled"


def test_unknown_parameter_is_rejected(api):
    r = api.get("/events", {"colour": "red"}, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == "colour"


def test_wrong_enum_value(api):
    r = api.get("/events", {"event_type": "customer_exploded"}, expect=400)
    assert r["param"] == "event_type" and r["api_error_code"] == "param_wrong_value"


def test_value_over_max_length(api):
    r = api.get("/events", {"offset": "x" * 1001}, expect=400)
    assert r["param"] == "offset"


def test_limit_bounds_and_type(api):
    assert api.get("/events", {"limit": 0}, expect=400)["param"] == "limit"
    assert api.get("/events", {"limit": 101}, expect=400)["param"] == "limit"
    assert api.get("/events", {"limit": "ten"}, expect=400)["param"] == "limit"


def test_malformed_form_body(api, site):
    for body, ctype in [(b"destination_time=%zz", "application/x-www-form-urlencoded"),
                        (b"destination_time=\xff\xfe", "application/x-www-form-urlencoded"),
                        (b'{"destination_time": 1}', "application/json"),
                        (b"=5", "application/x-www-form-urlencoded")]:
        r = api.request("POST", "/time_machines/delorean/travel_forward", content=body,
                        headers={"Content-Type": ctype}, expect=400)
        assert r["api_error_code"] == "param_wrong_value", body
    assert api.get("/time_machines/delorean")["time_machine"]["time_travel_status"] == "not_enabled"


def test_required_param_missing(api):
    r = api.post("/time_machines/delorean/travel_forward", {}, expect=400)
    assert r["param"] == "destination_time" and r["error_code"] == "param_not_present"


def test_origin_headers_are_stored_on_events_and_encoded_wins(server, site):
    # origin headers are read on every request; check them through a recorded event
    api = site.api
    enc = base64.b64encode("jörg@example.com".encode()).decode()
    now = api.get("/time_machines/delorean")["time_machine"]["destination_time"]
    api.post("/time_machines/delorean/travel_forward", {"destination_time": now + 10},
             headers={"chargebee-request-origin-user": "plain@example.com",
                      "chargebee-request-origin-user-encoded": enc,
                      "chargebee-request-origin-ip": "10.1.2.3",
                      "chargebee-request-origin-device": "Android"})
    bad = api.get("/events", headers={"chargebee-request-origin-ip": "not-an-ip"}, expect=400)
    assert bad["param"] == "chargebee-request-origin-ip"
    bad = api.get("/events", headers={"chargebee-request-origin-user-encoded": "%%%"}, expect=400)
    assert bad["param"] == "chargebee-request-origin-user-encoded"


def test_skip_headers_accept_only_all_disabled(api):
    for h in ("chargebee-event-actions", "chargebee-event-webhook", "chargebee-event-email"):
        assert api.get("/events", headers={h: "all-disabled"}).status == 200
        r = api.get("/events", headers={h: "yes"}, expect=400)
        assert r["param"] == h


def test_skip_flags_mark_events_skipped(site):
    ev = _event(site)
    assert ev["webhook_status"] == "not_configured"
    from billhive.work.context import Work

    def unit(tx):
        w = Work(tx, site.app, sites.load(tx, site.pk), Origin(user="t", skip_webhooks=True))
        return w.emit("customer_changed", {"customer": {"id": "c1"}})
    assert site.app.db.write_sync(unit)["webhook_status"] == "skipped"


def test_pagination_is_stable_under_inserts(api, site):
    ids = [_event(site)["id"] for _ in range(25)]
    page1 = api.get("/events", {"limit": 10}).body
    assert "next_offset" in page1
    for _ in range(5):  # new events arrive between pages
        _event(site)
    page2 = api.get("/events", {"limit": 10, "offset": page1["next_offset"]}).body
    page3 = api.get("/events", {"limit": 10, "offset": page2["next_offset"]}).body
    assert "next_offset" not in page3
    seen = [e["event"]["id"] for p in (page1, page2, page3) for e in p["list"]]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == set(ids)


def test_next_offset_absent_when_no_more(api, site):
    for _ in range(3):
        _event(site)
    body = api.get("/events", {"limit": 3}).body
    assert len(body["list"]) == 3 and "next_offset" not in body


def test_bad_offset_is_param_error(api):
    assert api.get("/events", {"offset": "garbage!!"}, expect=400)["param"] == "offset"


def test_spec_event_filters(api, site):
    _event(site, "customer_created")
    _event(site, "customer_changed")
    body = api.get("/events", {"event_type": "customer_changed"}).body
    assert [e["event"]["event_type"] for e in body["list"]] == ["customer_changed"]
    body = api.get("/events", {"webhook_status": "not_configured"}).body
    assert len(body["list"]) == 2
    assert api.get("/events", {"start_time": 1, "end_time": 2}).body == {"list": []}


def test_v2_style_filters_extension(api, site):
    _event(site, "customer_created")
    _event(site, "customer_changed")
    _event(site, "customer_deleted")
    body = api.get("/events", {"event_type[in]": "[customer_created,customer_deleted]"}).body
    assert sorted(e["event"]["event_type"] for e in body["list"]) == ["customer_created", "customer_deleted"]
    body = api.get("/events", {"event_type[is_not]": "customer_created"}).body
    assert len(body["list"]) == 2
    body = api.get("/events", {"event_type[starts_with]": "customer_ch"}).body
    assert [e["event"]["event_type"] for e in body["list"]] == ["customer_changed"]
    body = api.get("/events", {"occurred_at[after]": 0, "sort_by[asc]": "occurred_at"}).body
    assert body["list"][0]["event"]["event_type"] == "customer_created"
    assert api.get("/events", {"colour[is]": "red"}, expect=400)["param"] == "colour[is]"
    assert api.get("/events", {"event_type[is]": "nope"}, expect=400)["param"] == "event_type[is]"
    assert api.get("/events", {"occurred_at[starts_with]": "1"}, expect=400)["param"] == "occurred_at[starts_with]"


def test_other_sites_events_are_invisible(server, site, make_site):
    other = make_site()
    ev = _event(other)
    assert site.api.get(f"/events/{ev['id']}", expect=404)["api_error_code"] == "resource_not_found"
    assert site.api.get("/events").body == {"list": []}


def test_time_machine_on_test_site(api, site):
    genesis = 1_700_000_000
    tm = api.post("/time_machines/delorean/start_afresh", {"genesis_time": genesis})["time_machine"]
    assert tm == {"name": "delorean", "time_travel_status": "succeeded", "genesis_time": genesis,
                  "destination_time": genesis}
    tm = api.post("/time_machines/delorean/travel_forward", {"destination_time": genesis + 86400})["time_machine"]
    assert tm["destination_time"] == genesis + 86400 and tm["time_travel_status"] == "succeeded"
    r = api.post("/time_machines/delorean/travel_forward", {"destination_time": genesis}, expect=400)
    assert r["param"] == "destination_time"
    assert api.get("/time_machines/other", expect=404)["api_error_code"] == "resource_not_found"
    # events recorded now carry the time machine's time
    ev = _event(site)
    assert ev["occurred_at"] == genesis + 86400


def test_start_afresh_wipes_site_data(api, site):
    _event(site)
    api.post("/time_machines/delorean/start_afresh", {"genesis_time": 1_700_000_000})
    assert api.get("/events").body == {"list": []}


def test_time_machine_refused_on_live_site(live_site):
    api = live_site.api
    r = api.post("/time_machines/delorean/travel_forward", {"destination_time": 4_000_000_000}, expect=400)
    assert r["api_error_code"] == "invalid_request"
    api.get("/time_machines/delorean", expect=400)


def test_health_and_openapi(server):
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    doc = httpx.get(server.base_url + "/openapi.json").json()
    assert doc["servers"][0]["url"].endswith("/api/v1")
    assert "/events" in doc["paths"]
    methods = {"get", "post", "put", "patch", "delete"}  # a path item also holds servers, parameters
    ops = {op["operationId"] for item in doc["paths"].values() for m, op in item.items() if m in methods}
    assert "list_events" in ops
    # billhive's extensions are documented beside the v1 operations, with real schemas
    tm = doc["paths"]["/time_machines/{time-machine-name}"]["get"]
    assert tm["operationId"] == "retrieve_a_time_machine" and tm["x-billhive-extension"] is True
    assert doc["components"]["schemas"]["TimeMachine"]["properties"]["time_travel_status"]["enum"]
    assert "customer_id" in doc["components"]["schemas"]["Subscription"]["properties"]


def test_idempotency_key_replays_and_rejects_other_params(api):
    now = api.get("/time_machines/delorean")["time_machine"]["destination_time"]
    h = {"chargebee-idempotency-key": "key-1"}
    first = api.post("/time_machines/delorean/travel_forward", {"destination_time": now + 100}, headers=h)
    again = api.post("/time_machines/delorean/travel_forward", {"destination_time": now + 100}, headers=h)
    assert again.body == first.body
    assert again.headers.get("chargebee-idempotency-replayed") == "true"
    assert "chargebee-idempotency-replayed" not in first.headers
    r = api.post("/time_machines/delorean/travel_forward", {"destination_time": now + 200}, headers=h, expect=422)
    assert r["api_error_code"] == "unable_to_process_request"
    long_key = {"chargebee-idempotency-key": "k" * 101}
    assert api.post("/time_machines/delorean/travel_forward", {"destination_time": now + 300},
                    headers=long_key, expect=400)["param"] == "chargebee-idempotency-key"
    # a replayed error is replayed too, and nothing ran the second time
    h2 = {"chargebee-idempotency-key": "key-2"}
    api.post("/time_machines/delorean/travel_forward", {"destination_time": 5}, headers=h2, expect=400)
    api.post("/time_machines/delorean/travel_forward", {"destination_time": 5}, headers=h2, expect=400)
    assert api.get("/time_machines/delorean")["time_machine"]["destination_time"] == now + 100


def test_nul_characters_are_a_400_not_a_500(api):
    r = api.request("POST", "/time_machines/delorean/travel_forward", content=b"destination_time=1%00",
                    headers={"Content-Type": "application/x-www-form-urlencoded"}, expect=400)
    assert r["api_error_code"] == "param_wrong_value"
    assert api.get("/events/ev_a%00b", expect=404)["api_error_code"] == "resource_not_found"


def test_path_ids_are_percent_decoded_exactly_once(api, site):
    ev = _event(site)
    assert api.get("/events/" + ev["id"].replace("_", "%5F"))["event"]["id"] == ev["id"]
    assert api.get("/events/x%2541", expect=404)["message"].endswith("x%41")


def test_metrics_count_requests_by_operation(api, server):
    api.get("/events")
    api.get("/events/ev_nope", expect=404)
    text = httpx.get(server.base_url + "/metrics").text
    assert 'billhive_api_requests_total{operation="list_events",status="200"}' in text
    assert 'billhive_api_requests_total{operation="retrieve_an_event",status="404"}' in text
