"""Cards over HTTP: the test gateway's cards, add/replace/retrieve/delete, switch_gateway,
expiry checks on the site clock, and card_expiring / card_expired from the scheduler."""

from __future__ import annotations

import datetime as dt

import pytest

from billhive import sites
from billhive.work import jobs
from billhive.work.context import Origin, Work
from tests.support.customers import (
    AMEX,
    DINERS,
    DISCOVER,
    GENESIS,
    INSUFFICIENT_FUNDS,
    JCB,
    MASTERCARD,
    REFUSED,
    TIMES_OUT,
    VISA,
    card,
    create_customer,
    events,
    start_afresh,
    travel,
)


def ts(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize("number, brand", [
    (VISA, "visa"), (MASTERCARD, "mastercard"), (AMEX, "american_express"), (DISCOVER, "discover"),
    (JCB, "jcb"), (DINERS, "diners_club"), (INSUFFICIENT_FUNDS, "visa"), (TIMES_OUT, "visa"),
])
def test_test_cards_store(api, number, brand):
    c = create_customer(api, id="c", **card(number))["card"]
    assert c["card_type"] == brand and c["last4"] == number[-4:] and c["iin"] == number[:6]
    assert c["masked_number"] == "*" * (len(number) - 4) + number[-4:]
    assert api.get("/cards/c")["card"] == c


def test_refused_card_creates_nothing(api):
    r = api.post("/customers", {"id": "r", **card(REFUSED)}, expect=400)
    assert r["api_error_code"] == "payment_method_verification_failed" and r["type"] == "payment"
    assert "(3009) Do not honour" in r["message"] and r["param"] == "card[number]"
    api.get("/customers/r", expect=404)
    assert events(api) == []


def test_refused_card_on_update_card_names_the_flat_param(api):
    create_customer(api, id="r2")
    r = api.post("/customers/r2/credit_card", card(REFUSED, prefix=""), expect=400)
    assert r["api_error_code"] == "payment_method_verification_failed" and r["param"] == "number"
    api.get("/cards/r2", expect=404)
    assert [e["event_type"] for e in events(api)] == ["customer_created"]


@pytest.mark.parametrize("number", ["4111111111111112", "1234", "4111-1111-1111-111x", "0" * 20])
def test_invalid_number(api, number):
    r = api.post("/customers", card(number), expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == "card[number]"
    create_customer(api, id="n")
    r = api.post("/customers/n/credit_card", card(number, prefix=""), expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == "number"


def test_number_with_spaces_is_accepted(api):
    c = create_customer(api, **card("4111 1111 1111 1111"))["card"]
    assert c["last4"] == "1111"


def test_expiry_checked_against_the_site_clock(api):
    start_afresh(api)  # 2030-06-15
    r = api.post("/customers", card(VISA, year=2029, month=12), expect=400)
    assert r["api_error_code"] == "payment_method_verification_failed" and r["type"] == "payment"
    assert r["param"] == "card[expiry_year]"
    r = api.post("/customers", card(VISA, year=2030, month=5), expect=400)
    assert r["param"] == "card[expiry_month]"
    create_customer(api, id="e")
    r = api.post("/customers/e/credit_card", card(VISA, prefix="", year=2030, month=5), expect=400)
    assert r["api_error_code"] == "payment_method_verification_failed" and r["param"] == "expiry_month"
    # the current month is still good (through its last day); so is a card far in the future
    assert api.post("/customers/e/credit_card", card(VISA, prefix="", year=2030, month=6))["card"]["status"] == \
        "expiring"
    assert api.post("/customers", card(VISA, year=2031, month=1))["card"]["status"] == "valid"
    assert api.post("/customers", card(VISA, year=99999), expect=400)["param"] == "card[expiry_year]"


def test_other_gateways_and_tmp_tokens_are_refused(api):
    r = api.post("/customers", {**card(VISA), "card[gateway]": "stripe"}, expect=400)
    assert r["api_error_code"] == "configuration_incompatible" and r["param"] == "card[gateway]"
    r = api.post("/customers", {**card(VISA), "card[tmp_token]": "tok_visa"}, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == "card[tmp_token]"
    create_customer(api, id="g")
    r = api.post("/customers/g/credit_card", {**card(VISA, prefix=""), "gateway": "braintree"}, expect=400)
    assert r["api_error_code"] == "configuration_incompatible" and r["param"] == "gateway"
    assert api.post("/customers/g/credit_card", {**card(VISA, prefix=""), "gateway": "chargebee"})["card"]
    assert api.post("/customers", {**card(VISA), "card[gateway]": "chargebee"})["card"]["gateway"] == "chargebee"


def test_update_card_adds_then_replaces(api, site):
    create_customer(api, id="u")
    body = api.post("/customers/u/credit_card", card(VISA, prefix="", first_name="Ada", billing_country="GB")).body
    first = body["card"]
    assert first["first_name"] == "Ada" and first["billing_country"] == "GB"
    assert body["customer"]["payment_method"]["reference_id"] == first["reference_id"]
    body = api.post("/customers/u/credit_card", card(MASTERCARD, prefix="")).body
    second = body["card"]
    assert second["card_type"] == "mastercard" and second["reference_id"] != first["reference_id"]
    assert "first_name" not in second
    assert body["customer"]["payment_method"]["reference_id"] == second["reference_id"]
    assert [e["event_type"] for e in events(api)] == ["card_updated", "card_added", "customer_created"]
    assert events(api, "card_updated")[0]["content"] == body
    assert api.get("/cards/u")["card"] == second


def test_update_card_bad_input(api):
    create_customer(api, id="b")
    r = api.post("/customers/b/credit_card", {"expiry_month": 1, "expiry_year": 2040}, expect=400)
    assert r["param"] == "number" and r["error_code"] == "param_not_present"
    assert api.post("/customers/b/credit_card", card(VISA, prefix="", month=0), expect=400)["param"] == \
        "expiry_month"
    assert api.post("/customers/b/credit_card", {**card(VISA, prefix=""), "gateway": "acme"}, expect=400)[
        "param"] == "gateway"
    assert api.post("/customers/b/credit_card", {**card(VISA, prefix=""), "billing_country": "ZZ"},
                    expect=400)["param"] == "billing_country"
    api.post("/customers/nobody/credit_card", card(VISA, prefix=""), expect=404)


def test_retrieve_and_delete_card(api, site):
    create_customer(api, id="d", **card(VISA))
    assert api.get("/cards/d")["card"]["customer_id"] == "d"
    body = api.post("/customers/d/delete_card", {}).body
    assert set(body) == {"customer"}
    assert body["customer"]["auto_collection"] == "off" and "payment_method" not in body["customer"]
    assert api.get("/cards/d", expect=404)["api_error_code"] == "resource_not_found"
    (ev,) = events(api, "card_deleted")
    assert ev["content"]["card"]["last4"] == "1111" and ev["content"]["customer"]["id"] == "d"
    assert site.app.db.read_sync(lambda tx: jobs.pending(tx, site.pk)) == []
    # no card: succeeds without an event
    assert api.post("/customers/d/delete_card", {}).status == 200
    assert len(events(api, "card_deleted")) == 1
    api.post("/customers/nobody/delete_card", {}, expect=404)
    api.get("/cards/nobody", expect=404)


def test_switch_gateway_is_refused_with_reasons(api):
    create_customer(api, id="s")
    r = api.post("/customers/s/switch_gateway", {"gateway": "stripe"}, expect=400)
    assert r["api_error_code"] == "invalid_request"
    api.post("/customers/s/credit_card", card(VISA, prefix=""))
    r = api.post("/customers/s/switch_gateway", {"gateway": "stripe"}, expect=400)
    assert r["api_error_code"] == "configuration_incompatible" and r["param"] == "gateway"
    assert api.post("/customers/s/switch_gateway", {"gateway": "chargebee"}, expect=400)["param"] == "gateway"
    assert api.post("/customers/s/switch_gateway", {}, expect=400)["error_code"] == "param_not_present"
    api.post("/customers/nobody/switch_gateway", {"gateway": "stripe"}, expect=404)


def test_other_sites_cards_are_invisible(api, make_site):
    other = make_site()
    create_customer(other.api, id="theirs", **card(VISA))
    assert api.get("/cards/theirs", expect=404)["api_error_code"] == "resource_not_found"
    api.post("/customers/theirs/credit_card", card(MASTERCARD, prefix=""), expect=404)
    api.post("/customers/theirs/delete_card", {}, expect=404)
    api.post("/customers/theirs/switch_gateway", {"gateway": "stripe"}, expect=404)
    assert other.api.get("/cards/theirs")["card"]["card_type"] == "visa"


def test_card_expiring_and_expired_fire_during_time_travel(api, site):
    start_afresh(api)  # 2030-06-15
    create_customer(api, id="x", email="x@example.com", **card(VISA, year=2030, month=8))
    travel(api, ts(2030, 7, 31))
    assert events(api, "card_expiring") == []
    travel(api, ts(2030, 8, 15))
    (ev,) = events(api, "card_expiring")
    assert ev["occurred_at"] == ts(2030, 8, 31, 23, 59, 59) - 30 * 86400
    assert ev["source"] == "scheduled_job"
    assert ev["content"]["card"]["status"] == "expiring"
    assert ev["content"]["customer"]["payment_method"]["status"] == "expiring"
    assert api.get("/cards/x")["card"]["status"] == "expiring"
    travel(api, ts(2030, 9, 2))
    (ev,) = events(api, "card_expired")
    assert ev["occurred_at"] == ts(2030, 9, 1)
    assert ev["content"]["card"]["status"] == "expired"
    body = api.get("/customers/x").body
    assert body["card"]["status"] == "expired" and body["customer"]["payment_method"]["status"] == "expired"
    assert len(events(api, "card_expiring")) == 1

    def usable(tx):
        w = Work(tx, site.app, sites.load(tx, site.pk), Origin(user="t"))
        from billhive.services import customers
        return customers.usable_card(w, customers.get_customer(w, "x"))
    assert site.app.db.read_sync(usable) is None
    # a new card makes the customer whole again
    body = api.post("/customers/x/credit_card", card(VISA, prefix="", year=2032)).body
    assert body["card"]["status"] == "valid" and body["customer"]["payment_method"]["status"] == "valid"
    assert site.app.db.read_sync(usable)["expiry_year"] == 2032


def test_card_expiring_days_setting(api, site):
    site.setting(card_expiring_days=5)
    start_afresh(api)
    create_customer(api, id="y", **card(VISA, year=2030, month=7))
    travel(api, ts(2030, 7, 20))
    assert events(api, "card_expiring") == []
    travel(api, ts(2030, 7, 28))
    (ev,) = events(api, "card_expiring")
    assert ev["occurred_at"] == ts(2030, 7, 31, 23, 59, 59) - 5 * 86400


def test_replacing_or_deleting_a_card_moves_or_cancels_its_jobs(api, site):
    start_afresh(api)
    create_customer(api, id="r", **card(VISA, year=2030, month=8))
    create_customer(api, id="q", **card(VISA, year=2030, month=8))
    api.post("/customers/r/credit_card", card(MASTERCARD, prefix="", year=2035, month=1))
    api.post("/customers/q/delete_card", {})
    pending = site.app.db.read_sync(lambda tx: jobs.pending(tx, site.pk))
    assert sorted((j.kind, j.ref_id, j.due_at) for j in pending) == [
        ("card_expired", "r", ts(2035, 2, 1)), ("card_expiring", "r", ts(2035, 1, 31, 23, 59, 59) - 30 * 86400)]
    travel(api, ts(2030, 10, 1))
    assert events(api, "card_expiring") == [] and events(api, "card_expired") == []
    assert api.get("/cards/r")["card"]["status"] == "valid"


def test_card_stored_inside_the_expiring_window(api):
    start_afresh(api)  # 2030-06-15
    body = create_customer(api, id="w", **card(VISA, year=2030, month=6))
    assert body["card"]["status"] == "expiring"
    assert body["customer"]["payment_method"]["status"] == "expiring"
    travel(api, GENESIS + 60)
    (ev,) = events(api, "card_expiring")
    assert ev["content"]["card"]["customer_id"] == "w"
