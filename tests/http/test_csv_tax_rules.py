"""POST /csv_tax_rules (taxes_csv_import): validation, stored rule, overwrite, status, isolation."""

from __future__ import annotations

import pytest

from billhive.store.resources import CSV_TAX_RULES

GENESIS = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def tsite(site):
    site.api.post("/time_machines/delorean/start_afresh", {"genesis_time": GENESIS})
    return site


def stored(site) -> list[dict]:
    return site.app.db.read_sync(lambda tx: CSV_TAX_RULES.find(tx, site.pk))


def rule(site, expect: int = 200, **params):
    body = {"country": "US", "tax1_name": "Sales tax", "tax1_rate": "4", **params}
    r = site.api.post("/csv_tax_rules", {k: v for k, v in body.items() if v is not None}, expect=expect)
    return r["csv_tax_rule"] if expect == 200 else r


def test_stores_and_returns_the_rule(tsite):
    r = rule(tsite, tax_profile_name="Digital", state="NY", zip_code_start="10001", zip_code_end="10292",
             tax1_name="NY State", tax1_rate="4", tax1_juris_type="state", tax1_juris_name="New York",
             tax1_juris_code="36", tax2_name="NYC", tax2_rate="4.875", tax2_juris_type="city",
             service_type="digital", time_zone="EST", valid_from=str(GENESIS - 10))
    assert r == {
        "tax_profile_name": "Digital", "country": "US", "state": "NY", "zip_code_start": 10001, "zip_code_end": 10292,
        "tax1_name": "NY State", "tax1_rate": 4.0, "tax1_juris_type": "state", "tax1_juris_name": "New York",
        "tax1_juris_code": "36", "tax2_name": "NYC", "tax2_rate": 4.875, "tax2_juris_type": "city",
        "service_type": "digital", "time_zone": "EST", "valid_from": GENESIS - 10, "rule_weight": 3,
        "overwrite": False, "status": "active", "object": "csv_tax_rule",
    }
    (row,) = stored(tsite)
    assert {k: v for k, v in row.items() if k != "id"} == r  # stored exactly as returned


def test_defaults_country_wide_rule(tsite):
    r = rule(tsite)
    assert r["state"] == "*" and r["rule_weight"] == 1 and r["overwrite"] is False and r["status"] == "active"
    assert rule(tsite, country="ca", state="on")["country"] == "CA"  # codes are normalised to upper case
    assert rule(tsite, country="CA", state="CA-QC")["state"] == "QC"


def test_weights_follow_specificity(tsite):
    assert rule(tsite, state="CA")["rule_weight"] == 2
    assert rule(tsite, state="CA", zip_code="94105")["rule_weight"] == 4


def test_status_from_validity_on_the_site_clock(tsite):
    assert rule(tsite, zip_code="1", valid_from=str(GENESIS + 86400))["status"] == "scheduled"
    assert rule(tsite, zip_code="2", valid_from=str(GENESIS - 86400), valid_till=str(GENESIS))["status"] == "expired"
    assert rule(tsite, zip_code="3", valid_till=str(GENESIS + 1))["status"] == "active"


@pytest.mark.parametrize("params, param", [
    ({"tax1_rate": "100.5"}, "tax1_rate"),
    ({"tax1_rate": "-1"}, "tax1_rate"),
    ({"tax1_rate": "abc"}, "tax1_rate"),
    ({"tax1_rate": None}, "tax1_rate"),
    ({"tax1_name": None}, "tax1_name"),
    ({"country": None}, "country"),
    ({"country": "XX"}, "country"),
    ({"country": "USA"}, "country"),
    ({"state": "New York"}, "state"),
    ({"zip_code": "10001", "zip_code_start": "1", "zip_code_end": "2"}, "zip_code"),
    ({"zip_code_start": "10"}, "zip_code_end"),
    ({"zip_code_end": "10"}, "zip_code_start"),
    ({"zip_code_start": "20", "zip_code_end": "10"}, "zip_code_end"),
    ({"zip_code_start": "-5", "zip_code_end": "10"}, "zip_code_start"),
    ({"tax2_rate": "5"}, "tax2_name"),
    ({"tax2_name": "City"}, "tax2_rate"),
    ({"tax3_name": "County", "tax3_rate": "1"}, "tax3_name"),
    ({"tax2_name": "City", "tax2_rate": "101"}, "tax2_rate"),
    ({"tax1_juris_type": "planet"}, "tax1_juris_type"),
    ({"service_type": "physical"}, "service_type"),
    ({"time_zone": "Europe/Paris"}, "time_zone"),
    ({"valid_from": str(GENESIS), "valid_till": str(GENESIS)}, "valid_till"),
    ({"overwrite": "yes"}, "overwrite"),
    ({"rule_weight": "5"}, "rule_weight"),
])
def test_bad_input_is_400_and_nothing_is_stored(tsite, params, param):
    r = rule(tsite, expect=400, **params)
    assert r["api_error_code"] == "param_wrong_value" and r["param"] == param
    assert stored(tsite) == []


def test_same_region_needs_overwrite(tsite):
    first = rule(tsite, state="NY", tax1_rate="4")
    r = rule(tsite, expect=400, state="NY", tax1_rate="5")
    assert r["api_error_code"] == "duplicate_entry" and r["param"] == "overwrite"
    assert [x["tax1_rate"] for x in stored(tsite)] == [first["tax1_rate"]]
    replaced = rule(tsite, state="NY", tax1_rate="5", overwrite="true")
    assert replaced["tax1_rate"] == 5.0 and replaced["overwrite"] is True
    assert [x["tax1_rate"] for x in stored(tsite)] == [5.0]
    # other regions, profiles and service types are separate rules
    rule(tsite, state="NJ")
    rule(tsite, state="NY", tax_profile_name="Digital")
    rule(tsite, state="NY", service_type="digital")
    rule(tsite, state="NY", zip_code="10001")
    assert len(stored(tsite)) == 5


def test_successive_validity_periods_coexist(tsite):
    rule(tsite, tax1_rate="4", valid_till=str(GENESIS + 1000))
    rule(tsite, tax1_rate="5", valid_from=str(GENESIS + 1000))  # starts when the other ends
    assert sorted(x["tax1_rate"] for x in stored(tsite)) == [4.0, 5.0]
    r = rule(tsite, expect=400, tax1_rate="6", valid_from=str(GENESIS + 500))  # overlaps both
    assert r["api_error_code"] == "duplicate_entry"
    rule(tsite, tax1_rate="6", valid_from=str(GENESIS + 500), overwrite="true")
    assert [x["tax1_rate"] for x in stored(tsite)] == [6.0]


def test_read_only_key_cannot_import(tsite):
    tsite.api.with_key(tsite.read_only_key).post("/csv_tax_rules", {"country": "US", "tax1_name": "T",
                                                                    "tax1_rate": "1"}, expect=403)
    assert stored(tsite) == []


def test_sites_have_separate_rules(tsite, make_site):
    other = make_site()
    rule(other, state="NY")
    rule(tsite, state="NY")  # no clash with the other site's rule: no overwrite needed
    assert len(stored(tsite)) == 1 and len(stored(other)) == 1
    rule(tsite, state="NY", tax1_rate="9", overwrite="true")
    assert [x["tax1_rate"] for x in stored(other)] == [4.0]
