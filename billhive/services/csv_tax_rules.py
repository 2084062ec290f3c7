"""CSV tax rules: POST /api/v1/csv_tax_rules (taxes_csv_import), one rule of a tax-rate CSV per
call, and ``basis``: what an invoice's tax depends on, loaded for the pure tax step
(domain/taxes.py) wherever invoice totals are computed (services/invoicing.py building and
closing invoices, pending invoices' added charges, estimates). The rules themselves are in
domain/tax_rules.py; which one applies and the arithmetic in domain/taxes.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from billhive.domain import tax_rules as D
from billhive.domain import taxes as T
from billhive.errors import DuplicateEntry
from billhive.store.resources import ADDONS, COUPONS, CSV_TAX_RULES, CUSTOMERS, PLANS
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
        w.forget(_MEMO)
        return {"csv_tax_rule": _public(doc)}

    return await ctx.write(run)


# ---- applying the rules: what an invoice's tax depends on, loaded once ------------------------------

def basis(w: Work, inv: dict, customer: dict | None = None) -> T.Basis:
    """The tax basis of ``inv`` (domain/taxes.py): the invoice's price type (the site's
    ``price_type`` for a new one), the rule for its shipping address (else its billing address,
    else the customer's) valid at its start date, the customer's taxability, and which of its
    plans and addons are not taxable. ``customer``: the invoice's, when the caller has it loaded
    (estimates pass one that is not saved)."""
    price_type = inv.get("price_type") or w.site.setting("price_type")
    if customer is None:
        customer = CUSTOMERS.get(w.tx, w.site_id, inv["customer_id"]) or {}
    address = T.taxable_address(inv.get("shipping_address"),
                                inv.get("billing_address") or customer.get("billing_address"))
    exempt = customer.get("taxability") == "exempt"
    if address is None or exempt:
        return T.basis_for(None, price_type=price_type, exempt=exempt)
    rule = T.select_rule(candidates(w, address), address, int(inv["start_date"]))
    if rule is None:
        return T.basis_for(None, price_type=price_type)
    return T.basis_for(rule, price_type=price_type, untaxed=_untaxed(w, inv.get("line_items", ())),
                       item_coupons=_item_coupons(w, inv.get("discounts", ())))


def _item_coupons(w: Work, discounts: Iterable[dict]) -> tuple[dict, ...]:
    """The catalog coupons of the invoice's coupon discounts that apply to specified items."""
    ids = sorted({d["entity_id"] for d in discounts if d.get("type") == "coupon" and d.get("entity_id")})
    if not ids:
        return ()
    found = COUPONS.find(w.tx, w.site_id, COUPONS.t.c.id.in_(ids))
    return tuple(c for c in found if c.get("apply_on") == "each_specified_item")


def credit_tax(w: Work, customer: dict, sub: dict, credited: list[dict], excess: int) -> int:
    """The tax ``excess`` prorated credits of a change to ``sub`` now give back (domain/taxes.py
    ``credit_tax``): the rule for the subscription's shipping address (else the customer's
    billing address) valid now, as the change's invoice was taxed."""
    probe = {"customer_id": customer["id"], "start_date": w.now, "shipping_address": sub.get("shipping_address"),
             "line_items": credited}
    return T.credit_tax(credited, excess, basis(w, probe, customer))


def candidates(w: Work, address: dict) -> list[dict]:
    """The site's rules that can match ``address``: those of its country for the whole country
    (``*``) or its state (the (site, country, state) index), in creation order. Memoised for the
    transaction, so an operation that taxes several invoices (a batch of renewals, an estimate
    and the change it shows) reads them once per region; an import in the same transaction
    forgets the memo."""
    country = (address.get("country") or "").strip().upper()
    states = sorted({D.ANY_STATE, T.address_state(address) or D.ANY_STATE})
    t = CSV_TAX_RULES.t

    def load() -> list[dict]:
        return CSV_TAX_RULES.find(w.tx, w.site_id, t.c.country == country, t.c.state.in_(states))

    return w.cached(f"{_MEMO}{country}:{','.join(states)}", load)


_MEMO = "csv_tax_rules:"


def _untaxed(w: Work, lines: Iterable[dict]) -> frozenset[tuple[str, str]]:
    """The (plan|addon, id) of the lines' catalog items whose ``taxable`` is false."""
    wanted: dict[str, set[str]] = {"plan": set(), "addon": set()}
    for li in lines:
        kind, entity_id = T.line_entity(li)
        if kind in wanted and entity_id:
            wanted[kind].add(entity_id)
    out = set()
    for kind, table in (("plan", PLANS), ("addon", ADDONS)):
        if wanted[kind]:
            for doc in table.find(w.tx, w.site_id, table.t.c.id.in_(sorted(wanted[kind]))):
                if doc.get("taxable") is False:
                    out.add((kind, doc["id"]))
    return frozenset(out)
