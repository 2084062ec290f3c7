"""HTTP-level behaviour the conformance run (Schemathesis, ``python -m tests.conformance``)
found wanting; each test pins one fix."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "OPTIONS", "TRACE", "POST"])
def test_405_lists_the_allowed_methods(api, method):
    # RFC 9110 15.5.6: a 405 must carry Allow with the target's supported methods
    r = api.request(method, "/events", expect=405)
    assert r["api_error_code"] == "http_method_not_supported"
    assert r.headers["allow"] == "GET"
    r = api.request(method, "/events/ev_anything", expect=405)
    assert r.headers["allow"] == "GET"


def test_405_allow_lists_every_method_of_a_path(api):
    r = api.request("GET", "/time_machines/delorean/travel_forward", expect=405)
    assert r.headers["allow"] == "POST"


@pytest.mark.parametrize("query", ["id[is]=%00", "id[starts_with]=a%00", "id[in]=[%00]", "offset=%00",
                                   "event_type=customer_created%00"])
def test_nul_in_a_parameter_is_400_on_every_backend(api, query):
    # PostgreSQL text cannot hold NUL: these were 500s there (and matched nothing on SQLite)
    r = api.request("GET", "/events?" + query, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and "\x00" not in r["param"]


def test_nul_in_a_form_body_is_400(api):
    r = api.request("POST", "/time_machines/delorean/start_afresh", content=b"genesis_time=1%00",
                    headers={"Content-Type": "application/x-www-form-urlencoded"}, expect=400)
    assert r["param"] == "genesis_time"
    assert api.get("/time_machines/delorean")["time_machine"]["time_travel_status"] == "not_enabled"


@pytest.mark.parametrize("event_id", ["%00", "ev_1%00", "%00ev"])
def test_nul_in_a_path_id_is_404_on_every_backend(api, event_id):
    r = api.request("GET", f"/events/{event_id}", expect=404)
    assert r["api_error_code"] == "resource_not_found"


def test_nul_in_a_path_id_still_needs_a_valid_key(api):
    assert api.with_key("test_wrong").request("GET", "/events/%00", expect=401)["api_error_code"] == \
        "api_authentication_failed"
