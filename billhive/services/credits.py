"""The customer's three balances and the ledger behind them.

- promotional credits  -> customer.account_credits     (act as a discount before tax)
- refundable credits   -> customer.refundable_credits  (reduce amount due; shown as credits_applied)
- excess payments      -> customer.excess_payments     (unused parts of earlier payments;
                          the sum of the customers' transactions' amount_unused)

Every movement is a ledger row (who, when, why, amount, balance after), written in the same
transaction as the balance change, so each balance always equals the sum of its ledger.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select

from billhive.domain import money
from billhive.errors import InvalidRequest
from billhive.services.context import Work
from billhive.store import schema as S
from billhive.store.db import Q, Tx

FIELD = {"promotional": "account_credits", "refundable": "refundable_credits", "excess": "excess_payments"}
KINDS = tuple(FIELD)


_L = S.credit_ledger
_INSERT = Q(insert(_L).values({c.name: bindparam(c.name) for c in _L.c if c.name != "pk"}))


class InsufficientCredits(InvalidRequest):
    """Deducting more than the balance."""


def balance(customer: dict, kind: str) -> int:
    return int(customer.get(FIELD[kind], 0) or 0)


def move(w: Work, customer: dict, kind: str, amount: int, reason: str, *, description: str | None = None,
         reference_type: str | None = None, reference_id: str | None = None, param: str | None = None) -> int:
    """Add (amount > 0) or remove (amount < 0) credits; updates the customer document (the caller
    saves it in this transaction) and appends the ledger row. Returns the new balance.

    ``param``: the request parameter the amount comes from. Such a move may not take the balance
    beyond money.MAX_AMOUNT (AmountTooLarge naming it). Moves without one - credits applied to
    an invoice, or given back by a void or a failed charge - always go through: settling a
    charge must never fail."""
    if kind not in FIELD:
        raise ValueError(kind)
    if amount == 0:
        return balance(customer, kind)
    new = balance(customer, kind) + amount
    if param is not None:
        money.check(new, param, f"the customer's {FIELD[kind].replace('_', ' ')}")
    if new < 0:
        raise InsufficientCredits(
            f"{param + ' : ' if param else ''}cannot deduct {-amount}; the customer has {balance(customer, kind)} "
            f"{FIELD[kind].replace('_', ' ')}", param=param)
    customer[FIELD[kind]] = new
    o = w.origin
    w.tx.execute(_INSERT, dict(
        site_id=w.site_id, customer_id=customer["id"], kind=kind, amount=amount, balance_after=new, reason=reason,
        description=description, reference_type=reference_type, reference_id=reference_id, source=o.source,
        user=o.user, created_at=w.now))
    return new


def set_balance(w: Work, customer: dict, kind: str, target: int, reason: str = "set", **kw: object) -> int:
    if target < 0:
        raise InvalidRequest("credit balance cannot be negative")
    return move(w, customer, kind, target - balance(customer, kind), reason, **kw)  # type: ignore[arg-type]


def ledger_sum(tx: Tx, site_id: int, customer_id: str, kind: str) -> int:
    L = S.credit_ledger
    return int(tx.scalar(select(func.coalesce(func.sum(L.c.amount), 0)).where(
        L.c.site_id == site_id, L.c.customer_id == customer_id, L.c.kind == kind)) or 0)


def ledger(tx: Tx, site_id: int, customer_id: str) -> list[dict]:
    L = S.credit_ledger
    rows = tx.all(select(L.c.kind, L.c.amount, L.c.balance_after, L.c.reason, L.c.description, L.c.reference_type,
                         L.c.reference_id, L.c.source, L.c.user, L.c.created_at)
                  .where(L.c.site_id == site_id, L.c.customer_id == customer_id).order_by(L.c.pk))
    keys = ("kind", "amount", "balance_after", "reason", "description", "reference_type", "reference_id", "source",
            "user", "created_at")
    return [dict(zip(keys, r)) for r in rows]
