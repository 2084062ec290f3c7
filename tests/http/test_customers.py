"""Customers over HTTP: create, update, retrieve, list, delete, billing info, payment method,
contacts; bad input; tenant isolation."""

from __future__ import annotations

import pytest

from billhive import sites
from billhive.services import credits
from billhive.store import schema as S
from billhive.work import jobs
from tests.support.customers import (
    VISA,
    card,
    create_customer,
    events,
    seed_subscription,
)


def test_create_minimal_customer_has_defaults(api):
    c = api.post("/customers", {}).body
    assert "card" not in c
    cust = c["customer"]
    assert cust["object"] == "customer"
    assert cust["auto_collection"] == "on" and cust["allow_direct_debit"] is False
    assert cust["taxability"] == "taxable"
    assert (cust["account_credits"], cust["refundable_credits"], cust["excess_payments"]) == (0, 0, 0)
    assert "payment_method" not in cust and "id" in cust and cust["created_at"] > 0
    assert api.get(f"/customers/{cust['id']}").body == {"customer": cust}
    (ev,) = events(api, "customer_created")
    assert ev["content"] == {"customer": cust}
    assert ev["source"] == "api" and ev["user"] == "full_access_key"


def test_create_with_every_field_round_trips(api):
    body = {
        "id": "acme-1", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "+44 1",
        "company": "Engines Ltd", "auto_collection": "off", "allow_direct_debit": "true", "vat_number": "GB123",
        "taxability": "exempt", "created_from_ip": "10.0.0.1", "invoice_notes": "Thanks",
        "meta_data": '{"tier": "gold", "n": 3}',
        "billing_address[first_name]": "Ada", "billing_address[line1]": "1 Analytical Way",
        "billing_address[city]": "London", "billing_address[zip]": "N1", "billing_address[country]": "GB",
    }
    cust = api.post("/customers", body)["customer"]
    assert cust["id"] == "acme-1" and cust["company"] == "Engines Ltd"
    assert cust["auto_collection"] == "off" and cust["allow_direct_debit"] is True and cust["taxability"] == "exempt"
    assert cust["vat_number"] == "GB123" and cust["created_from_ip"] == "10.0.0.1"
    assert cust["meta_data"] == {"tier": "gold", "n": 3}
    assert cust["billing_address"] == {"first_name": "Ada", "line1": "1 Analytical Way", "city": "London",
                                       "zip": "N1", "country": "GB", "object": "billing_address"}
    assert api.get("/customers/acme-1")["customer"] == cust


def test_create_with_card(api, site):
    body = create_customer(api, id="carded", **card(VISA, **{"first_name": "Ada", "billing_zip": "N1"}))
    cust, c = body["customer"], body["card"]
    assert c["customer_id"] == "carded" and c["object"] == "card"
    assert (c["card_type"], c["last4"], c["iin"], c["masked_number"]) == ("visa", "1111", "411111",
                                                                          "************1111")
    assert c["status"] == "valid" and c["gateway"] == "chargebee" and c["reference_id"].startswith("tok_")
    assert c["first_name"] == "Ada" and c["billing_zip"] == "N1"
    assert cust["payment_method"] == {"type": "card", "gateway": "chargebee", "status": "valid",
                                      "reference_id": c["reference_id"]}
    assert api.get("/customers/carded").body == body
    assert [e["event_type"] for e in events(api)] == ["card_added", "customer_created"]
    assert events(api, "customer_created")[0]["content"] == body


def test_card_number_is_never_stored(api, site):
    create_customer(api, id="pci", **card(VISA))

    def texts(tx):
        out = []
        for table in (S.customers, S.cards, S.events, S.jobs, S.gateway_vault):
            out += [str(r) for r in tx.all(table.select().where(table.c.site_id == site.pk))]
        return out
    dump = " ".join(site.app.db.read_sync(texts))
    assert "pci" in dump and VISA not in dump


def test_duplicate_id_is_refused(api):
    api.post("/customers", {"id": "dup"})
    r = api.post("/customers", {"id": "dup"}, expect=400)
    assert r["api_error_code"] == "duplicate_entry" and r["param"] == "id"
    r = api.post("/customers", {"id": "dup", **card(VISA)}, expect=400)
    assert r["api_error_code"] == "duplicate_entry"
    assert len(events(api, "customer_created")) == 1


