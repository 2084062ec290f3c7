"""Coupons and coupon codes over HTTP, and the redemption helpers subscriptions use."""

from __future__ import annotations

import pytest

from billhive.services import coupons
from tests.support import timemachine

GENESIS = 1_700_000_000


def _coupon(api, id: str = "off10", **extra) -> dict:
    body = {"id": id, "name": id.upper(), "discount_type": "percentage", "discount_percentage": 10,
            "apply_on": "invoice_amount", **extra}
    return api.post("/coupons", body)["coupon"]


def _plan(api, id: str) -> None:
    api.post("/plans", {"id": id, "name": id, "price": 1000})


def _addon(api, id: str) -> None:
    api.post("/addons", {"id": id, "name": id, "charge_type": "non_recurring", "price": 100})


def _frozen(api) -> None:
    api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})


def _travel(api, to: int) -> None:
    timemachine.travel(api, to)


# ---- create / retrieve ---------------------------------------------------------------------------

def test_create_percentage_on_invoice_amount(api):
    _frozen(api)
    coupon = _coupon(api)
    assert coupon == {"id": "off10", "name": "OFF10", "discount_type": "percentage", "discount_percentage": 10.0,
                      "duration_type": "forever", "status": "active", "apply_on": "invoice_amount",
                      "plan_constraint": "not_applicable", "addon_constraint": "not_applicable",
                      "created_at": GENESIS, "redemptions": 0, "object": "coupon"}
    assert api.get("/coupons/off10")["coupon"] == coupon


def test_create_fixed_amount_on_specific_items(api):
    _plan(api, "basic")
    _plan(api, "pro")
    _addon(api, "setup")
    coupon = api.post("/coupons", {
        "id": "five-off", "name": "5 off", "invoice_name": "Five off", "discount_type": "fixed_amount",
        "discount_amount": 500, "apply_on": "each_specified_item", "duration_type": "limited_period",
        "duration_month": 3, "max_redemptions": 10, "plan_constraint": "specific", "plan_ids[0]": "basic",
        "plan_ids[1]": "pro", "addon_constraint": "all", "invoice_notes": "Promo",
        "meta_data": '{"campaign": "spring"}'})["coupon"]
    assert coupon["discount_amount"] == 500 and "discount_percentage" not in coupon
    assert coupon["plan_constraint"] == "specific" and coupon["plan_ids"] == ["basic", "pro"]
    assert coupon["addon_constraint"] == "all" and "addon_ids" not in coupon
    assert coupon["duration_month"] == 3 and coupon["max_redemptions"] == 10
    assert coupon["meta_data"] == {"campaign": "spring"}
    assert api.get("/coupons/five-off")["coupon"] == coupon


def test_create_offer_quantity_and_specific_addons(api):
    _plan(api, "seats")
    _addon(api, "a1")
    coupon = api.post("/coupons", {
        "id": "free-seat", "name": "Free seat", "discount_type": "offer_quantity", "discount_quantity": 1,
        "apply_on": "each_specified_item", "duration_type": "one_time", "plan_constraint": "all",
        "addon_constraint": "specific", "addon_ids[0]": "a1"})["coupon"]
    assert coupon["discount_quantity"] == 1 and coupon["addon_ids"] == ["a1"]
    assert coupon["plan_constraint"] == "all" and coupon["duration_type"] == "one_time"


