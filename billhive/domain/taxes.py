"""Taxes: which CSV tax rule applies to an invoice, and the tax of its lines. Pure: works on
rule documents (domain/tax_rules.py), addresses and invoice documents (API shape).

The service loads the inputs once (services/csv_tax_rules.py ``basis``) and passes them in as a
``Basis``; ``apply`` then sets each line's ``is_taxed``, ``tax`` and ``tax_rate`` and the invoice's
``taxes[]``. domain/invoices.py ``recompute`` calls it whenever it is given a Basis, so the
invoice's totals, the closing decision (promotional credits are a discount before tax) and the
estimates all go through the same arithmetic. Sources for every rule: docs/CHOICES.md, "Taxes".

1. **Which rule** (``select_rule``): the taxable address is the shipping address, else the billing
   address, else there is no tax (spec, ``customer.taxability``). Rules of the address's country
   whose state is ``*`` or the address's state, whose zip (code or range) matches when they have
   one, and which are valid at the invoice date (``valid_from <= date < valid_till``). The heaviest
   (``rule_weight``: zip code 4 > zip range 3 > state 2 > country 1) wins; a narrower zip range
   wins a tie, then the rule without a service type, then the newest. Rules of a named tax profile
   never apply (a v1 plan or addon cannot name one).
2. **Who and what**: an ``exempt`` customer pays none; a line of a plan or addon whose ``taxable``
   is false is not taxed; every other line (setup fees, ad hoc charges) is.
3. **Arithmetic** (``apply``): discounts come off before tax (``line_discounts``): an item-limited
   coupon's only from the lines it applies to, invoice-level ones (invoice_amount coupons, prorated
   credits, promotional credits) shared among the lines in proportion to what is left of them
   (largest remainder, so the shares add up to the discount exactly). Each tax of the rule is computed on
   the same discounted line amount (they stack side by side, not compounded) and rounded half up
   per line and per tax; the line's tax is the sum, the invoice's the sum of the lines.
   - ``tax_exclusive``: tax = base x rate / 100, added on top (amount = sub_total - discounts + tax);
   - ``tax_inclusive``: the price contains the tax: tax = base x rate / (100 + total rate), and the
     invoice amount is sub_total - discounts (the tax is shown, not added).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from billhive.domain import coupons as coupon_rules
from billhive.domain import money
from billhive.domain.document import Doc
from billhive.domain.tax_rules import ANY_STATE, MAX_TAXES, weight

EXCLUSIVE, INCLUSIVE = "tax_exclusive", "tax_inclusive"
PRICE_TYPES = (EXCLUSIVE, INCLUSIVE)
DISCOUNTED_BEFORE_TAX = ("coupon", "credit_adjustment", "account_credits")  # every v1 discount type


@dataclass(frozen=True)
class Tax:
    """One tax of a rule (``taxN_*``): its rate in percent, exact."""

    name: str
    rate: Fraction
    juris_type: str | None = None
    juris_name: str | None = None
    juris_code: str | None = None

    @property
    def description(self) -> str:
        return f"{self.name} @ {format_rate(self.rate)}%"


@dataclass(frozen=True)
class Basis:
    """Everything an invoice's tax depends on besides its lines and discounts, as loaded once by
    the service. ``taxes`` empty: nothing is taxed (no rule matched, or the customer is exempt)."""

    price_type: str = EXCLUSIVE
    taxes: tuple[Tax, ...] = ()
    untaxed: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (plan|addon, id) not taxable
    # the invoice's each_specified_item coupons (catalog documents): their discounts come off
    # only the lines they apply to
    item_coupons: tuple[Doc, ...] = ()

    @property
    def rate(self) -> Fraction:
        return sum((t.rate for t in self.taxes), Fraction(0))

    def taxable(self, line: Doc) -> bool:
        return bool(self.taxes) and line_entity(line) not in self.untaxed


NO_TAX = Basis()


# ---- which rule -----------------------------------------------------------------------------------

def taxable_address(shipping: Doc | None, billing: Doc | None) -> Doc | None:
    """The address taxes are computed for: shipping, else billing, else none (one without a
    country does not count)."""
    for address in (shipping, billing):
        if address and address.get("country"):
            return address
    return None


def select_rule(rules: list[Doc], address: Doc | None, at: int) -> Doc | None:
    """The rule that applies to ``address`` at ``at`` (see the module docstring), or None.
    ``rules`` in creation order (the newest last)."""
    if address is None:
        return None
    candidates = [(i, r) for i, r in enumerate(rules) if matches(r, address) and valid_at(r, at)]
    if not candidates:
        return None
    return max(candidates, key=lambda c: _preference(c[1], c[0]))[1]


def matches(rule: Doc, address: Doc) -> bool:
    """Whether the rule's region covers the address (tax profile rules never apply)."""
    if rule.get("tax_profile_name"):
        return False
    country = (address.get("country") or "").strip().upper()
    if rule["country"] != country:
        return False
    state = rule.get("state", ANY_STATE)
    if state != ANY_STATE and state != address_state(address):
        return False
    if rule.get("zip_code") is not None:
        return _norm_zip(rule["zip_code"]) in _zip_forms(address.get("zip"))
    if rule.get("zip_code_start") is not None:
        n = zip_number(address.get("zip"))
        return n is not None and int(rule["zip_code_start"]) <= n <= int(rule["zip_code_end"])
    return True