@pytest.mark.parametrize("params, param", [
    ({"auto_collection": "sometimes"}, "auto_collection"),
    ({"taxability": "maybe"}, "taxability"),
    ({"email": "not-an-email"}, "email"),
    ({"allow_direct_debit": "yes"}, "allow_direct_debit"),
    ({"first_name": "x" * 151}, "first_name"),
    ({"id": "a/b"}, "id"),
    ({"id": "a b"}, "id"),
    ({"billing_address[country]": "XX"}, "billing_address[country]"),
    ({"billing_address[colour]": "red"}, "billing_address[colour]"),
    ({"meta_data": "[1, 2]"}, "meta_data"),
    ({"card[number]": VISA, "card[expiry_year]": 2040}, "card[expiry_month]"),
    ({"card[number]": VISA, "card[expiry_month]": 13, "card[expiry_year]": 2040}, "card[expiry_month]"),
    ({"card[number]": VISA, "card[expiry_month]": 1, "card[expiry_year]": "soon"}, "card[expiry_year]"),
    ({"card[gateway]": "paypal", **card(VISA)}, "card[gateway]"),
    ({"payment_method[type]": "bitcoin", "payment_method[reference_id]": "x"}, "payment_method[type]"),
    ({"payment_method[type]": "card"}, "payment_method[reference_id]"),
    ({"colour": "red"}, "colour"),
])
def test_create_bad_input(api, params, param):
    r = api.post("/customers", params, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == param
    assert api.get("/customers").body == {"list": []}
    assert events(api) == []


def test_missing_required_card_field_is_param_not_present(api):
    r = api.post("/customers", {"card[number]": VISA, "card[expiry_month]": 1}, expect=400)
    assert r["param"] == "card[expiry_year]" and r["error_code"] == "param_not_present"


def test_card_together_with_payment_method_is_refused(api):
    r = api.post("/customers", {**card(VISA), "payment_method[type]": "paypal_express_checkout",
                                "payment_method[reference_id]": "B-1"}, expect=400)
    assert r["api_error_code"] == "invalid_request" and r["param"] == "payment_method"


def test_update_customer(api):
    create_customer(api, id="u1")
    cust = api.post("/customers/u1", {"first_name": "Grace", "auto_collection": "off", "meta_data[k]": "v",
                                      "invoice_notes": "n"})["customer"]
    assert cust["first_name"] == "Grace" and cust["last_name"] == "Lovelace"
    assert cust["auto_collection"] == "off" and cust["meta_data"] == {"k": "v"} and cust["invoice_notes"] == "n"
    (ev,) = events(api, "customer_changed")
    assert ev["content"]["customer"] == cust
    # billing info is not part of update_a_customer
    assert api.post("/customers/u1", {"vat_number": "X"}, expect=400)["param"] == "vat_number"
    assert api.post("/customers/u1", {"auto_collection": "never"}, expect=400)["param"] == "auto_collection"
    assert api.post("/customers/nobody", {"first_name": "x"}, expect=404)["api_error_code"] == "resource_not_found"


def test_update_billing_info_replaces_address_and_vat(api):
    create_customer(api, id="b1")
    cust = api.post("/customers/b1/update_billing_info", {
        "vat_number": "DE1", "billing_address[line1]": "Street 1", "billing_address[country]": "DE"})["customer"]
    assert cust["vat_number"] == "DE1" and cust["billing_address"] == {"line1": "Street 1", "country": "DE",
                                                                       "object": "billing_address"}
    cust = api.post("/customers/b1/update_billing_info", {"billing_address[city]": "Berlin"})["customer"]
    assert "vat_number" not in cust and cust["billing_address"] == {"city": "Berlin", "object": "billing_address"}
    cust = api.post("/customers/b1/update_billing_info", {})["customer"]
    assert "billing_address" not in cust
    assert len(events(api, "customer_changed")) == 3
    r = api.post("/customers/b1/update_billing_info", {"billing_address[country]": "Germany"}, expect=400)
    assert r["param"] == "billing_address[country]"
    api.post("/customers/nobody/update_billing_info", {}, expect=404)


def test_list_customers_newest_first_with_pages_and_cards(api):
    for i in range(5):
        create_customer(api, id=f"l{i}", **(card(VISA) if i == 2 else {}))
    page = api.get("/customers", {"limit": 3}).body
    assert [e["customer"]["id"] for e in page["list"]] == ["l4", "l3", "l2"]
    assert "card" not in page["list"][0] and page["list"][2]["card"]["customer_id"] == "l2"
    rest = api.get("/customers", {"limit": 3, "offset": page["next_offset"]}).body
    assert [e["customer"]["id"] for e in rest["list"]] == ["l1", "l0"] and "next_offset" not in rest


def test_list_customers_filters(api):
    create_customer(api, id="f1", email="one@example.com", first_name="Alan", company="Bletchley")
    create_customer(api, id="f2", email="two@example.com", first_name="Alonzo", auto_collection="off")
    create_customer(api, id="f3", email="three@example.com", first_name="Kurt")

    def ids(**q):
        return [e["customer"]["id"] for e in api.get("/customers", q).body["list"]]
    assert ids(**{"email[is]": "two@example.com"}) == ["f2"]
    assert ids(**{"first_name[starts_with]": "Al"}) == ["f2", "f1"]
    assert ids(**{"auto_collection[is]": "off"}) == ["f2"]
    assert ids(**{"company[is_present]": "true"}) == ["f1"]
    assert ids(**{"id[in]": "[f1,f3]"}) == ["f3", "f1"]
    assert ids(**{"created_at[after]": 0, "sort_by[asc]": "created_at"}) == ["f1", "f2", "f3"]
    assert api.get("/customers", {"auto_collection[is]": "maybe"}, expect=400)["param"] == "auto_collection[is]"
    assert api.get("/customers", {"colour[is]": "red"}, expect=400)["param"] == "colour[is]"
    assert api.get("/customers", {"limit": 101}, expect=400)["param"] == "limit"


def test_delete_customer_hard_deletes_everything(api, site):
    create_customer(api, id="d1", **card(VISA))
    api.post("/customers/d1/add_account_credits", {"amount": 500, "description": "welcome"})
    sub = seed_subscription(site, "d1", status="cancelled")
    body = api.post("/customers/d1/delete", {}).body
    assert body["customer"]["id"] == "d1" and body["card"]["customer_id"] == "d1"
    assert api.get("/customers/d1", expect=404)["api_error_code"] == "resource_not_found"
    assert api.get("/cards/d1", expect=404)["api_error_code"] == "resource_not_found"
    (ev,) = events(api, "customer_deleted")
    assert ev["content"]["customer"]["id"] == "d1" and ev["content"]["card"]["last4"] == "1111"
    assert [s["id"] for s in ev["content"]["subscriptions"]] == [sub]
    assert site.app.db.read_sync(lambda tx: jobs.pending(tx, site.pk)) == []
    # the id is free again, with fresh balances and ledger
    cust = create_customer(api, id="d1")["customer"]
    assert cust["account_credits"] == 0
    assert site.app.db.read_sync(lambda tx: credits.ledger(tx, site.pk, "d1")) == []


@pytest.mark.parametrize("status", ["active", "in_trial", "future", "non_renewing"])
def test_delete_customer_with_live_subscription_is_refused(api, site, status):
    create_customer(api, id="live", **card(VISA))
    seed_subscription(site, "live", status=status)
    r = api.post("/customers/live/delete", {}, expect=409)
    assert r["api_error_code"] == "invalid_state_for_request" and r["type"] == "invalid_request"
    assert api.get("/customers/live")["card"]["last4"] == "1111"
    assert events(api, "customer_deleted") == []


def test_delete_customer_without_card_and_bad_params(api):
    create_customer(api, id="d2")
    assert api.post("/customers/d2/delete", {"delete_payment_method": "maybe"}, expect=400)["param"] == \
        "delete_payment_method"
    body = api.post("/customers/d2/delete", {"delete_payment_method": "false"}).body
    assert "card" not in body
    api.post("/customers/d2/delete", {}, expect=404)


def test_contacts_add_update_delete(api):
    create_customer(api, id="k1")
    cust = api.post("/customers/k1/add_contact", {"contact[email]": "bob@example.com", "contact[label]": "ops",
                                                  "contact[send_billing_email]": "true"})["customer"]
    (c,) = cust["contacts"]
    assert c["email"] == "bob@example.com" and c["label"] == "ops" and c["id"]
    assert (c["enabled"], c["send_billing_email"], c["send_account_email"]) == (False, True, False)
    cust = api.post("/customers/k1/add_contact", {"contact[id]": "c2", "contact[email]": "eve@example.com"})[
        "customer"]
    assert [x["id"] for x in cust["contacts"]] == [c["id"], "c2"]
    r = api.post("/customers/k1/add_contact", {"contact[id]": "c2", "contact[email]": "x@example.com"}, expect=400)
    assert r["api_error_code"] == "duplicate_entry" and r["param"] == "contact[id]"
    cust = api.post("/customers/k1/update_contact", {"contact[id]": "c2", "contact[enabled]": "true",
                                                     "contact[first_name]": "Eve"})["customer"]
    assert cust["contacts"][1]["enabled"] is True and cust["contacts"][1]["first_name"] == "Eve"
    assert cust["contacts"][1]["email"] == "eve@example.com"
    cust = api.post("/customers/k1/delete_contact", {"contact[id]": c["id"]})["customer"]
    assert [x["id"] for x in cust["contacts"]] == ["c2"]
    cust = api.post("/customers/k1/delete_contact", {"contact[id]": "c2"})["customer"]
    assert "contacts" not in cust
    assert len(events(api, "customer_changed")) == 5


def test_contacts_bad_input_and_limit(api):
    create_customer(api, id="k2")
    r = api.post("/customers/k2/add_contact", {"contact[first_name]": "x"}, expect=400)
    assert r["param"] == "contact[email]" and r["error_code"] == "param_not_present"
    assert api.post("/customers/k2/add_contact", {}, expect=400)["param"] == "contact[email]"
    assert api.post("/customers/k2/add_contact", {"contact[email]": "nope"}, expect=400)["param"] == "contact[email]"
    assert api.post("/customers/k2/update_contact", {"contact[email]": "a@example.com"}, expect=400)["param"] == \
        "contact[id]"
    r = api.post("/customers/k2/update_contact", {"contact[id]": "ghost"}, expect=404)
    assert r["param"] == "contact[id]"
    api.post("/customers/k2/delete_contact", {"contact[id]": "ghost"}, expect=404)
    for i in range(6):
        api.post("/customers/k2/add_contact", {"contact[email]": f"p{i}@example.com"})
    r = api.post("/customers/k2/add_contact", {"contact[email]": "p7@example.com"}, expect=400)
    assert r["api_error_code"] == "resource_limit_exhausted"
    assert len(api.get("/customers/k2")["customer"]["contacts"]) == 6
    api.post("/customers/nobody/add_contact", {"contact[email]": "a@example.com"}, expect=404)


def test_update_payment_method(api):
    create_customer(api, id="pm", **card(VISA))
    body = api.post("/customers/pm/update_payment_method", {
        "payment_method[type]": "paypal_express_checkout", "payment_method[reference_id]": "B-123"}).body
    assert body["customer"]["payment_method"] == {"type": "paypal_express_checkout", "gateway": "not_applicable",
                                                  "status": "valid", "reference_id": "B-123"}
    assert "card" not in body
    assert api.get("/cards/pm", expect=404)
    assert [e["event_type"] for e in events(api)][:2] == ["card_deleted", "customer_changed"]
    r = api.post("/customers/pm/update_payment_method", {
        "payment_method[type]": "card", "payment_method[gateway]": "stripe",
        "payment_method[reference_id]": "cus_1/card_1"}, expect=400)
    assert r["api_error_code"] == "configuration_incompatible" and r["param"] == "payment_method[gateway]"
    r = api.post("/customers/pm/update_payment_method", {"payment_method[type]": "card",
                                                         "payment_method[reference_id]": "x"}, expect=400)
    assert r["param"] == "payment_method[gateway]"
    r = api.post("/customers/pm/update_payment_method", {"payment_method[type]": "amazon_payments"}, expect=400)
    assert r["param"] == "payment_method[reference_id]" and r["error_code"] == "param_not_present"
    assert api.post("/customers/pm/update_payment_method", {}, expect=400)["param"] == "payment_method[type]"
    api.post("/customers/nobody/update_payment_method", {"payment_method[type]": "amazon_payments",
                                                         "payment_method[reference_id]": "x"}, expect=404)


def test_other_sites_customers_are_invisible(api, site, make_site):
    other = make_site()
    create_customer(other.api, id="theirs", **card(VISA))
    other.api.post("/customers/theirs/add_account_credits", {"amount": 100, "description": "x"})
    assert api.get("/customers").body == {"list": []}
    for method, path, params in [
        ("GET", "/customers/theirs", None),
        ("POST", "/customers/theirs", {"first_name": "Mallory"}),
        ("POST", "/customers/theirs/update_billing_info", {"vat_number": "X"}),
        ("POST", "/customers/theirs/add_contact", {"contact[email]": "m@example.com"}),
        ("POST", "/customers/theirs/add_account_credits", {"amount": 1, "description": "x"}),
        ("POST", "/customers/theirs/deduct_account_credits", {"amount": 1, "description": "x"}),
        ("POST", "/customers/theirs/set_account_credits", {"amount": 0, "description": "x"}),
        ("POST", "/customers/theirs/delete", {}),
    ]:
        r = api.request(method, path, params=params if method == "GET" else None,
                        data=params if method == "POST" else None, expect=404)
        assert r["api_error_code"] == "resource_not_found", path
        assert "Mallory" not in str(r.body) and "1111" not in str(r.body)
    # the same id on this site is a different customer
    assert create_customer(api, id="theirs")["customer"]["account_credits"] == 0
    theirs = other.api.get("/customers/theirs").body
    assert theirs["customer"]["account_credits"] == 100 and theirs["card"]["last4"] == "1111"
    assert theirs["customer"]["first_name"] == "Ada"


def test_read_only_key_cannot_create(api, site):
    r = api.with_key(site.read_only_key).post("/customers", {"id": "ro"}, expect=403)
    assert r["api_error_code"] == "api_authorization_failed"
    api.with_key(site.read_only_key).get("/customers/ro", expect=404)


def test_events_carry_origin_and_can_skip_webhooks(api):
    api.post("/customers", {"id": "o1"}, headers={"chargebee-request-origin-ip": "10.9.8.7",
                                                   "chargebee-event-webhook": "all-disabled"})
    (ev,) = events(api, "customer_created")
    assert ev["origin"] == {"ip": "10.9.8.7"} and ev["webhook_status"] == "skipped"


def test_site_helpers_for_other_services(site, api):
    """get_customer / snapshot / usable_card, as invoices and subscriptions call them."""
    from billhive.errors import NotFound
    from billhive.services import customers
    from billhive.work.context import Origin, Work

    create_customer(api, id="h1", **card(VISA))
    create_customer(api, id="h2")

    def run(tx):
        w = Work(tx, site.app, sites.load(tx, site.pk), Origin(user="t"))
        with pytest.raises(NotFound) as exc:
            customers.get_customer(w, "nobody", param="customer_id")
        assert exc.value.param == "customer_id"
        snap = customers.snapshot(w, "h1")
        assert set(snap) == {"customer", "card"}
        assert set(customers.snapshot(w, "h2")) == {"customer"}
        assert customers.usable_card(w, customers.get_customer(w, "h1"))["last4"] == "1111"
        assert customers.usable_card(w, customers.get_customer(w, "h2")) is None
    site.app.db.read_sync(run)


def test_deleting_a_customer_announces_its_deleted_transactions(site):
    from tests.support import factories as F

    cust = F.customer(site, card=None, excess=500)
    site.api.post(f"/customers/{cust['id']}/delete")
    kinds = [e["event_type"] for e in F.events_of(site)]
    assert "transaction_deleted" in kinds and kinds[-1] == "customer_deleted"
