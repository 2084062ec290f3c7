"""Portal session rules: statuses, transitions, expiry, linked customers. Pure.

A session is ``created`` by the API with an access URL that must be opened within an hour
(``expires_at``). Opening it logs the customer in (``logged_in``; the URL cannot be used again).
``activate`` validates a session's token from your server (``created``/``not_yet_activated`` ->
``activated``). Logging out (API or portal) ends any session; logging out a logged-out session
changes nothing.
"""

from __future__ import annotations

from billhive.domain.document import Doc
from billhive.errors import InvalidState

ACCESS_URL_TTL = 3600  # seconds: "accessed by the customer within one hour from the time it was created"

STATUSES = ("created", "logged_in", "logged_out", "not_yet_activated", "activated")

TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"logged_in", "activated", "logged_out"}),
    "not_yet_activated": frozenset({"activated", "logged_out"}),
    "activated": frozenset({"logged_out"}),
    "logged_in": frozenset({"logged_out"}),
    "logged_out": frozenset(),
}

# statuses whose access is still bounded by expires_at (not yet used)
UNUSED = frozenset({"created", "not_yet_activated"})

# subscription statuses that count as "active" for linked_customers.has_active_subscription
LIVE_SUBSCRIPTION_STATUSES = ("in_trial", "active", "non_renewing")


def is_expired(session: Doc, now: int) -> bool:
    return session["status"] in UNUSED and session.get("expires_at") is not None and now >= session["expires_at"]


def transition(session: Doc, target: str, now: int) -> None:
    """Move the session to ``target`` or raise invalid_state_for_request."""
    current = session["status"]
    if target not in TRANSITIONS.get(current, frozenset()):
        raise InvalidState(f"Portal session {session['id']} is {current}; it cannot become {target}")
    if target in ("logged_in", "activated") and is_expired(session, now):
        raise InvalidState(f"Portal session {session['id']} has expired")
    session["status"] = target


def linked_customer(customer: Doc, has_active_subscription: bool) -> Doc:
    out = {"customer_id": customer["id"]}
    if customer.get("email"):
        out["email"] = customer["email"]
    out["has_billing_address"] = bool(customer.get("billing_address"))
    out["has_payment_method"] = bool(customer.get("payment_method"))
    out["has_active_subscription"] = has_active_subscription
    out["object"] = "linked_customer"
    return out
