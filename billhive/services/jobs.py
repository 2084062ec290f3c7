"""The scheduled jobs: which service function handles each kind (the table the scheduler runs
with), and running a site's due jobs with it.

A kind's handler runs in the job's own transaction, on the site clock at the job's due time;
it may schedule the same key again (the next renewal). See billhive/work/jobs.py.

Work that a lower module decides but may not import is handed over as a job due at once:
dunning's "cancel the subscription" (``dunning.CANCEL_JOB``, scheduled by payments when dunning
is exhausted) runs here with ``subscriptions.cancel_for_non_payment``."""

from __future__ import annotations

from billhive.domain.dunning import CANCEL_REASON
from billhive.runtime import App
from billhive.services import cards, charge_first, dunning, subscriptions
from billhive.work import jobs, scheduler

HANDLERS: dict[str, jobs.Handler] = {
    subscriptions.JOB_START: subscriptions.on_start,
    subscriptions.JOB_TERM_END: subscriptions.on_term_end,
    subscriptions.JOB_REMINDER: subscriptions.on_reminder,
    subscriptions.JOB_TRIAL_ENDING: subscriptions.on_trial_ending,
    dunning.JOB: dunning.retry,
    dunning.CANCEL_JOB: lambda w, job: subscriptions.cancel_for_non_payment(w, job.ref_id, CANCEL_REASON),
    cards.JOB_EXPIRING: cards.on_card_expiring,
    cards.JOB_EXPIRED: cards.on_card_expired,
    charge_first.JOB: charge_first.on_attempt,
    charge_first.REFUNDING: charge_first.on_attempt,
    charge_first.DONE: charge_first.on_done,
}

# kinds whose consecutive due jobs (of distinct subscriptions) may run together, in one savepoint,
# by one call loading each resource once for all of them; such a handler neither schedules nor
# cancels jobs, and if it fails its jobs run one at a time with HANDLERS (billhive/work/scheduler.py)
GROUPS: dict[str, jobs.GroupHandler] = {
    subscriptions.JOB_REMINDER: subscriptions.on_reminders,
    subscriptions.JOB_TRIAL_ENDING: subscriptions.on_trial_endings,
}


# kinds whose due jobs of a batch have what they load loaded first, for all of them (one statement
# per table; each job still runs alone, in its turn and its savepoint: billhive/work/scheduler.py)
PRELOADS: dict[str, jobs.GroupHandler] = {
    subscriptions.JOB_TERM_END: subscriptions.preload_term_ends,
}


async def run_due(app: App, site_pk: int, at: int | None = None, limit: int | None = None,
                  batch: int = 1) -> int:
    """Run the site's jobs due at ``at`` (default: the site clock), earliest first, up to ``batch``
    to a transaction (each in its own savepoint; > 1 only for the site's only runner)."""
    return await scheduler.run_due(app, site_pk, HANDLERS, at=at, limit=limit, batch=batch, groups=GROUPS,
                                    preloads=PRELOADS)


async def run_all_sites(app: App) -> int:
    """One pass of the continuous scheduler over every site."""
    return await scheduler.run_all_sites(app, HANDLERS)
