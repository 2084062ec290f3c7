"""money.MAX_AMOUNT: the one bound on amounts and totals, and the parameter an error names."""

from __future__ import annotations

import pytest

from billhive.domain import invoices as D
from billhive.domain import money
from billhive.domain.money import MAX_AMOUNT, AmountTooLarge


def test_check_and_total_hold_amounts_to_the_bound():
    assert money.check(MAX_AMOUNT, "amount") == MAX_AMOUNT
    assert money.total([MAX_AMOUNT - 1, 1], "amount") == MAX_AMOUNT
    with pytest.raises(AmountTooLarge) as err:
        money.total([MAX_AMOUNT, 1], "amount")
    assert (err.value.param, err.value.api_error_code, err.value.http_status) == ("amount", "param_wrong_value", 400)


def test_total_of_names_the_part_that_goes_over():
    parts = [(MAX_AMOUNT // 2, "plan_quantity"), (MAX_AMOUNT // 2, "addons[quantity][0]"), (2, "addons[quantity][1]")]
    with pytest.raises(AmountTooLarge) as err:
        money.total_of(parts)
    assert err.value.param == "addons[quantity][1]"
    assert money.total_of(parts[:2]) == MAX_AMOUNT - 1


def test_recompute_refuses_invoices_beyond_the_bound():
    inv = {"line_items": [{"amount": MAX_AMOUNT}, {"amount": 1}], "discounts": []}
    with pytest.raises(AmountTooLarge) as err:
        D.recompute(inv, "amount")
    assert err.value.param == "amount"
    with pytest.raises(AmountTooLarge):
        D.line_amount(MAX_AMOUNT, 2, "plan_quantity")
    assert D.recompute({"line_items": [{"amount": MAX_AMOUNT}], "discounts": []})["amount_due"] == MAX_AMOUNT
