"""The route table: every API operation billhive serves, by the spec's operationId.

Method and path come from the spec; this table says which service function answers.
To find the code for a URL: look the URL up in the spec (or below), then open
``billhive/services/<resource>.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from billhive import spec
from billhive.services import (
    addons,
    addresses,
    cards,
    comments,
    coupon_codes,
    coupons,
    csv_tax_rules,
    customers,
    estimates,
    events,
    hosted_pages,
    invoices,
    orders,
    payment_intents,
    plans,
    portal_sessions,
    subscriptions,
    time_machines,
    transactions,
)
from billhive.spec import Operation
from billhive.store.docs import DocTable
from billhive.store.resources import (
    COMMENTS,
    CUSTOMERS,
    INVOICES,
    ORDERS,
    SUBSCRIPTIONS,
    TRANSACTIONS,
)


@dataclass(frozen=True)
class Route:
    op: Operation
    fn: Callable[..., Awaitable[dict]]
    list_table: DocTable | None = None  # list operations: the table whose fields can be filtered

    @property
    def in_spec(self) -> bool:
        """False: a billhive extension (billhive/spec/extensions.py), not part of the v1 spec."""
        return not self.op.extension


def api(operation_id: str, fn: Callable[..., Awaitable[dict]], list_table: DocTable | None = None) -> Route:
    """The route of a v1 operation, or of one of billhive's extensions (spec/extensions.py)."""
    op = spec.operations().get(operation_id) or spec.extension_operations()[operation_id]
    return Route(op, fn, list_table)


def unlisted(operation_id: str, method: str, path: str, fn: Callable[..., Awaitable[dict]], *,
             response: str) -> Route:
    """A route no document lists (the tests' and the benchmark's own): it takes no parameters
    and answers ``{response: {...}}`` or a Chargebee error."""
    path_params = tuple(seg[1:-1] for seg in path.split("/") if seg.startswith("{"))
    body_schema = {"type": "object", "properties": {}} if method == "POST" else None
    responses = {"200": {"type": "object", "properties": {response: {"type": "object"}}, "required": [response]}}
    for status in ("400", "401", "403", "404", "405", "409", "422", "429", "500", "503"):
        responses[status] = spec.resource_schema(status)
    op = Operation(operation_id, method, path, path_params, {}, body_schema, {}, responses, extension=True)
    return Route(op, fn, None)


