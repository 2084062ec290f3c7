"""Subscriptions: /api/v1/subscriptions/... and recurring billing on the site clock.

The package, by purpose (each module's entry points come first):

- ``operations``      the API operations (create, update, cancel, reactivate, ...), one async function
                      each: load -> compose (billing) -> commit, one transaction, charge after commit
- ``billing``         the composition shared with estimates: the subscription after an operation and
                      the invoice it bills now, on copies (``compose_create``, ``compose_update``, ...)
- ``commit``          saving what was composed: issuing invoices, jobs, events, charging after commit
- ``jobs``            the scheduled jobs (start, term end, reminders) and ``cancel_for_non_payment``
- ``state``           the stored subscription: ``State`` (internal fields), load / save / document
- ``payment_details`` card / payment_intent / payment_method given with an operation; a new customer
- ``catalog``         plans, addons, coupons and customers, as the operations read them

The names other modules use are importable from here.
"""

from billhive.services.subscriptions.billing import (
    Composed,
    compose_activation,
    compose_create,
    compose_delayed_only,
    compose_next,
    compose_reactivation,
    compose_renewal,
    compose_update,
)
from billhive.services.subscriptions.commit import (
    JOB_REMINDER,
    JOB_START,
    JOB_TERM_END,
    JOB_TRIAL_ENDING,
    Outcome,
    finish,
)
from billhive.services.subscriptions.jobs import (
    cancel_for_non_payment,
    on_reminder,
    on_reminders,
    on_start,
    on_term_end,
    on_trial_ending,
    on_trial_endings,
    preload_term_ends,
)
from billhive.services.subscriptions.operations import (
    add_charge_at_term_end,
    cancel,
    change_term_end,
    charge_addon_at_term_end,
    create,
    create_for_customer,
    create_unit,
    delete,
    list_for_customer,
    list_subscriptions,
    reactivate,
    remove_scheduled_cancellation,
    remove_scheduled_changes,
    retrieve,
    retrieve_with_scheduled_changes,
    scheduled_changes,
    update,
    update_scheduled_changes,
    update_unit,
)
from billhive.services.subscriptions.payment_details import (
    PaymentIn,
    apply_payment,
    new_customer,
    prepare_payment,
)
from billhive.services.subscriptions.state import LIVE, State

__all__ = [
    "JOB_REMINDER", "JOB_START", "JOB_TERM_END", "JOB_TRIAL_ENDING", "LIVE", "Composed", "Outcome", "PaymentIn",
    "State", "add_charge_at_term_end", "apply_payment", "cancel", "cancel_for_non_payment", "change_term_end",
    "charge_addon_at_term_end", "compose_activation", "compose_create", "compose_delayed_only", "compose_next",
    "compose_reactivation", "compose_renewal", "compose_update", "create", "create_for_customer", "create_unit",
    "delete", "finish", "list_for_customer", "list_subscriptions", "new_customer", "on_reminder", "on_reminders",
    "on_start", "on_term_end", "on_trial_ending", "on_trial_endings", "preload_term_ends", "prepare_payment",
    "reactivate",
    "remove_scheduled_cancellation",
    "remove_scheduled_changes", "retrieve", "retrieve_with_scheduled_changes", "scheduled_changes", "update",
    "update_scheduled_changes", "update_unit",
]
