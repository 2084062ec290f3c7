"""domain.document.clone: the copy a decision makes of a document (deepcopy's result, faster)."""

from __future__ import annotations

import copy
from fractions import Fraction

from billhive.domain.document import clone


def test_clone_equals_deepcopy_and_shares_no_container():
    doc = {"id": "inv_1", "amount": 2900, "paid": False, "ratio": 0.5, "note": None,
           "line_items": [{"amount": 2900, "tags": ["a", "b"]}], "billing_address": {"city": "Berlin"}}
    out = clone(doc)
    assert out == copy.deepcopy(doc)
    out["line_items"][0]["tags"].append("c")
    out["billing_address"]["city"] = "Paris"
    out["line_items"].append({})
    assert doc["line_items"] == [{"amount": 2900, "tags": ["a", "b"]}]
    assert doc["billing_address"] == {"city": "Berlin"}


def test_clone_deep_copies_what_is_not_a_json_value():
    inner = [1, 2]
    doc = {"pair": (inner, 3), "share": Fraction(1, 3)}
    out = clone(doc)
    assert out == doc
    out["pair"][0].append(9)
    assert inner == [1, 2]
