"""Which tax rules an invoice's tax step reads (services/csv_tax_rules.py ``candidates``): only
those of the address's country for the whole country or its state, by the (site, country, state)
index, memoised per transaction (both stores). docs/CHOICES.md, "Taxes" (Loading rules)."""

from __future__ import annotations

from billhive.services import csv_tax_rules
from billhive.store.resources import CSV_TAX_RULES
from billhive.work.context import Work

NY = {"country": "US", "state_code": "NY", "zip": "10001"}


def rule(site, country: str, state: str = "*", **params) -> dict:
    body = {"country": country, "state": state, "tax1_name": f"{country}-{state}", "tax1_rate": "5", **params}
    return site.api.post("/csv_tax_rules", body)["csv_tax_rule"]


def names(rules: list[dict]) -> list[str]:
    return [r["tax1_name"] for r in rules]


def test_only_the_country_and_state_rules_are_read(site):
    rule(site, "US", "NY")
    rule(site, "US")
    rule(site, "US", "CA")
    rule(site, "CA")
    rule(site, "US", "NY", zip_code="10001")
    rule(site, "FR")
    ctx = site.ctx()
    assert ctx.read_sync(lambda w: names(csv_tax_rules.candidates(w, NY))) == ["US-NY", "US-*", "US-NY"]
    assert ctx.read_sync(lambda w: names(csv_tax_rules.candidates(w, {"country": "us"}))) == ["US-*"]
    assert ctx.read_sync(lambda w: names(csv_tax_rules.candidates(w, {"country": "US", "state_code": "US-CA"}))) \
        == ["US-*", "US-CA"]
    assert ctx.read_sync(lambda w: csv_tax_rules.candidates(w, {"country": "DE"})) == []
    # the columns are the rule's own (index columns recomputed from the document)
    stored = ctx.read_sync(lambda w: w.tx.all(CSV_TAX_RULES.t.select().with_only_columns(
        CSV_TAX_RULES.t.c.country, CSV_TAX_RULES.t.c.state).where(CSV_TAX_RULES.t.c.site_id == w.site_id)))
    assert sorted(tuple(r) for r in stored) == sorted([("US", "NY"), ("US", "*"), ("US", "CA"), ("CA", "*"),
                                                       ("US", "NY"), ("FR", "*")])


def test_the_rules_are_read_once_per_transaction_until_forgotten(site):
    rule(site, "US", "NY")

    def unit(w: Work) -> tuple[int, int, int]:
        first = csv_tax_rules.candidates(w, NY)
        again = csv_tax_rules.candidates(w, NY)
        w.forget("csv_tax_rules:")
        fresh = csv_tax_rules.candidates(w, NY)
        return len(first), int(first is again), int(fresh is not first)

    assert site.ctx().read_sync(unit) == (1, 1, 1)
