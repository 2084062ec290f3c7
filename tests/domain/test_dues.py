"""A subscription's dues from its invoices (domain/dues.py). Source: Chargebee's v1 sample payloads
(chargebee client library tests/python/sample_event.json: a payment_due invoice of 1000 ->
due_invoices_count 1, due_since its date, total_dues 1000; while nothing is due only
``"due_invoices_count": 0``, as every v1 sample with a paid invoice shows) - docs/PARITY.md."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billhive.domain import dues

STATUSES = ("pending", "paid", "payment_due", "not_paid", "voided")


def inv(id_: str, status: str, amount_due: int, start: int = 100, end: int | None = 200) -> dict:
    doc = {"id": id_, "status": status, "amount_due": amount_due, "start_date": start}
    if end is not None:
        doc["end_date"] = end
    return doc


def test_nothing_due_is_a_zero_count_and_no_other_field():
    assert dues.dues([]) == {"due_invoices_count": 0}
    assert dues.dues([inv("1", "paid", 0), inv("2", "voided", 500), inv("d", "pending", 900, end=None)]) == \
        {"due_invoices_count": 0}


def test_unpaid_invoices_count_from_the_earliest_issue_date():
    got = dues.dues([inv("1", "payment_due", 1000, end=500), inv("2", "not_paid", 224, end=300), inv("3", "paid", 0)])
    assert got == {"due_invoices_count": 2, "due_since": 300, "total_dues": 1224}


def test_the_later_copy_of_an_invoice_wins():
    assert dues.dues([inv("1", "payment_due", 1000), inv("1", "paid", 0)]) == {"due_invoices_count": 0}


def test_apply_drops_the_fields_once_paid_and_says_whether_it_changed():
    sub = {"id": "s", "due_invoices_count": 1, "due_since": 5, "total_dues": 10}
    assert dues.apply(sub, {"due_invoices_count": 0}) is True
    assert sub == {"id": "s", "due_invoices_count": 0}
    assert dues.apply(sub, {"due_invoices_count": 0}) is False


invoices = st.lists(st.builds(inv, st.sampled_from("abcdef"), st.sampled_from(STATUSES),
                              st.integers(0, 10**9), st.integers(0, 10**6),
                              st.one_of(st.none(), st.integers(0, 10**6))))


@given(invoices)
def test_total_is_the_sum_owed_and_count_the_invoices_owing(docs):
    latest = {d["id"]: d for d in docs}
    owing = [d for d in latest.values() if d["status"] in ("payment_due", "not_paid") and d["amount_due"] > 0]
    got = dues.dues(docs)
    assert got["due_invoices_count"] == len(owing)
    assert got.get("total_dues", 0) == sum(d["amount_due"] for d in owing)
    assert ("due_since" in got) == bool(owing)
