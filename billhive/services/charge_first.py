"""Operations that charge at once create nothing unless the charge succeeds (Chargebee:
"created only if the payment was successful"; docs/CHOICES.md, "A declined charge creates
nothing").

``run(ctx, unit, *args)`` runs an operation's write unit (returning an ``Outcome``):

1. rehearsal - the unit runs in a transaction; if it plans exactly one charge that must succeed
   first (``domain.charge_first.charges_first``), the transaction is rolled back: no
   subscription, customer, invoice, invoice number or event is left. Otherwise it commits as
   before and the caller charges after commit (e.g. a trial signup, nothing to charge).
2. attempt - one transaction records the charge about to be made (a job row
   ``charge_attempt:<txn id>`` with the amount, card and gateway): the never-charge-twice rule,
   recorded before the gateway is called. Under an idempotency key this is the operation's
   journaled first write, so a retry of an interrupted request resumes from it.
3. the gateway is asked to charge, with the attempt's id as its idempotency key (no transaction).
4. on a decline the attempt is deleted and the call answers 400 payment_processing_failed. On a
   success (or a timeout) one transaction takes the attempt, runs the unit again - its charge
   takes the attempt's id (``invoicing.PRESET_TXN_IDS``) and must be the very charge made - and
   settles it at once (``payments.settle``: the paid invoice, held events released). If the
   operation no longer composes to that charge, the money is refunded and the call answers 400.

A request that dies between 2 and 4 leaves its attempt: the job falls due ``GRACE`` seconds
later and asks the gateway (``resolve``): a charge it never saw or declined is forgotten, a
successful one is refunded (the caller got no answer and its parameters are not kept). A retry
with the same idempotency key within the grace resumes at step 3 instead and completes the
operation with the same charge (the gateway answers a repeated key with its first answer). The
attempt becomes ``charge_attempt_done`` (with the answer) once completed under an idempotency
key, for a retry that comes after the answer was lost (it is deleted when it falls due)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from billhive.domain import charge_first as D
from billhive.errors import InvalidState, PaymentProcessingFailed
from billhive.gateway import GatewayResult
from billhive.runtime import App
from billhive.services import invoicing, payments
from billhive.services.invoicing import ChargePlan
from billhive.util import failpoints
from billhive.work import jobs
from billhive.work.context import SYSTEM, Ctx, Work

log = logging.getLogger("billhive.charge_first")
JOB = "charge_attempt"
DONE = "charge_attempt_done"
REFUNDING = "charge_attempt_refund"
GRACE = 600  # seconds (site clock) before recovery looks at an attempt
KEEP_DONE = 3600  # a completed attempt's answer, for retries within the idempotency key's 30 minutes


@dataclass
class Outcome:
    """What a committed operation answers, and the charges to make once it is durable."""

    body: dict
    charges: list[ChargePlan] = field(default_factory=list)
    settled: bool = False  # its charge was made first and settled in its transaction


@dataclass(frozen=True)
class Attempt:
    """A recorded charge-first attempt (the journaled first write of the operation)."""

    plan: ChargePlan


class _Rehearsed(Exception):
    def __init__(self, plan: ChargePlan):
        super().__init__("charge first")
        self.plan = plan


class _Changed(Exception):
    pass


class _Resolved(InvalidState):
    """Recovery resolved the attempt (refunded it) before the request could complete it."""


Unit = Callable[..., Outcome]


def _charge(plan: ChargePlan) -> D.Charge:
    return D.Charge(plan.gateway, plan.token, plan.amount, plan.currency)


def _key(txn_id: str) -> str:
    return f"{JOB}:{txn_id}"


def _first(w: Work, mode: str, unit: Unit, args: tuple, allowed: tuple[str, ...] | None,
           plan: ChargePlan | None) -> Outcome | Attempt:
    """The operation's first write: the rehearsal (mode ``run``) or the attempt (``attempt``)."""
    if mode == "attempt":
        assert plan is not None
        jobs.schedule(w, JOB, plan.txn_id, due_at=w.now + GRACE, key=_key(plan.txn_id), payload=asdict(plan))
        return Attempt(plan)
    out = unit(w, *args)
    if D.charges_first([p.purpose for p in out.charges], allowed):
        raise _Rehearsed(out.charges[0])  # rolls the transaction back: nothing is created yet
    return out


