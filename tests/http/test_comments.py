"""/comments: create, retrieve, list (entity filters, v2 filters, paging), delete."""

from __future__ import annotations

import pytest

from tests.support import factories as F
from tests.support import timemachine

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def tsite(site):
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


def comment(site, entity_type: str, entity_id: str, notes: str = "Called the customer", **extra) -> dict:
    return site.api.post("/comments", {"entity_type": entity_type, "entity_id": entity_id, "notes": notes,
                                       **extra})["comment"]


def test_create_retrieve_delete(tsite):
    cust = F.customer(tsite)
    c = comment(tsite, "customer", cust["id"], "Asked for an invoice copy")
    assert c["id"].startswith("cmt_") and len(c["id"]) <= 40
    assert c == {"id": c["id"], "entity_type": "customer", "entity_id": cust["id"],
                 "notes": "Asked for an invoice copy", "created_at": GENESIS, "type": "user",
                 "added_by": "full_access_key", "object": "comment"}
    assert tsite.api.get(f"/comments/{c['id']}")["comment"] == c
    assert tsite.api.post(f"/comments/{c['id']}/delete")["comment"] == c
    r = tsite.api.get(f"/comments/{c['id']}", expect=404)
    assert r["api_error_code"] == "resource_not_found"
    assert tsite.api.post(f"/comments/{c['id']}/delete", expect=404)["api_error_code"] == "resource_not_found"


def test_added_by_given_wins_over_the_key_name(tsite):
    cust = F.customer(tsite)
    assert comment(tsite, "customer", cust["id"], added_by="ada@example.com")["added_by"] == "ada@example.com"


@pytest.mark.parametrize("entity_type", ["customer", "subscription", "transaction", "plan", "addon", "order"])
def test_every_entity_type_must_exist(tsite, entity_type):
    cust = F.customer(tsite)
    ids = {
        "customer": lambda: cust["id"],
        "subscription": lambda: F.subscription(tsite, cust["id"])["id"],
        "transaction": lambda: F.transaction(tsite, cust["id"])["id"],
        "plan": lambda: F.plan(tsite)["id"],
        "addon": lambda: F.addon(tsite)["id"],
        "order": lambda: F.order(tsite)["id"],
    }
    entity_id = ids[entity_type]()
    assert comment(tsite, entity_type, entity_id)["entity_id"] == entity_id
    r = tsite.api.post("/comments", {"entity_type": entity_type, "entity_id": "nope", "notes": "x"}, expect=404)
    assert r["api_error_code"] == "resource_not_found" and r["param"] == "entity_id"


def test_business_entity_is_not_found(tsite):
    r = tsite.api.post("/comments", {"entity_type": "business_entity", "entity_id": tsite.name, "notes": "x"},
                       expect=404)
    assert r["param"] == "entity_id"


def test_entity_type_of_another_kind_is_not_found(tsite):
    cust = F.customer(tsite)  # a customer id is not a subscription
    r = tsite.api.post("/comments", {"entity_type": "subscription", "entity_id": cust["id"], "notes": "x"},
                       expect=404)
    assert r["param"] == "entity_id"


