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