@pytest.mark.parametrize("body, param", [
    ({"name": "X", "apply_on": "invoice_amount", "discount_percentage": 5}, "id"),
    ({"id": "x", "apply_on": "invoice_amount", "discount_percentage": 5}, "name"),
    ({"id": "x", "name": "X", "discount_percentage": 5}, "apply_on"),
    ({"id": "x", "name": "X", "apply_on": "everything", "discount_percentage": 5}, "apply_on"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount"}, "discount_percentage"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 0}, "discount_percentage"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 100.5}, "discount_percentage"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": "ten"}, "discount_percentage"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5, "discount_amount": 5},
     "discount_amount"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_type": "fixed_amount"}, "discount_amount"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_type": "fixed_amount", "discount_amount": -5},
     "discount_amount"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_type": "fixed_amount", "discount_amount": 0},
     "discount_amount"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_type": "fixed_amount",
      "discount_amount": "4.99"}, "discount_amount"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_type": "gift", "discount_amount": 5},
     "discount_type"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_type": "offer_quantity",
      "discount_quantity": 1}, "apply_on"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5,
      "duration_type": "limited_period"}, "duration_month"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5, "duration_month": 2},
     "duration_month"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5,
      "duration_type": "limited_period", "duration_month": 241}, "duration_month"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5, "duration_type": "always"},
     "duration_type"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5, "max_redemptions": 0},
     "max_redemptions"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5, "valid_till": 1000},
     "valid_till"),
    ({"id": "x", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5, "plan_constraint": "all"},
     "plan_constraint"),
    ({"id": "x", "name": "X", "apply_on": "each_specified_item", "discount_percentage": 5,
      "addon_constraint": "none"}, "plan_constraint"),
    ({"id": "x", "name": "X", "apply_on": "each_specified_item", "discount_percentage": 5,
      "plan_constraint": "all"}, "addon_constraint"),
    ({"id": "x", "name": "X", "apply_on": "each_specified_item", "discount_percentage": 5,
      "plan_constraint": "specific", "addon_constraint": "none"}, "plan_ids[0]"),
    ({"id": "x", "name": "X", "apply_on": "each_specified_item", "discount_percentage": 5,
      "plan_constraint": "all", "addon_constraint": "none", "plan_ids[0]": "p"}, "plan_ids[0]"),
    ({"id": "x", "name": "X", "apply_on": "each_specified_item", "discount_percentage": 5,
      "plan_constraint": "not_applicable", "addon_constraint": "none"}, "plan_constraint"),
    ({"id": "x", "name": "X" * 51, "apply_on": "invoice_amount", "discount_percentage": 5}, "name"),
    ({"id": "x y", "name": "X", "apply_on": "invoice_amount", "discount_percentage": 5}, "id"),
])
def test_create_bad_input_changes_nothing(api, body, param):
    r = api.post("/coupons", body, expect=400)
    assert r["param"] == param and r["api_error_code"] == "param_wrong_value", r
    assert api.get("/coupons").body == {"list": []}