def valid_at(rule: Doc, at: int) -> bool:
    """[valid_from, valid_till): the same window ``tax_rules.status`` uses on the site clock."""
    if rule.get("valid_from") is not None and int(rule["valid_from"]) > at:
        return False
    return not (rule.get("valid_till") is not None and int(rule["valid_till"]) <= at)


def address_state(address: Doc) -> str | None:
    """The address's subdivision code as rules name it (``NY``; ``US-NY`` is accepted too)."""
    code = (address.get("state_code") or "").strip().upper()
    country = (address.get("country") or "").strip().upper()
    if code.startswith(country + "-"):
        code = code[len(country) + 1:]
    return code or None


def zip_number(zip_code: str | None) -> int | None:
    """The leading digits of a zip code as a number (``10001-1234`` -> 10001), for ranges."""
    digits = ""
    for ch in (zip_code or "").strip():
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else None


def rule_taxes(rule: Doc) -> tuple[Tax, ...]:
    out = []
    for n in range(1, MAX_TAXES + 1):
        name = rule.get(f"tax{n}_name")
        if name is None:
            continue
        out.append(Tax(name=name, rate=exact_rate(rule[f"tax{n}_rate"]),
                       juris_type=rule.get(f"tax{n}_juris_type"), juris_name=rule.get(f"tax{n}_juris_name"),
                       juris_code=rule.get(f"tax{n}_juris_code")))
    return tuple(out)


def exact_rate(rate: float | str | Fraction) -> Fraction:
    """A percentage as decoded from the request (a double) as the decimal it was written as."""
    if isinstance(rate, Fraction):
        return rate
    return Fraction(str(rate))


def format_rate(rate: Fraction) -> str:
    """8.875 -> '8.875', 10 -> '10' (the decimal a rule was given as)."""
    if rate.denominator == 1:
        return str(rate.numerator)
    text = f"{float(rate):.6f}".rstrip("0").rstrip(".")
    return text


def _preference(rule: Doc, order: int) -> tuple[Any, ...]:
    span = 0
    if rule.get("zip_code_start") is not None:
        span = int(rule["zip_code_end"]) - int(rule["zip_code_start"])
    no_service = rule.get("service_type") in (None, "not_applicable")
    return (weight(rule), -span, no_service, order)


def _norm_zip(zip_code: str) -> str:
    return "".join(zip_code.split()).upper()


def _zip_forms(zip_code: str | None) -> set[str]:
    """The address's zip as given and its part before a ``-`` (a US ZIP+4 matches its ZIP)."""
    if not zip_code:
        return set()
    z = _norm_zip(zip_code)
    return {z, z.split("-", 1)[0]}


# ---- the arithmetic -------------------------------------------------------------------------------

def basis_for(rule: Doc | None, *, price_type: str = EXCLUSIVE, exempt: bool = False,
              untaxed: frozenset[tuple[str, str]] = frozenset(), item_coupons: tuple[Doc, ...] = ()) -> Basis:
    """The Basis for the selected rule (None: no rule) and the customer's taxability."""
    if price_type not in PRICE_TYPES:
        raise ValueError(f"unknown price_type {price_type}")
    taxes = () if rule is None or exempt else rule_taxes(rule)
    item_coupons = tuple(c for c in item_coupons if c.get("apply_on") == "each_specified_item")
    return Basis(price_type=price_type, taxes=taxes, untaxed=untaxed, item_coupons=item_coupons)


def apply(invoice: Doc, basis: Basis) -> Doc:
    """Set the lines' ``is_taxed``/``tax``/``tax_rate``, the invoice's ``taxes[]`` and
    ``price_type`` from ``basis`` (in place; returns the invoice). Totals are
    domain/invoices.recompute's."""
    lines = invoice.get("line_items", [])
    invoice["price_type"] = basis.price_type
    shares = line_discounts(lines, invoice.get("discounts", ()), basis.item_coupons)
    totals = [0] * len(basis.taxes)
    for li, share in zip(lines, shares):
        li.pop("tax_rate", None)
        if not basis.taxable(li):
            li["is_taxed"] = False
            li["tax"] = 0
            continue
        parts = line_taxes(max(0, int(li["amount"])) - share, basis)
        for n, part in enumerate(parts):
            totals[n] += part
        li["is_taxed"] = True
        li["tax"] = sum(parts)
        li["tax_rate"] = float(basis.rate)
    invoice["taxes"] = [{"amount": amount, "description": tax.description}
                        for tax, amount in zip(basis.taxes, totals) if amount > 0]
    return invoice