async def run(ctx: Ctx, unit: Unit, *args: Any, allowed: tuple[str, ...] | None = None) -> Outcome:
    """Run ``unit(w, *args)`` so that an immediate charge comes first (module docstring).
    Returns the committed outcome: its charges are still to be made only when it was not
    charged first (none, several, or a purpose outside ``allowed``)."""
    try:
        first = await ctx.write(_first, "run", unit, args, allowed, None)
    except _Rehearsed as r:
        first = await ctx.write(_first, "attempt", unit, args, allowed, r.plan)
    if isinstance(first, Outcome):
        return first
    plan = first.plan
    result = await payments.call_gateway(ctx.app, ctx.site_id, plan)
    failpoints.hit("charge.answered")
    if D.after_answer(result) == D.NOTHING:
        await ctx.write(_forget, plan.txn_id)
        raise PaymentProcessingFailed(f"Payment failed: ({result.error_code}) {result.error_text}")
    try:
        return await ctx.write(_complete, unit, args, plan, result, ctx.claim is not None)
    except Exception as exc:  # nothing was created: the money taken is given back
        if not isinstance(exc, _Resolved):
            undo = D.after_crash(result)
            if undo == D.REFUND:
                await _refund(ctx.app, ctx.site_id, plan, result)
            if undo != D.LATER:  # after a timeout the attempt stays: recovery asks the gateway (GRACE)
                await ctx.write(_forget, plan.txn_id)
        if isinstance(exc, _Changed):
            raise PaymentProcessingFailed("The operation changed while its payment was made; the payment was "
                                          "refunded and nothing was created") from None
        raise


def _forget(w: Work, txn_id: str) -> None:
    jobs.cancel(w, _key(txn_id))


def _complete(w: Work, unit: Unit, args: tuple, plan: ChargePlan, result: GatewayResult, keep: bool) -> Outcome:
    """Create the operation with its charge made: the attempt taken, the unit run again with the
    attempt's transaction id, the charge settled in this same transaction. ``keep``: the request
    has an idempotency key, so a retry may come after its answer was lost: the answer is kept."""
    job = jobs.get(w, _key(plan.txn_id))
    if job is not None and job.kind == DONE and job.payload is not None:
        return Outcome(job.payload["body"], settled=True)  # completed already (a retry after the answer was lost)
    if job is None:
        raise _Resolved("The payment of this request was settled by recovery: it was refunded and nothing was "
                           "created; send the request again")
    preset: list[str] = w.cached(invoicing.PRESET_TXN_IDS, list)
    preset.append(plan.txn_id)
    out = unit(w, *args)
    if D.on_completion(_charge(plan), [_charge(p) for p in out.charges], result) != D.CREATE:
        raise _Changed()  # rolls back: nothing is created
    inv = payments.settle(w, plan.txn_id, result, plan.purpose)
    if out.body.get("invoice", {}).get("id") == inv["id"]:
        out.body["invoice"] = inv
    if keep:
        jobs.schedule(w, DONE, plan.txn_id, due_at=w.now + KEEP_DONE, key=_key(plan.txn_id),
                      payload={"body": out.body})
    else:
        jobs.cancel(w, _key(plan.txn_id))
    return Outcome(out.body, settled=True)


async def _refund(app: App, site_pk: int, plan: ChargePlan, result: GatewayResult) -> None:
    gateway = app.gateways.get(plan.gateway)
    if gateway is None:
        log.error("charge %s cannot be refunded: gateway %s is gone", plan.txn_id, plan.gateway)
        return
    answer = await gateway.refund(site_pk, f"{plan.txn_id}_undo", result.reference, plan.amount, plan.currency)
    if not answer.ok:
        log.error("charge %s of an operation never created could not be refunded: %s", plan.txn_id,
                  answer.error_text)


# ---- recovery ------------------------------------------------------------------------------------

def on_attempt(w: Work, job: jobs.Job) -> None:
    """The scheduler's handler of an attempt still there ``GRACE`` after it was recorded (its
    request died), or of one being refunded: kept for another look, resolved after commit."""
    assert job.payload is not None
    plan = ChargePlan(**job.payload)
    jobs.schedule(w, job.kind, plan.txn_id, due_at=w.now + GRACE, key=job.key, payload=job.payload)
    app, site_pk = w.app, w.site_id

    async def later() -> None:
        await resolve(app, site_pk, plan)
    w.after_commit(later)


def on_done(w: Work, job: jobs.Job) -> None:
    """A completed attempt's answer has been kept long enough (claiming the job deleted it)."""


async def resolve(app: App, site_pk: int, plan: ChargePlan) -> str:
    """An interrupted attempt, from the gateway's books (``domain.charge_first.after_crash``).
    A refund is marked first (``charge_attempt_refund``: no request can complete the attempt
    any more), then made with its own key, then the attempt is forgotten."""
    gateway = app.gateways.get(plan.gateway)
    answer = await gateway.lookup(site_pk, plan.txn_id) if gateway is not None else None
    decision = D.after_crash(answer)
    if decision == D.LATER:
        return decision
    ctx = Ctx(app, site_pk, SYSTEM)

    def take(w: Work) -> bool:
        job = jobs.get(w, _key(plan.txn_id))
        if job is None or job.kind not in (JOB, REFUNDING):
            return False  # completed or forgotten meanwhile
        if decision == D.REFUND:
            jobs.schedule(w, REFUNDING, plan.txn_id, due_at=w.now + GRACE, key=job.key, payload=job.payload)
        else:
            jobs.cancel(w, job.key)
        return True
    if await ctx.write(take) and decision == D.REFUND and answer is not None:
        await _refund(app, site_pk, plan, GatewayResult(answer.status, answer.reference))
        await ctx.write(_forget, plan.txn_id)
    return decision
