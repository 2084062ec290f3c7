"""Property: any sequence of credit add/deduct/set keeps every balance >= 0 and equal to the sum
of its ledger - run against the real store (SQLite and PostgreSQL), through the services."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billhive.errors import BillhiveError
from billhive.services import credits, customers
from billhive.services.context import Work

AMOUNTS = st.integers(min_value=0, max_value=5_000)
OPS = st.tuples(st.sampled_from(credits.KINDS), st.sampled_from(("add", "deduct", "set")), AMOUNTS)


def _move_other_kind(w: Work, customer_id: str, kind: str, op: str, amount: int) -> None:
    """Refundable credits and excess payments have no v1 operation of their own: move them the
    way invoices and payments will, through the ledger."""
    customer = customers.get_customer(w, customer_id, for_update=True)
    if op == "set":
        credits.set_balance(w, customer, kind, amount, "set")
    else:
        credits.move(w, customer, kind, amount if op == "add" else -amount, op)
    customers.save(w, customer)


def test_balances_never_negative_and_equal_their_ledger(site):
    ctx = site.ctx()

    def state(customer_id: str) -> tuple[dict, dict]:
        def read(w: Work) -> tuple[dict, dict]:
            c = customers.get_customer(w, customer_id)
            sums = {k: credits.ledger_sum(w.tx, w.site_id, customer_id, k) for k in credits.KINDS}
            return {k: credits.balance(c, k) for k in credits.KINDS}, sums
        return ctx.read_sync(read)

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(OPS, max_size=8))
    def run(ops: list[tuple[str, str, int]]) -> None:
        customer_id = "p" + uuid.uuid4().hex[:12]
        asyncio.run(customers.create(ctx, {"id": customer_id}))
        model = dict.fromkeys(credits.KINDS, 0)
        for kind, op, amount in ops:
            if kind == "promotional" and op != "set":
                amount = max(amount, 1)  # the API's minimum for add/deduct
            expected = {"add": model[kind] + amount, "deduct": model[kind] - amount, "set": amount}[op]
            refused = expected < 0
            try:
                if kind == "promotional":
                    fn = {"add": customers.add_account_credits, "deduct": customers.deduct_account_credits,
                          "set": customers.set_account_credits}[op]
                    asyncio.run(fn(ctx, customer_id, {"amount": amount, "description": "property"}))
                else:
                    ctx.write_sync(_move_other_kind, customer_id, kind, op, amount)
            except BillhiveError:
                assert refused, (kind, op, amount, model)
            else:
                assert not refused, (kind, op, amount, model)
                model[kind] = expected
            balances, sums = state(customer_id)
            assert balances == model == sums
            assert all(v >= 0 for v in balances.values())

    run()
