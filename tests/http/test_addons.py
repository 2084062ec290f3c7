"""Addons over HTTP: create, update, retrieve, list, delete (archive), and their errors."""

from __future__ import annotations

import pytest

from billhive.services import addons


def _addon(api, id: str = "support", **extra) -> dict:
    body = {"id": id, "name": id.capitalize(), "charge_type": "recurring", "price": 500, "period": 1,
            "period_unit": "month", **extra}
    return api.post("/addons", body)["addon"]


def test_create_recurring_with_spec_defaults(api):
    addon = _addon(api)
    assert addon == {"id": "support", "name": "Support", "type": "on_off", "charge_type": "recurring", "price": 500,
                     "period": 1, "period_unit": "month", "status": "active", "enabled_in_portal": True,
                     "proration_type": "site_default", "taxable": True, "object": "addon"}
    assert api.get("/addons/support")["addon"] == addon


def test_create_quantity_addon_with_every_field(api):
    addon = api.post("/addons", {
        "id": "seats", "name": "Seats", "invoice_name": "Extra seats", "description": "Per seat",
        "charge_type": "recurring", "price": 250, "period": 3, "period_unit": "month", "type": "quantity",
        "unit": "seat", "enabled_in_portal": "false", "taxable": "false", "invoice_notes": "n",
        "meta_data": '{"a": 1}', "proration_type": "full_term"})["addon"]
    assert addon["type"] == "quantity" and addon["unit"] == "seat" and addon["period"] == 3
    assert addon["enabled_in_portal"] is False and addon["proration_type"] == "full_term"
    assert addon["meta_data"] == {"a": 1}


def test_recurring_period_defaults_to_one(api):
    addon = api.post("/addons", {"id": "a", "name": "A", "charge_type": "recurring", "period_unit": "year"})["addon"]
    assert addon["period"] == 1 and addon["period_unit"] == "year" and addon["price"] == 0


def test_non_recurring_has_period_unit_not_applicable(api):
    addon = api.post("/addons", {"id": "setup", "name": "Setup", "charge_type": "non_recurring",
                                 "price": 5000})["addon"]
    assert addon["period_unit"] == "not_applicable" and "period" not in addon
    addon = api.post("/addons", {"id": "setup2", "name": "Setup", "charge_type": "non_recurring",
                                 "period_unit": "not_applicable"})["addon"]
    assert addon["period_unit"] == "not_applicable"


@pytest.mark.parametrize("body, param", [
    ({"name": "A", "charge_type": "recurring", "period_unit": "month"}, "id"),
    ({"id": "a", "charge_type": "recurring", "period_unit": "month"}, "name"),
    ({"id": "a", "name": "A"}, "charge_type"),
    ({"id": "a", "name": "A", "charge_type": "weekly"}, "charge_type"),
    ({"id": "a", "name": "A", "charge_type": "recurring"}, "period_unit"),
    ({"id": "a", "name": "A", "charge_type": "recurring", "period_unit": "not_applicable"}, "period_unit"),
    ({"id": "a", "name": "A", "charge_type": "non_recurring", "period": 1}, "period"),
    ({"id": "a", "name": "A", "charge_type": "non_recurring", "period_unit": "month"}, "period_unit"),
    ({"id": "a", "name": "A", "charge_type": "non_recurring", "type": "bundle"}, "type"),
    ({"id": "a", "name": "A", "charge_type": "non_recurring", "unit": "seat"}, "unit"),
    ({"id": "a", "name": "A", "charge_type": "non_recurring", "type": "on_off", "unit": "seat"}, "unit"),
    ({"id": "a", "name": "A", "charge_type": "non_recurring", "price": -1}, "price"),
    ({"id": "a", "name": "A", "charge_type": "non_recurring", "price": "9.99"}, "price"),
    ({"id": "a", "name": "A", "charge_type": "recurring", "period_unit": "month", "period": 0}, "period"),
    ({"id": "a", "name": "A", "charge_type": "non_recurring", "proration_type": "never"}, "proration_type"),
    ({"id": "a%b", "name": "A", "charge_type": "non_recurring"}, "id"),
])
def test_create_bad_input_changes_nothing(api, body, param):
    r = api.post("/addons", body, expect=400)
    assert r["param"] == param and r["api_error_code"] == "param_wrong_value", r
    assert api.get("/addons").body == {"list": []}


def test_duplicate_id(api):
    _addon(api)
    r = api.post("/addons", {"id": "support", "name": "X", "charge_type": "non_recurring"}, expect=400)
    assert r["api_error_code"] == "duplicate_entry" and r["param"] == "id"