@pytest.mark.parametrize("params, param", [
    ({"entity_type": "customer", "entity_id": "c"}, "notes"),
    ({"entity_type": "customer", "notes": "n"}, "entity_id"),
    ({"entity_id": "c", "notes": "n"}, "entity_type"),
    ({"entity_type": "invoice", "entity_id": "c", "notes": "n"}, "entity_type"),
    ({"entity_type": "customer", "entity_id": "c", "notes": "n" * 1001}, "notes"),
    ({"entity_type": "customer", "entity_id": "c", "notes": "n", "added_by": "a" * 101}, "added_by"),
    ({"entity_type": "customer", "entity_id": "c", "notes": "n", "type": "system"}, "type"),
])
def test_bad_input_is_400_and_nothing_is_stored(tsite, params, param):
    r = tsite.api.post("/comments", params, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == param
    assert tsite.api.get("/comments").body == {"list": []}


def test_list_newest_first_with_entity_filters_and_paging(tsite):
    a, b = F.customer(tsite), F.customer(tsite)
    sub = F.subscription(tsite, a["id"])
    made = []
    for i, (etype, eid) in enumerate([("customer", a["id"]), ("customer", b["id"]), ("subscription", sub["id"]),
                                      ("customer", a["id"])]):
        timemachine.travel(tsite.api, GENESIS + 60 * (i + 1))
        made.append(comment(tsite, etype, eid, f"note {i}"))
    ids = lambda body: [e["comment"]["id"] for e in body["list"]]  # noqa: E731
    assert ids(tsite.api.get("/comments").body) == [c["id"] for c in reversed(made)]
    assert ids(tsite.api.get("/comments", {"entity_type": "customer", "entity_id": a["id"]}).body) == \
        [made[3]["id"], made[0]["id"]]
    assert ids(tsite.api.get("/comments", {"entity_type": "subscription"}).body) == [made[2]["id"]]
    assert ids(tsite.api.get("/comments", {"entity_id": b["id"]}).body) == [made[1]["id"]]
    # v2-style filter extension and sorting
    assert ids(tsite.api.get("/comments", {"entity_type[in]": "[subscription]"}).body) == [made[2]["id"]]
    assert ids(tsite.api.get("/comments", {"created_at[after]": GENESIS + 150}).body) == \
        [made[3]["id"], made[2]["id"]]
    assert ids(tsite.api.get("/comments", {"sort_by[asc]": "created_at", "limit": 2}).body) == \
        [made[0]["id"], made[1]["id"]]
    first = tsite.api.get("/comments", {"limit": 3}).body
    assert len(first["list"]) == 3 and first["next_offset"]
    rest = tsite.api.get("/comments", {"limit": 3, "offset": first["next_offset"]}).body
    assert ids(rest) == [made[0]["id"]] and "next_offset" not in rest
    r = tsite.api.get("/comments", {"entity_type": "invoice"}, expect=400)
    assert r["param"] == "entity_type"
    r = tsite.api.get("/comments", {"notes[is]": "x"}, expect=400)
    assert r["param"] == "notes[is]"


def test_read_only_key_reads_but_cannot_write(tsite):
    cust = F.customer(tsite)
    c = comment(tsite, "customer", cust["id"])
    ro = tsite.api.with_key(tsite.read_only_key)
    assert ro.get(f"/comments/{c['id']}")["comment"]["id"] == c["id"]
    ro.post("/comments", {"entity_type": "customer", "entity_id": cust["id"], "notes": "x"}, expect=403)
    ro.post(f"/comments/{c['id']}/delete", expect=403)


def test_another_sites_comments_and_entities_stay_invisible(tsite, make_site):
    other = make_site()
    theirs_customer = F.customer(other)
    theirs = comment(other, "customer", theirs_customer["id"], "private")
    # their comment: not retrievable, not deletable, not listed
    tsite.api.get(f"/comments/{theirs['id']}", expect=404)
    tsite.api.post(f"/comments/{theirs['id']}/delete", expect=404)
    assert tsite.api.get("/comments").body == {"list": []}
    assert tsite.api.get("/comments", {"entity_id": theirs_customer["id"]}).body == {"list": []}
    # their customer cannot carry our comments
    r = tsite.api.post("/comments", {"entity_type": "customer", "entity_id": theirs_customer["id"], "notes": "x"},
                       expect=404)
    assert r["param"] == "entity_id"
    assert other.api.get(f"/comments/{theirs['id']}")["comment"] == theirs
    assert [e["comment"]["id"] for e in other.api.get("/comments").body["list"]] == [theirs["id"]]


def test_factory_makes_a_comment(tsite):
    assert tsite.api.get(f"/comments/{F.comment_id(tsite)}")["comment"]["notes"] == "factory"
