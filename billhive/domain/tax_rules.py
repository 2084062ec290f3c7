"""CSV tax rules (POST /csv_tax_rules): what makes a rule valid, which region it covers, how
specific it is, and when two rules collide. Pure: works on the decoded request parameters.

A rule covers a region - tax profile, country, state (``*`` = the whole country), and either one
zip code or a zip code range - for an optional service type and validity window, and carries up
to four taxes (``tax1`` .. ``tax4``: name, rate in percent, jurisdiction). Which rule applies to
an invoice, and its tax: domain/taxes.py.
"""

from __future__ import annotations

import hashlib
import json
import re

from billhive.domain.document import Doc
from billhive.domain.geo import ISO_COUNTRIES
from billhive.errors import ParamError, ParamRequired

MAX_TAXES = 4
TAX_FIELDS = ("name", "rate", "juris_type", "juris_name", "juris_code")
ANY_STATE = "*"

# ISO 3166-1 alpha-2, plus XK (Kosovo, user-assigned but used by tax authorities and gateways).
COUNTRIES = ISO_COUNTRIES | {"XK"}

# the part of an ISO 3166-2 code after the country ("NY" of US-NY, "ON" of CA-ON)
_SUBDIVISION = re.compile(r"^[A-Z0-9]{1,3}$")

# rule_weight: the more specific the region, the heavier the rule (a lookup prefers the heaviest)
WEIGHT_COUNTRY, WEIGHT_STATE, WEIGHT_ZIP_RANGE, WEIGHT_ZIP_CODE = 1, 2, 3, 4


def _tax_key(n: int, field: str) -> str:
    return f"tax{n}_{field}"


def build_rule(params: Doc) -> Doc:
    """Validate the request parameters and return the rule as the API shows it (without status).

    Raises ParamError naming the offending parameter. Spec-level checks (types, lengths, enums,
    rates between 0 and 100) have already been made by the parameter decoder.
    """
    rule: Doc = {}
    if params.get("tax_profile_name") is not None:
        rule["tax_profile_name"] = params["tax_profile_name"]

    country = params.get("country")
    if country is None:
        raise ParamRequired("country : cannot be blank", param="country")
    country = country.strip().upper()
    if country not in COUNTRIES:
        raise ParamError("country : must be an ISO 3166-1 alpha-2 country code (e.g. US)", param="country")
    rule["country"] = country

    state = (params.get("state") or ANY_STATE).strip().upper()
    if state.startswith(country + "-"):  # the full ISO 3166-2 form (US-NY) is accepted as the short one
        state = state[len(country) + 1:]
    if state != ANY_STATE and not _SUBDIVISION.match(state):
        raise ParamError("state : must be * or an ISO 3166-2 subdivision code (e.g. NY)", param="state")
    rule["state"] = state

    zip_code = params.get("zip_code")
    start, end = params.get("zip_code_start"), params.get("zip_code_end")
    if zip_code is not None and (start is not None or end is not None):
        raise ParamError("zip_code : give either zip_code or zip_code_start and zip_code_end, not both",
                         param="zip_code")
    if (start is None) != (end is None):
        missing = "zip_code_end" if end is None else "zip_code_start"
        raise ParamRequired(f"{missing} : cannot be blank when a zip code range is given", param=missing)
    if start is not None:
        if start < 0:
            raise ParamError("zip_code_start : cannot be negative", param="zip_code_start")
        if end < start:
            raise ParamError("zip_code_end : cannot be less than zip_code_start", param="zip_code_end")
        rule["zip_code_start"], rule["zip_code_end"] = start, end
    if zip_code is not None:
        zip_code = zip_code.strip()
        if not zip_code:
            raise ParamError("zip_code : cannot be blank", param="zip_code")
        rule["zip_code"] = zip_code

    last_given = 0
    for n in range(1, MAX_TAXES + 1):
        given = {f: params[_tax_key(n, f)] for f in TAX_FIELDS if params.get(_tax_key(n, f)) is not None}
        if not given:
            if n == 1:
                raise ParamRequired("tax1_name : cannot be blank", param="tax1_name")
            continue
        if last_given != n - 1:
            raise ParamError(f"{_tax_key(n, 'name')} : give tax{n - 1} before tax{n}", param=_tax_key(n, "name"))
        for required in ("name", "rate"):
            if required not in given:
                key = _tax_key(n, required)
                raise ParamRequired(f"{key} : cannot be blank", param=key)
        if not given["name"].strip():
            raise ParamError(f"{_tax_key(n, 'name')} : cannot be blank", param=_tax_key(n, "name"))
        for f in TAX_FIELDS:
            if f in given:
                rule[_tax_key(n, f)] = given[f]
        last_given = n

    if params.get("service_type") is not None:
        rule["service_type"] = params["service_type"]
    if params.get("time_zone") is not None:
        rule["time_zone"] = params["time_zone"]
    valid_from, valid_till = params.get("valid_from"), params.get("valid_till")
    if valid_from is not None and valid_till is not None and valid_till <= valid_from:
        raise ParamError("valid_till : must be after valid_from", param="valid_till")
    if valid_from is not None:
        rule["valid_from"] = valid_from
    if valid_till is not None:
        rule["valid_till"] = valid_till
    rule["rule_weight"] = weight(rule)
    rule["overwrite"] = bool(params.get("overwrite", False))
    return rule


def weight(rule: Doc) -> int:
    if rule.get("zip_code") is not None:
        return WEIGHT_ZIP_CODE
    if rule.get("zip_code_start") is not None:
        return WEIGHT_ZIP_RANGE
    if rule.get("state", ANY_STATE) != ANY_STATE:
        return WEIGHT_STATE
    return WEIGHT_COUNTRY


def status(rule: Doc, now: int) -> str:
    """active | scheduled (valid_from ahead) | expired (valid_till passed), on the site clock."""
    if rule.get("valid_till") is not None and rule["valid_till"] <= now:
        return "expired"
    if rule.get("valid_from") is not None and rule["valid_from"] > now:
        return "scheduled"
    return "active"


def region_key(rule: Doc) -> str:
    """Digest of what a rule covers: rules with equal keys describe the same region and service."""
    parts = [rule.get("tax_profile_name"), rule["country"], rule.get("state", ANY_STATE), rule.get("zip_code"),
             rule.get("zip_code_start"), rule.get("zip_code_end"), rule.get("service_type")]
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def windows_overlap(a: Doc, b: Doc) -> bool:
    """Whether the validity windows [valid_from, valid_till) of two rules share a moment (open ends
    are unbounded)."""
    a_from, a_till = a.get("valid_from"), a.get("valid_till")
    b_from, b_till = b.get("valid_from"), b.get("valid_till")
    starts_before_b_ends = b_till is None or a_from is None or a_from < b_till
    b_starts_before_a_ends = a_till is None or b_from is None or b_from < a_till
    return starts_before_b_ends and b_starts_before_a_ends


def conflicts(new: Doc, existing: list[Doc]) -> list[Doc]:
    """The existing rules of the same region whose validity overlaps the new rule's."""
    key = region_key(new)
    return [r for r in existing if region_key(r) == key and windows_overlap(new, r)]
