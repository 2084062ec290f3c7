"""The unmodified chargebee 1.6.6 SDK against billhive: configuration, lists, errors."""

from __future__ import annotations

import chargebee
import pytest

from tests.http.test_foundation import _event
from tests.support import sdk


@pytest.fixture
def cb(server, site):
    sdk.configure(server, site)
    return site


def test_event_list_and_retrieve(cb):
    ev = _event(cb)
    result = chargebee.Event.list({"limit": 5})
    assert [e.event.id for e in result] == [ev["id"]]
    assert result.next_offset is None
    got = chargebee.Event.retrieve(ev["id"]).event
    assert got.event_type == "customer_created"
    assert got.content.customer.id == "c1"


def test_sdk_pagination(cb):
    for _ in range(3):
        _event(cb)
    first = chargebee.Event.list({"limit": 2})
    assert len(first) == 2 and first.next_offset
    second = chargebee.Event.list({"limit": 2, "offset": first.next_offset})
    assert len(second) == 1 and second.next_offset is None


def test_sdk_raises_typed_errors(server, cb):
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Event.retrieve("ev_nope")
    assert exc.value.api_error_code == "resource_not_found"
    assert exc.value.http_status_code == 404
    assert exc.value.error_code == "resource_not_found"
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Event.list({"event_type": "nonsense"})
    assert exc.value.param == "event_type"
    sdk.configure(server, cb, key="test_bogus")
    with pytest.raises(chargebee.APIError) as exc:
        chargebee.Event.list()
    assert exc.value.http_status_code == 401
