"""chargebee-idempotency-key: the operation's first write records the claim's outcome in its
own transaction, so an operation runs at most once under one key - across a takeover by a
retry, a 5xx after the commit, and an operation that wipes the site's keys (start_afresh).
(The crash tests are tests/crash/test_kill_idempotent.py.)"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from billhive.errors import InternalError, UnableToProcess
from billhive.http import idempotency
from billhive.services.context import Ctx, Work
from billhive.store.resources import CUSTOMERS


def _add_customer(w: Work, cid: str) -> dict:
    doc = {"id": cid, "object": "customer", "auto_collection": "on", "created_at": w.now, "taxability": "taxable",
           "allow_direct_debit": False, "account_credits": 0, "refundable_credits": 0, "excess_payments": 0}
    CUSTOMERS.insert(w.tx, w.site_id, doc, w.now)
    return {"customer": doc}


def _customers(site) -> list[str]:  # type: ignore[no-untyped-def]
    return [c["id"] for c in site.app.db.read_sync(lambda tx: CUSTOMERS.find(tx, site.pk))]


def _claim(site, key: str, *, stale: float = 120.0) -> tuple[str, idempotency.Claim]:  # type: ignore[no-untyped-def]
    claim = idempotency.Claim(site.pk, key)
    claim.request_hash = "h"
    outcome, stored = site.app.db.write_sync(idempotency._claim(claim, "h", stale))
    claim.resumed = stored if outcome == "run" else None
    return outcome, claim


def test_a_request_taken_over_by_its_retry_cannot_commit_the_operation(site):
    outcome, first = _claim(site, "k1")
    assert outcome == "run"
    assert _claim(site, "k1")[0] == "wait"  # alive: a concurrent retry waits for its answer
    outcome, retry = _claim(site, "k1", stale=-1)  # ... presumed dead: the retry takes the claim over
    assert outcome == "run" and retry.resumed is None

    with pytest.raises(UnableToProcess):  # the slow original cannot commit any more
        asyncio.run(Ctx(site.app, site.pk, claim=first).write(_add_customer, "from-first"))
    answer = asyncio.run(Ctx(site.app, site.pk, claim=retry).write(_add_customer, "from-retry"))
    assert _customers(site) == ["from-retry"]

    outcome, third = _claim(site, "k1", stale=-1)  # it died too, after its commit: resume from it
    assert outcome == "run" and third.resumed is not None
    replayed = asyncio.run(Ctx(site.app, site.pk, claim=third).write(_add_customer, "from-third"))
    assert replayed == answer and _customers(site) == ["from-retry"]  # the write was not run again


def test_a_5xx_after_the_commit_is_resumed_by_the_retry_not_run_again(site):
    app = site.app
    cid = "c_" + uuid.uuid4().hex[:8]
    calls = []

    async def operation(ctx: Ctx, fail: bool) -> dict:
        out = await ctx.write(_add_customer, cid)
        calls.append(out)
        if fail:  # e.g. the settlement after the commit hit a database error
            raise InternalError("boom")
        return out

    async def request(fail: bool) -> tuple[int, bytes, list]:
        claim = idempotency.Claim(site.pk, "k5")
        return await idempotency.run(app, claim, "POST", "/customers", [("id", cid)],
                                     operation(Ctx(app, site.pk, claim=claim), fail))

    with pytest.raises(InternalError):
        asyncio.run(request(fail=True))
    assert _customers(site) == [cid]
    status, body, headers = asyncio.run(request(fail=False))  # at once: nobody owns the claim any more
    assert status == 200 and headers == [] and _customers(site) == [cid]  # one customer, not two
    assert calls[0] == calls[1]
    assert asyncio.run(request(fail=False)) == (200, body, [(b"chargebee-idempotency-replayed", b"true")])


def test_start_afresh_under_a_key_is_replayed(api):
    h = {"chargebee-idempotency-key": "afresh-1"}
    first = api.post("/time_machines/delorean/start_afresh", {"genesis_time": 1_700_000_000}, headers=h)
    again = api.post("/time_machines/delorean/start_afresh", {"genesis_time": 1_700_000_000}, headers=h)
    assert again.headers.get("chargebee-idempotency-replayed") == "true" and again.body == first.body


def test_a_journal_rebuilds_only_plain_data_and_billhive_classes():
    """A journaled first write is read back from a row: nothing but plain data and billhive's own
    result classes may come out of it, whoever wrote the row."""
    import os
    import pickle

    import pytest

    from billhive.http import idempotency

    plan = idempotency._loads(pickle.dumps(("step", {"a": [1, 2.5, None, (True, "x")]})))
    assert plan == ("step", {"a": [1, 2.5, None, (True, "x")]})
    with pytest.raises(pickle.UnpicklingError):
        idempotency._loads(pickle.dumps(("step", os.system)))