def test_update_switches_charge_type_and_type(api):
    _addon(api, type="quantity", unit="agent")
    addon = api.post("/addons/support", {"charge_type": "non_recurring", "type": "on_off"})["addon"]
    assert addon["period_unit"] == "not_applicable" and "period" not in addon and "unit" not in addon
    r = api.post("/addons/support", {"charge_type": "recurring"}, expect=400)
    assert r["param"] == "period_unit"
    addon = api.post("/addons/support", {"charge_type": "recurring", "period_unit": "week", "price": 900})["addon"]
    assert addon["period"] == 1 and addon["period_unit"] == "week" and addon["price"] == 900
    assert api.get("/addons/support")["addon"] == addon


def test_update_bad_input(api):
    _addon(api)
    assert api.post("/addons/support", {"price": -1}, expect=400)["param"] == "price"
    assert api.post("/addons/support", {"unit": "seat"}, expect=400)["param"] == "unit"
    assert api.post("/addons/support", {"period_unit": "not_applicable"}, expect=400)["param"] == "period_unit"
    assert api.post("/addons/support", {"type": "tiered"}, expect=400)["param"] == "type"
    assert api.get("/addons/support")["addon"]["price"] == 500
    assert api.post("/addons/nope", {"price": 1}, expect=404)["api_error_code"] == "resource_not_found"


def test_delete_archives(api):
    _addon(api)
    addon = api.post("/addons/support/delete")["addon"]
    assert addon["status"] == "archived" and isinstance(addon["archived_at"], int)
    assert api.get("/addons/support")["addon"] == addon
    assert api.get("/addons").body["list"] == [{"addon": addon}]
    assert api.post("/addons/support", {"price": 1}, expect=409)["api_error_code"] == "invalid_state_for_request"
    assert api.post("/addons/support/delete", expect=409)["api_error_code"] == "invalid_state_for_request"
    assert api.post("/addons/nope/delete", expect=404)["api_error_code"] == "resource_not_found"


def test_list_and_filters(api):
    _addon(api, "a1", price=100)
    _addon(api, "a2", price=200, type="quantity")
    api.post("/addons", {"id": "a3", "name": "A3", "charge_type": "non_recurring", "price": 300})
    page = api.get("/addons", {"limit": 2}).body
    assert [a["addon"]["id"] for a in page["list"]] == ["a3", "a2"]
    page = api.get("/addons", {"limit": 2, "offset": page["next_offset"]}).body
    assert [a["addon"]["id"] for a in page["list"]] == ["a1"]

    def ids(params):
        return sorted(a["addon"]["id"] for a in api.get("/addons", params).body["list"])
    assert ids({"charge_type[is]": "non_recurring"}) == ["a3"]
    assert ids({"type[is]": "quantity"}) == ["a2"]
    assert ids({"price[lt]": 300}) == ["a1", "a2"]
    assert ids({"period_unit[is]": "not_applicable"}) == ["a3"]
    assert api.get("/addons", {"charge_type[is]": "sometimes"}, expect=400)["param"] == "charge_type[is]"


def test_other_sites_addons_are_invisible(api, make_site):
    other = make_site()
    _addon(other.api, "secret")
    assert api.get("/addons/secret", expect=404)["api_error_code"] == "resource_not_found"
    assert api.post("/addons/secret", {"price": 1}, expect=404)["api_error_code"] == "resource_not_found"
    assert api.post("/addons/secret/delete", expect=404)["api_error_code"] == "resource_not_found"
    assert api.get("/addons").body == {"list": []}
    assert other.api.get("/addons/secret")["addon"]["status"] == "active"


def test_get_and_use_addon_helpers(site, api):
    _addon(api)
    ctx = site.ctx()
    assert ctx.write_sync(lambda w: addons.use_addon(w, "support"))["id"] == "support"
    with pytest.raises(Exception) as exc:
        ctx.read_sync(lambda w: addons.get_addon(w, "nope", param="addons[id][0]"))
    assert exc.value.http_status == 404 and exc.value.param == "addons[id][0]"
    # in use: only name, invoice_name and price may change
    addon = api.post("/addons/support", {"name": "Help", "invoice_name": "Help desk", "price": 700})["addon"]
    assert addon["price"] == 700
    assert api.post("/addons/support", {"period": 2}, expect=400)["param"] == "period"
    assert api.post("/addons/support", {"taxable": "false"}, expect=400)["param"] == "taxable"
    api.post("/addons/support/delete")
    with pytest.raises(Exception) as exc:
        ctx.write_sync(lambda w: addons.use_addon(w, "support", param="addons[id][1]"))
    assert exc.value.api_error_code == "param_wrong_value" and exc.value.param == "addons[id][1]"