def test_plan_and_addon_ids_must_exist_and_be_active(api, make_site):
    _plan(api, "basic")
    _plan(api, "old")
    api.post("/plans/old/delete")
    _addon(api, "setup")
    base = {"id": "c", "name": "C", "discount_percentage": 5, "apply_on": "each_specified_item",
            "plan_constraint": "specific", "addon_constraint": "none"}
    r = api.post("/coupons", {**base, "plan_ids[0]": "basic", "plan_ids[1]": "nope"}, expect=404)
    assert r["api_error_code"] == "resource_not_found" and r["param"] == "plan_ids[1]"
    r = api.post("/coupons", {**base, "plan_ids[0]": "old"}, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == "plan_ids[0]"
    r = api.post("/coupons", {**base, "plan_ids[0]": "basic", "plan_ids[1]": "basic"}, expect=400)
    assert r["param"] == "plan_ids[1]"
    r = api.post("/coupons", {**base, "plan_ids[0]": "basic", "addon_constraint": "specific",
                              "addon_ids[0]": "setup", "addon_ids[1]": "ghost"}, expect=404)
    assert r["param"] == "addon_ids[1]"
    # another site's plan does not exist here
    other = make_site()
    _plan(other.api, "theirs")
    r = api.post("/coupons", {**base, "plan_ids[0]": "theirs"}, expect=404)
    assert r["param"] == "plan_ids[0]"
    assert api.get("/coupons").body == {"list": []}
    assert api.post("/coupons", {**base, "plan_ids[0]": "basic"})["coupon"]["plan_ids"] == ["basic"]


def test_duplicate_id(api):
    _coupon(api)
    r = api.post("/coupons", {"id": "off10", "name": "Again", "discount_percentage": 5,
                              "apply_on": "invoice_amount"}, expect=400)
    assert r["api_error_code"] == "duplicate_entry" and r["param"] == "id"
    assert api.get("/coupons/off10")["coupon"]["name"] == "OFF10"


def test_unknown_coupon_is_404(api):
    assert api.get("/coupons/nope", expect=404)["api_error_code"] == "resource_not_found"


# ---- status and lists --------------------------------------------------------------------------

def test_valid_till_passing_expires_the_coupon(api):
    _frozen(api)
    _coupon(api, "soon", valid_till=GENESIS + 100)
    _coupon(api, "later", valid_till=GENESIS + 10_000)
    _coupon(api, "forever")
    assert api.get("/coupons/soon")["coupon"]["status"] == "active"
    _travel(api, GENESIS + 100)
    assert api.get("/coupons/soon")["coupon"]["status"] == "active"  # valid up to and including valid_till
    _travel(api, GENESIS + 101)
    assert api.get("/coupons/soon")["coupon"]["status"] == "expired"
    listed = {c["coupon"]["id"]: c["coupon"]["status"] for c in api.get("/coupons").body["list"]}
    assert listed == {"soon": "expired", "later": "active", "forever": "active"}

    def ids(params):
        return sorted(c["coupon"]["id"] for c in api.get("/coupons", params).body["list"])
    assert ids({"status[is]": "expired"}) == ["soon"]
    assert ids({"status[is]": "active"}) == ["forever", "later"]
    assert ids({"status[is_not]": "active"}) == ["soon"]
    assert ids({"status[in]": "[expired,archived]"}) == ["soon"]
    assert ids({"status[not_in]": "[expired]"}) == ["forever", "later"]
    assert ids({"status[starts_with]": "exp"}) == ["soon"]
    assert ids({"status[is_present]": "true"}) == ["forever", "later", "soon"]
    assert ids({"status[is_present]": "false"}) == []
    assert ids({"valid_till[before]": GENESIS + 200}) == ["soon"]
    assert api.get("/coupons", {"status[is]": "gone"}, expect=400)["param"] == "status[is]"


def test_list_pagination_and_filters(api):
    _coupon(api, "c1")
    _coupon(api, "c2", discount_type="fixed_amount", discount_amount=100, discount_percentage="")
    _coupon(api, "c3", duration_type="limited_period", duration_month=6)
    page = api.get("/coupons", {"limit": 2}).body
    assert [c["coupon"]["id"] for c in page["list"]] == ["c3", "c2"]
    page = api.get("/coupons", {"limit": 2, "offset": page["next_offset"]}).body
    assert [c["coupon"]["id"] for c in page["list"]] == ["c1"] and "next_offset" not in page

    def ids(params):
        return sorted(c["coupon"]["id"] for c in api.get("/coupons", params).body["list"])
    assert ids({"discount_type[is]": "fixed_amount"}) == ["c2"]
    assert ids({"duration_type[is]": "limited_period"}) == ["c3"]
    assert ids({"duration_type[is]": "forever", "discount_type[is]": "percentage"}) == ["c1"]
    assert ids({"name[starts_with]": "C"}) == ["c1", "c2", "c3"]
    assert api.get("/coupons", {"discount_type[is]": "free"}, expect=400)["param"] == "discount_type[is]"


def test_other_sites_coupons_are_invisible(api, make_site):
    other = make_site()
    _coupon(other.api, "secret")
    assert api.get("/coupons/secret", expect=404)["api_error_code"] == "resource_not_found"
    assert api.get("/coupons").body == {"list": []}
    r = api.post("/coupon_codes", {"coupon_id": "secret", "coupon_set_name": "s", "code": "C1"}, expect=404)
    assert r["param"] == "coupon_id"
    other.api.post("/coupon_codes", {"coupon_id": "secret", "coupon_set_name": "s", "code": "THEIRS"})
    assert api.get("/coupon_codes/THEIRS", expect=404)["api_error_code"] == "resource_not_found"
    # the same coupon id and code are free here
    _coupon(api, "secret")
    api.post("/coupon_codes", {"coupon_id": "secret", "coupon_set_name": "s", "code": "THEIRS"})


# ---- coupon codes ------------------------------------------------------------------------------

def test_coupon_code_create_and_retrieve(api):
    _coupon(api)
    code = api.post("/coupon_codes", {"coupon_id": "off10", "coupon_set_name": "spring", "code": "SPRING-1"})
    assert code["coupon_code"] == {"code": "SPRING-1", "coupon_id": "off10", "coupon_set_name": "spring",
                                   "object": "coupon_code"}
    assert api.get("/coupon_codes/SPRING-1")["coupon_code"] == code["coupon_code"]
    api.post("/coupon_codes", {"coupon_id": "off10", "coupon_set_name": "spring", "code": "SPRING-2"})
    assert api.get("/coupon_codes/nope", expect=404)["api_error_code"] == "resource_not_found"


@pytest.mark.parametrize("body, param", [
    ({"coupon_set_name": "s", "code": "A"}, "coupon_id"),
    ({"coupon_id": "off10", "code": "A"}, "coupon_set_name"),
    ({"coupon_id": "off10", "coupon_set_name": "s"}, "code"),
    ({"coupon_id": "off10", "coupon_set_name": "s", "code": "X" * 51}, "code"),
    ({"coupon_id": "off10", "coupon_set_name": "s", "code": "TWO WORDS"}, "code"),
    ({"coupon_id": "off10", "coupon_set_name": "s" * 51, "code": "A"}, "coupon_set_name"),
])
def test_coupon_code_bad_input(api, body, param):
    _coupon(api)
    r = api.post("/coupon_codes", body, expect=400)
    assert r["param"] == param and r["api_error_code"] == "param_wrong_value", r


def test_coupon_code_uniqueness_and_sets(api):
    _coupon(api)
    _coupon(api, "other")
    api.post("/coupon_codes", {"coupon_id": "off10", "coupon_set_name": "spring", "code": "A1"})
    r = api.post("/coupon_codes", {"coupon_id": "other", "coupon_set_name": "x", "code": "A1"}, expect=400)
    assert r["api_error_code"] == "duplicate_entry" and r["param"] == "code"
    # coupon ids and codes share a namespace (v1's `coupon` parameter takes either)
    r = api.post("/coupon_codes", {"coupon_id": "off10", "coupon_set_name": "spring", "code": "other"}, expect=400)
    assert r["api_error_code"] == "duplicate_entry" and r["param"] == "code"
    r = api.post("/coupons", {"id": "A1", "name": "A1", "discount_percentage": 1, "apply_on": "invoice_amount"},
                 expect=400)
    assert r["api_error_code"] == "duplicate_entry" and r["param"] == "id"
    # a set belongs to one coupon
    r = api.post("/coupon_codes", {"coupon_id": "other", "coupon_set_name": "spring", "code": "B1"}, expect=400)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == "coupon_set_name"
    api.get("/coupon_codes/B1", expect=404)


def test_coupon_code_needs_an_active_coupon(api):
    _frozen(api)
    _coupon(api, "brief", valid_till=GENESIS + 10)
    api.post("/coupon_codes", {"coupon_id": "brief", "coupon_set_name": "s", "code": "EARLY"})
    _travel(api, GENESIS + 11)
    r = api.post("/coupon_codes", {"coupon_id": "brief", "coupon_set_name": "s", "code": "LATE"}, expect=400)
    assert r["api_error_code"] == "resource_limit_exhausted" and r["param"] == "coupon_id"
    r = api.post("/coupon_codes", {"coupon_id": "ghost", "coupon_set_name": "s", "code": "X"}, expect=404)
    assert r["api_error_code"] == "resource_not_found" and r["param"] == "coupon_id"
    api.get("/coupon_codes/LATE", expect=404)


# ---- redemption (called by subscriptions) -------------------------------------------------------

def _redeem(site, coupon_id, code=None, **kw):
    return site.ctx().write_sync(lambda w: coupons.redeem(w, coupon_id, code, **kw))


def test_redeem_counts_and_expires_at_max_redemptions(site, api):
    _coupon(api, max_redemptions=2)
    assert _redeem(site, "off10")["redemptions"] == 1
    after = _redeem(site, "off10")
    assert after["redemptions"] == 2 and after["status"] == "expired"
    assert api.get("/coupons/off10")["coupon"] == after
    assert [c["coupon"]["id"] for c in api.get("/coupons", {"status[is]": "expired"}).body["list"]] == ["off10"]
    with pytest.raises(Exception) as exc:
        _redeem(site, "off10", param="coupon")
    assert exc.value.api_error_code == "resource_limit_exhausted" and exc.value.param == "coupon"
    assert exc.value.http_status == 400
    assert api.get("/coupons/off10")["coupon"]["redemptions"] == 2


def test_redeem_refuses_past_valid_till_and_unknown(site, api):
    _frozen(api)
    _coupon(api, valid_till=GENESIS + 5)
    _travel(api, GENESIS + 6)
    with pytest.raises(Exception) as exc:
        _redeem(site, "off10")
    assert exc.value.api_error_code == "resource_limit_exhausted" and exc.value.param == "coupon_id"
    assert api.get("/coupons/off10")["coupon"]["redemptions"] == 0
    with pytest.raises(Exception) as exc:
        _redeem(site, "ghost", param="coupon_ids[0]")
    assert exc.value.api_error_code == "resource_not_found" and exc.value.param == "coupon_ids[0]"


def test_redeem_with_codes(site, api):
    _coupon(api)
    _coupon(api, "other")
    api.post("/coupon_codes", {"coupon_id": "off10", "coupon_set_name": "s", "code": "ONCE"})
    api.post("/coupon_codes", {"coupon_id": "other", "coupon_set_name": "t", "code": "THEIRS"})
    assert _redeem(site, "off10", "ONCE")["redemptions"] == 1
    with pytest.raises(Exception) as exc:
        _redeem(site, "off10", "ONCE")
    assert exc.value.api_error_code == "resource_limit_exhausted"
    with pytest.raises(Exception) as exc:
        _redeem(site, "off10", "THEIRS")
    assert exc.value.api_error_code == "param_wrong_value"
    with pytest.raises(Exception) as exc:
        _redeem(site, "off10", "NOPE")
    assert exc.value.api_error_code == "resource_not_found"
    # failed redemptions changed nothing
    assert api.get("/coupons/off10")["coupon"]["redemptions"] == 1
    assert _redeem(site, "other", "THEIRS")["redemptions"] == 1


def test_resolve_coupon_or_code(site, api):
    _coupon(api)
    api.post("/coupon_codes", {"coupon_id": "off10", "coupon_set_name": "s", "code": "CODE1"})
    ctx = site.ctx()
    coupon, code = ctx.read_sync(lambda w: coupons.resolve(w, "off10"))
    assert coupon["id"] == "off10" and code is None
    coupon, code = ctx.read_sync(lambda w: coupons.resolve(w, "CODE1"))
    assert coupon["id"] == "off10" and code == "CODE1"
    with pytest.raises(Exception) as exc:
        ctx.read_sync(lambda w: coupons.resolve(w, "nothing", param="coupon"))
    assert exc.value.http_status == 404 and exc.value.param == "coupon"


def test_concurrent_redemptions_never_exceed_max(site, api):
    from concurrent.futures import ThreadPoolExecutor

    _coupon(api, max_redemptions=3)
    api.post("/coupon_codes", {"coupon_id": "off10", "coupon_set_name": "s", "code": "ONE"})

    def attempt(code):
        try:
            _redeem(site, "off10", code)
            return True
        except Exception as exc:
            assert exc.api_error_code == "resource_limit_exhausted"
            return False
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, [None] * 6 + ["ONE"] * 4))
    assert sum(results) == 3
    assert results[6:].count(True) <= 1  # the code is redeemed at most once
    coupon = api.get("/coupons/off10")["coupon"]
    assert coupon["redemptions"] == 3 and coupon["status"] == "expired"