def line_taxes(base: int, basis: Basis) -> list[int]:
    """Each tax of ``basis`` on one line's taxable amount ``base``, rounded half up."""
    if base <= 0:
        return [0] * len(basis.taxes)
    if basis.price_type == INCLUSIVE:
        denominator = 100 + basis.rate
        return [money.round_half_up(Fraction(base) * t.rate / denominator) for t in basis.taxes]
    return [money.percent_of(base, t.rate) for t in basis.taxes]


def credit_tax(credited: list[Doc], excess: int, basis: Basis) -> int:
    """The tax that prorated credits beyond a change's invoice (``excess``) give back with them:
    the excess is shared among the credited items in proportion to their credits (largest
    remainder) and each taxable item's share taxed as its line was (half up, per tax). With
    tax-inclusive prices the credit already holds its tax (the prices did): 0."""
    if basis.price_type == INCLUSIVE or not basis.taxes or excess <= 0:
        return 0
    shares = discount_shares([int(c["amount"]) for c in credited], excess)
    return sum(sum(line_taxes(share, basis)) for c, share in zip(credited, shares) if basis.taxable(c))


def discount_before_tax(invoice: Doc) -> int:
    """The invoice's discounts that come off before tax, at most its (positive) line amounts."""
    total = sum(int(d["amount"]) for d in invoice.get("discounts", ()) if d.get("type") in DISCOUNTED_BEFORE_TAX)
    return min(total, sum(max(0, int(li["amount"])) for li in invoice.get("line_items", ())))


def line_discounts(lines: list[Doc], discounts: Iterable[Doc], item_coupons: Iterable[Doc] = ()) -> list[int]:
    """Each line's share of the invoice's discounts before tax. The discount of an
    ``each_specified_item`` coupon in ``item_coupons`` comes off only the lines the coupon applies
    to (plan_constraint / addon_constraint), shared as the coupon computes it per line
    (domain/coupons.py ``line_discount``); every other discount (invoice_amount coupons, prorated
    credits, promotional credits) is shared among all lines in proportion to what the item coupons
    leave of them. The shares add up to ``discount_before_tax`` and none goes beyond its line."""
    by_id = {c["id"]: c for c in item_coupons if c.get("apply_on") == "each_specified_item"}
    left = [max(0, int(li["amount"])) for li in lines]
    shares = [0] * len(lines)
    pool = 0
    for d in discounts:
        if d.get("type") not in DISCOUNTED_BEFORE_TAX:
            continue
        amount = max(0, int(d["amount"]))
        coupon = by_id.get(d.get("entity_id") or "") if d.get("type") == "coupon" else None
        if coupon is None:
            pool += amount
            continue
        weights = [coupon_rules.line_discount(coupon, li, left[i])
                   if coupon_rules.applies_to(coupon, li.get("entity_type", ""), li.get("entity_id")) else 0
                   for i, li in enumerate(lines)]
        if sum(weights) == 0:  # the coupon computes nothing now: share among the lines it names
            weights = [left[i] if coupon_rules.applies_to(coupon, li.get("entity_type", ""), li.get("entity_id"))
                       else 0 for i, li in enumerate(lines)]
        taken = discount_shares(weights, amount)
        for i, t in enumerate(taken):
            shares[i] += t
            left[i] -= t
        pool += amount - sum(taken)  # beyond the lines it names (stale amounts): like an invoice discount
    for i, t in enumerate(discount_shares(left, pool)):
        shares[i] += t
    return shares


def discount_shares(amounts: list[int], discount: int) -> list[int]:
    """``discount`` shared among lines in proportion to their (positive) amounts, largest remainder
    first (ties: the earlier line): the shares add up to min(discount, total), none beyond its line."""
    positive = [max(0, a) for a in amounts]
    total = sum(positive)
    discount = min(max(0, discount), total)
    if discount == 0 or total == 0:
        return [0] * len(amounts)
    exact = [Fraction(a * discount, total) for a in positive]
    shares = [int(x) for x in exact]  # floor (non-negative)
    left = discount - sum(shares)
    order = sorted(range(len(amounts)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def line_entity(line: Doc) -> tuple[str, str]:
    """(plan|addon, id) for catalog lines (a setup fee is its plan's); ("adhoc", "") otherwise."""
    kind = line.get("entity_type")
    if kind in ("plan", "plan_setup"):
        return ("plan", line.get("entity_id") or "")
    if kind == "addon":
        return ("addon", line.get("entity_id") or "")
    return ("adhoc", "")