ROUTES: list[Route] = [
    # events
    api("list_events", events.list_events, events.EVENTS),
    api("retrieve_an_event", events.retrieve),
    # invoices: collect (close pending) and payments
    api("close_pending_invoice", invoices.collect),
    api("close_an_invoice", invoices.close),
    api("retrieve_an_invoice", invoices.retrieve),
    api("list_invoices", invoices.list_invoices, INVOICES),
    api("list_invoices_for_a_customer", invoices.list_for_customer, INVOICES),
    api("list_invoices_for_a_subscription", invoices.list_for_subscription, INVOICES),
    api("add_one-time_charge_to_a_pending_invoice", invoices.add_charge),
    api("delete_an_invoice", invoices.delete),
    api("void_an_invoice", invoices.void),
    api("stop_dunning_for_invoice", invoices.stop_dunning),
    api("collect_payment_for_an_invoice", invoices.collect_payment),
    api("record_payment_for_an_invoice", invoices.record_payment),
    api("refund_an_invoice", invoices.refund),
    api("record_refund_for_an_invoice", invoices.record_refund),
    # invoice creation, pdf, orders
    api("create_an_invoice", invoices.create),
    api("create_invoice_for_a_one-time_charge", invoices.charge),
    api("create_invoice_for_a_non-recurring_addon", invoices.charge_addon),
    api("add_non-recurring_addon_to_a_pending_invoice", invoices.add_addon_charge),
    api("retrieve_invoice_as_pdf", invoices.retrieve_pdf),
    api("create_an_order", orders.create),
    api("update_an_order", orders.update),
    api("retrieve_an_order", orders.retrieve),
    api("list_orders", orders.list_orders, ORDERS),
    api("list_orders_for_an_invoice", orders.list_for_invoice, ORDERS),
    # transactions
    api("retrieve_a_transaction", transactions.retrieve),
    api("list_transactions", transactions.list_transactions, TRANSACTIONS),
    api("list_transactions_for_a_customer", transactions.list_for_customer, TRANSACTIONS),
    api("list_transactions_for_a_subscription", transactions.list_for_subscription, TRANSACTIONS),
    api("list_transactions_for_an_invoice", transactions.list_for_invoice, TRANSACTIONS),
    # catalog
    api("create_a_plan", plans.create),
    api("update_a_plan", plans.update),
    api("retrieve_a_plan", plans.retrieve),
    api("list_plans", plans.list_plans, plans.PLANS),
    api("delete_a_plan", plans.delete),
    api("create_an_addon", addons.create),
    api("update_an_addon", addons.update),
    api("retrieve_an_addon", addons.retrieve),
    api("list_addons", addons.list_addons, addons.ADDONS),
    api("delete_an_addon", addons.delete),
    api("create_a_coupon", coupons.create),
    api("retrieve_a_coupon", coupons.retrieve),
    api("list_coupons", coupons.list_coupons, coupons.COUPONS),
    api("create_a_coupon_code_for_a_coupon", coupon_codes.create),
    api("retrieve_a_coupon_code", coupon_codes.retrieve),
    # comments, portal sessions, csv tax rules
    api("create_a_comment", comments.create),
    api("retrieve_a_comment", comments.retrieve),
    api("list_comments", comments.list_comments, COMMENTS),
    api("delete_a_comment", comments.delete),
    api("create_a_portal_session", portal_sessions.create),
    api("retrieve_a_portal_session", portal_sessions.retrieve),
    api("activate_a_portal_session", portal_sessions.activate),
    api("logout_a_portal_session", portal_sessions.logout),
    api("taxes_csv_import", csv_tax_rules.create),
    api("resend_an_event", events.resend),
    # subscriptions, estimates
    api("create_a_subscription", subscriptions.create),
    api("create_subscription_for_customer", subscriptions.create_for_customer),
    api("retrieve_a_subscription", subscriptions.retrieve),
    api("retrieve_with_scheduled_changes", subscriptions.retrieve_with_scheduled_changes),
    api("update_a_subscription", subscriptions.update),
    api("list_subscriptions", subscriptions.list_subscriptions, SUBSCRIPTIONS),
    api("list_subscriptions_for_a_customer", subscriptions.list_for_customer, SUBSCRIPTIONS),
    api("cancel_a_subscription", subscriptions.cancel),
    api("reactivate_a_subscription", subscriptions.reactivate),
    api("delete_a_subscription", subscriptions.delete),
    api("change_term_end", subscriptions.change_term_end),
    api("remove_scheduled_cancellation", subscriptions.remove_scheduled_cancellation),
    api("remove_scheduled_changes", subscriptions.remove_scheduled_changes),
    api("scheduled_changes_a_subscription_scheduled_change", subscriptions.scheduled_changes),
    api("update_scheduled_changes_a_subscription_scheduled_change", subscriptions.update_scheduled_changes),
    api("add_charge_at_term_end", subscriptions.add_charge_at_term_end),
    api("charge_addon_at_term_end", subscriptions.charge_addon_at_term_end),
    api("create_subscription_estimate", estimates.create_subscription),
    api("create_subscription_for_a_customer_estimate", estimates.create_subscription_for_customer),
    api("update_subscription_estimate", estimates.update_subscription),
    api("subscription_renewal_estimate", estimates.renewal_estimate),
    # time machine (test sites; Chargebee v2's API on v1 URLs)
    api("retrieve_a_time_machine", time_machines.retrieve),
    api("start_afresh_a_time_machine", time_machines.start_afresh),
    api("travel_forward_a_time_machine", time_machines.travel_forward),
    # customers, cards, credits
    api("create_a_customer", customers.create),
    api("list_customers", customers.list_customers, CUSTOMERS),
    api("retrieve_a_customer", customers.retrieve),
    api("update_a_customer", customers.update),
    api("delete_a_customer", customers.delete),
    api("update_billing_info_for_a_customer", customers.update_billing_info),
    api("update_payment_method_for_a_customer", customers.update_payment_method),
    api("add_contacts_to_a_customer", customers.add_contact),
    api("update_contacts_for_a_customer", customers.update_contact),
    api("delete_contacts_for_a_customer", customers.delete_contact),
    api("add_account_credits_to_a_customer", customers.add_account_credits),
    api("deduct_account_credits_for_a_customer", customers.deduct_account_credits),
    api("set_account_credits_for_a_customer", customers.set_account_credits),
    api("update_card_for_a_customer", cards.update_card),
    api("retrieve_card_for_a_customer", cards.retrieve),
    api("delete_card_for_a_customer", cards.delete_card),
    api("switch_gateway", cards.switch_gateway),
    api("update_card_for_customer_using_payment_intent", payment_intents.update_card_using_payment_intent),
    api("create_a_payment_intent", payment_intents.create),
    api("update_a_payment_intent", payment_intents.update),
    api("retrieve_a_payment_intent", payment_intents.retrieve),
    # the test gateway's stand-in for Chargebee.js + the 3DS challenge (see services/payment_intents.py)
    api("authorize_a_payment_intent", payment_intents.authorize),
    api("retrieve_an_address", addresses.retrieve),
    api("update_an_address", addresses.update),
    # hosted pages (checkout pages served by billhive/http/hosted.py) and the invoice estimate
    api("checkout_new_subscription", hosted_pages.checkout_new),
    api("checkout_existing_subscription", hosted_pages.checkout_existing),
    api("checkout_onetime_charge", hosted_pages.checkout_onetime_charge),
    api("checkout_onetime_addons", hosted_pages.checkout_onetime_addons),
    api("retrieve_a_hosted_page", hosted_pages.retrieve),
    api("create_invoice_estimate", estimates.create_invoice),
]


def implemented_operation_ids() -> set[str]:
    return {r.op.operation_id for r in ROUTES if r.in_spec}


def extension_routes() -> list[Route]:
    return [r for r in ROUTES if not r.in_spec]

