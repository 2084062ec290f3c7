"""domain/charge_first.py: what an operation that charges at once does with the gateway's answer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from billhive.domain import charge_first as D


@dataclass(frozen=True)
class A:
    status: str


CARD = D.Charge("chargebee", "tok_1", 1000, "USD")


@pytest.mark.parametrize("purposes, allowed, first", [
    (["close"], None, True),  # a subscription's first invoice
    (["create"], ("create",), True),  # a one-off invoice
    (["close"], ("create",), False),  # one_off_charge_failure=dunning: kept on failure, charged after
    ([], None, False),  # nothing to charge now (a trial, credits)
    (["close", "close"], None, False),  # several charges: after commit as before
])
def test_which_operations_charge_first(purposes, allowed, first):
    assert D.charges_first(purposes, allowed) is first


@pytest.mark.parametrize("status, decision", [("success", D.CREATE), ("timeout", D.CREATE),
                                              ("failure", D.NOTHING)])
def test_the_gateways_answer(status, decision):
    assert D.after_answer(A(status)) == decision


def test_the_operation_composed_again_must_ask_for_the_very_charge():
    assert D.on_completion(CARD, [CARD], A("success")) == D.CREATE
    less = D.Charge("chargebee", "tok_1", 700, "USD")
    assert D.on_completion(CARD, [less], A("success")) == D.REFUND
    assert D.on_completion(CARD, [], A("success")) == D.REFUND
    assert D.on_completion(CARD, [less], A("timeout")) == D.NOTHING  # unknown: nothing to give back yet


@pytest.mark.parametrize("answer, decision", [(None, D.NOTHING), (A("failure"), D.NOTHING),
                                              (A("success"), D.REFUND), (A("timeout"), D.LATER)])
def test_an_attempt_whose_request_died(answer, decision):
    assert D.after_crash(answer) == decision
