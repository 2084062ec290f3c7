"""Addresses over HTTP: a subscription's labelled addresses (retrieve, add or replace)."""

from __future__ import annotations

import pytest

from tests.support.customers import create_customer, events, seed_subscription


@pytest.fixture
def sub(api, site) -> str:
    create_customer(api, id="c")
    return seed_subscription(site, "c", status="active", sub_id="sub-1")


def test_update_then_retrieve(api, sub):
    body = {"subscription_id": sub, "label": "shipping", "first_name": "Ada", "addr": "1 Engine St",
            "extended_addr": "Floor 2", "city": "London", "zip": "N1", "country": "GB", "email": "ada@example.com"}
    address = api.post("/addresses", body)["address"]
    assert address == {"label": "shipping", "first_name": "Ada", "email": "ada@example.com", "addr": "1 Engine St",
                       "extended_addr": "Floor 2", "city": "London", "country": "GB", "zip": "N1",
                       "subscription_id": sub, "object": "address"}
    got = api.get("/addresses", {"subscription_id": sub, "label": "shipping"})["address"]
    assert got == address
    assert [e["event_type"] for e in events(api)] == ["customer_created"]


def test_update_replaces_the_whole_address_and_labels_are_separate(api, sub):
    api.post("/addresses", {"subscription_id": sub, "label": "home", "city": "Paris", "zip": "75001"})
    api.post("/addresses", {"subscription_id": sub, "label": "work", "city": "Lyon"})
    replaced = api.post("/addresses", {"subscription_id": sub, "label": "home", "city": "Nice"})["address"]
    assert "zip" not in replaced and replaced["city"] == "Nice"
    assert api.get("/addresses", {"subscription_id": sub, "label": "home"})["address"] == replaced
    assert api.get("/addresses", {"subscription_id": sub, "label": "work"})["address"]["city"] == "Lyon"


def test_long_ids_and_labels(api, site):
    create_customer(api, id="c2")
    long_sub = seed_subscription(site, "c2", sub_id="s" * 50)
    for label in ("l" * 50, "a:b", "a"):
        api.post("/addresses", {"subscription_id": long_sub, "label": label, "city": label[:50]})
    for label in ("l" * 50, "a:b", "a"):
        assert api.get("/addresses", {"subscription_id": long_sub, "label": label})["address"]["city"] == label


def test_unknown_subscription_or_label_is_404(api, sub):
    r = api.get("/addresses", {"subscription_id": "nope", "label": "home"}, expect=404)
    assert r["api_error_code"] == "resource_not_found" and r["param"] == "subscription_id"
    r = api.post("/addresses", {"subscription_id": "nope", "label": "home"}, expect=404)
    assert r["param"] == "subscription_id"
    r = api.get("/addresses", {"subscription_id": sub, "label": "nowhere"}, expect=404)
    assert r["api_error_code"] == "resource_not_found"


@pytest.mark.parametrize("params, param", [
    ({"label": "x"}, "subscription_id"),
    ({"subscription_id": "sub-1"}, "label"),
    ({"subscription_id": "sub-1", "label": "x", "country": "England"}, "country"),
    ({"subscription_id": "sub-1", "label": "x", "email": "nope"}, "email"),
    ({"subscription_id": "sub-1", "label": "x" * 51}, "label"),
    ({"subscription_id": "sub-1", "label": "x", "colour": "red"}, "colour"),
])
def test_update_bad_input(api, sub, params, param):
    r = api.post("/addresses", params, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == param


def test_retrieve_needs_both_params(api, sub):
    r = api.get("/addresses", {"subscription_id": sub}, expect=400)
    assert r["param"] == "label" and r["error_code"] == "param_not_present"
    assert api.get("/addresses", {"label": "x"}, expect=400)["param"] == "subscription_id"


def test_other_sites_addresses_are_invisible(api, site, make_site):
    other = make_site()
    create_customer(other.api, id="theirs")
    seed_subscription(other, "theirs", sub_id="their-sub")
    other.api.post("/addresses", {"subscription_id": "their-sub", "label": "home", "city": "Secret City"})
    r = api.get("/addresses", {"subscription_id": "their-sub", "label": "home"}, expect=404)
    assert "Secret" not in str(r.body)
    api.post("/addresses", {"subscription_id": "their-sub", "label": "home", "city": "Mine"}, expect=404)
    assert other.api.get("/addresses", {"subscription_id": "their-sub", "label": "home"})["address"]["city"] == \
        "Secret City"


def test_deleting_the_customer_deletes_the_subscriptions_addresses(api, site):
    create_customer(api, id="gone")
    seed_subscription(site, "gone", status="cancelled", sub_id="old-sub")
    api.post("/addresses", {"subscription_id": "old-sub", "label": "home", "city": "X"})
    api.post("/customers/gone/delete", {})
    seed_subscription(site, "someone", status="active", sub_id="old-sub")  # the id is reused
    api.get("/addresses", {"subscription_id": "old-sub", "label": "home"}, expect=404)
