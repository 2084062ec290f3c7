"""CSV tax rule rules: validation, region keys, weights, validity overlap."""

from __future__ import annotations

import pytest

from billhive.domain import tax_rules as D
from billhive.errors import ParamError

BASE = {"country": "US", "tax1_name": "Sales tax", "tax1_rate": 4.0}


def test_minimal_rule():
    assert D.build_rule(BASE) == {"country": "US", "state": "*", "tax1_name": "Sales tax", "tax1_rate": 4.0,
                                  "rule_weight": D.WEIGHT_COUNTRY, "overwrite": False}


def test_every_iso_country_code_is_known():
    assert len(D.COUNTRIES) == 250 and {"US", "CA", "GB", "DE", "IN", "AU", "XK"} <= D.COUNTRIES


@pytest.mark.parametrize("extra, param", [
    ({"tax4_name": "x", "tax4_rate": 1.0, "tax2_name": "y", "tax2_rate": 1.0}, "tax4_name"),
    ({"tax1_name": "  "}, "tax1_name"),
    ({"zip_code": " "}, "zip_code"),
    ({"state": "US-"}, "state"),
])
def test_invalid(extra, param):
    with pytest.raises(ParamError) as exc:
        D.build_rule({**BASE, **extra})
    assert exc.value.param == param


def test_four_taxes():
    params = dict(BASE)
    for n in (2, 3, 4):
        params.update({f"tax{n}_name": f"T{n}", f"tax{n}_rate": float(n)})
    rule = D.build_rule(params)
    assert [rule[f"tax{n}_rate"] for n in (1, 2, 3, 4)] == [4.0, 2.0, 3.0, 4.0]


def test_region_key_ignores_rates_and_validity_but_not_region():
    a = D.build_rule({**BASE, "state": "NY"})
    assert D.region_key(a) == D.region_key(D.build_rule({**BASE, "state": "ny", "tax1_rate": 9.0, "valid_from": 5}))
    for other in ({"state": "NJ"}, {"state": "NY", "zip_code": "1"}, {"state": "NY", "tax_profile_name": "P"},
                  {"state": "NY", "service_type": "digital"}, {"state": "NY", "zip_code_start": 1, "zip_code_end": 2}):
        assert D.region_key(D.build_rule({**BASE, **other})) != D.region_key(a)


@pytest.mark.parametrize("a, b, overlap", [
    ({}, {}, True),
    ({"valid_till": 10}, {"valid_from": 10}, False),
    ({"valid_till": 11}, {"valid_from": 10}, True),
    ({"valid_from": 10, "valid_till": 20}, {"valid_from": 20, "valid_till": 30}, False),
    ({"valid_from": 10, "valid_till": 20}, {"valid_from": 0, "valid_till": 40}, True),
    ({"valid_from": 10}, {"valid_till": 5}, False),
])
def test_windows_overlap(a, b, overlap):
    assert D.windows_overlap(a, b) is overlap and D.windows_overlap(b, a) is overlap


def test_status():
    assert D.status({}, 100) == "active"
    assert D.status({"valid_from": 101}, 100) == "scheduled"
    assert D.status({"valid_till": 100}, 100) == "expired"
