"""Operations that charge at once (a signup, an immediate change, a one-off invoice): Chargebee
creates what they create only if the charge succeeds, so billhive charges first and creates after.

The decisions here are pure; services/charge_first.py loads, calls the gateway and saves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

CREATE = "create"  # create everything, the charge settled with the gateway's answer
NOTHING = "nothing"  # create nothing: the call answers 400 payment_processing_failed
REFUND = "refund"  # the money was taken but the operation can no longer be created as charged
LATER = "later"  # the gateway's answer is not known yet (a timeout): asked again after the grace


class Answer(Protocol):
    @property
    def status(self) -> str: ...  # success | failure | timeout


@dataclass(frozen=True)
class Charge:
    """What a charge is: the same operation, composed again, must ask for this very charge."""

    gateway: str
    token: str
    amount: int
    currency: str


def charges_first(purposes: list[str], allowed: tuple[str, ...] | None) -> bool:
    """Whether an operation whose charges have these purposes is charged before anything is
    created: exactly one charge (the operation's own) of a purpose Chargebee refuses on failure
    (``allowed``; None: any). A one-off invoice under ``one_off_charge_failure=dunning`` charges
    with purpose ``close`` and is kept payment_due on failure instead."""
    return len(purposes) == 1 and (allowed is None or purposes[0] in allowed)


def after_answer(answer: Answer) -> str:
    """What the gateway's answer to the charge-first attempt means for the operation.

    - success: create it, with the charge paid;
    - failure (a decline): create nothing (Chargebee: 400 payment_processing_failed);
    - timeout (the outcome is unknown): create it with the payment in progress - refusing would
      tell the caller "nothing happened" when the card may have been charged, and creating
      nothing would leave a possible charge with no invoice to settle it against; recovery
      settles the transaction from the gateway's books like any other unsettled charge."""
    return NOTHING if answer.status == "failure" else CREATE


def on_completion(planned: Charge, composed: list[Charge], answer: Answer) -> str:
    """Composing the operation again after the charge: it must ask for the same charge (the
    catalog, the customer's balances or card may have changed meanwhile). Otherwise the money
    taken is given back (a success) and nothing is created."""
    if composed == [planned]:
        return CREATE
    return REFUND if answer.status == "success" else NOTHING


def after_crash(answer: Answer | None) -> str:
    """An attempt that will not be created - its request died before creating anything (the caller
    never got an answer, and its parameters are not kept), or its creation failed: money the
    gateway took is given back. (A retry with the same idempotency key before recovery completes
    the operation instead.) None: the gateway never saw the charge. A timeout: the attempt stays
    and is asked about again later."""
    if answer is None or answer.status == "failure":
        return NOTHING
    return REFUND if answer.status == "success" else LATER
