"""Portal session state machine and expiry."""

from __future__ import annotations

import pytest

from billhive.domain import portal_sessions as D
from billhive.errors import InvalidState


def session(status: str = "created", expires_at: int = 3600) -> dict:
    return {"id": "portal_1", "status": status, "expires_at": expires_at}


@pytest.mark.parametrize("start, target, ok", [
    ("created", "logged_in", True), ("created", "activated", True), ("created", "logged_out", True),
    ("not_yet_activated", "activated", True), ("activated", "logged_out", True), ("logged_in", "logged_out", True),
    ("activated", "activated", False), ("logged_in", "activated", False), ("logged_out", "logged_in", False),
    ("logged_out", "activated", False), ("activated", "logged_in", False),
])
def test_transitions(start, target, ok):
    s = session(start)
    if ok:
        D.transition(s, target, now=0)
        assert s["status"] == target
    else:
        with pytest.raises(InvalidState):
            D.transition(s, target, now=0)
        assert s["status"] == start


def test_unused_sessions_expire_after_an_hour():
    s = session(expires_at=3600)
    assert not D.is_expired(s, 3599) and D.is_expired(s, 3600)
    with pytest.raises(InvalidState):
        D.transition(s, "logged_in", now=3600)
    D.transition(s, "logged_out", now=3600)  # an expired session can still be logged out
    assert not D.is_expired(session("logged_in"), 10**9)  # once used, valid until logout


def test_linked_customer():
    assert D.linked_customer({"id": "c", "email": "a@b.co", "billing_address": {"city": "X"}}, True) == {
        "customer_id": "c", "email": "a@b.co", "has_billing_address": True, "has_payment_method": False,
        "has_active_subscription": True, "object": "linked_customer"}
    assert "email" not in D.linked_customer({"id": "c"}, False)
