"""CSV tax rules: POST /api/v1/csv_tax_rules (taxes_csv_import), one rule of a tax-rate CSV per call.

Rules are stored and returned faithfully; billhive does not apply them to invoices yet (it is
tax-free by default, docs/CHOICES.md). The rules themselves are in domain/tax_rules.py.
"""

from __future__ import annotations

from billhive.domain import tax_rules as D
from billhive.errors import DuplicateEntry
from billhive.store.resources import CSV_TAX_RULES
from billhive.util.ids import random_id
from billhive.work.context import Ctx, Work


def _public(doc: dict) -> dict:
    """The rule as the API shows it: the resource has no id (the row's id is billhive's handle)."""
    return {k: v for k, v in doc.items() if k != "id"}


async def create(ctx: Ctx, params: dict) -> dict:
    rule = D.build_rule(params)  # validation needs no database: fail before opening a transaction

    def run(w: Work) -> dict:
        key = D.region_key(rule)
        t = CSV_TAX_RULES.t
        same_region = CSV_TAX_RULES.find(w.tx, w.site_id, t.c.region_key == key, for_update=True)
        clashing = D.conflicts(rule, same_region)
        if clashing and not rule["overwrite"]:
            raise DuplicateEntry("A tax rule for this region and validity period already exists; "
                                 "pass overwrite=true to replace it", param="overwrite")
        for old in clashing:
            CSV_TAX_RULES.delete(w.tx, w.site_id, old["id"])
        doc = {"id": random_id("ctr_", 20), **rule, "status": D.status(rule, w.now), "object": "csv_tax_rule"}
        CSV_TAX_RULES.insert(w.tx, w.site_id, doc, w.now, columns={"region_key": key})
        return {"csv_tax_rule": _public(doc)}

    return await ctx.write(run)
