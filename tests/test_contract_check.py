"""The contract check (tests/support/contract.py) must fail on bodies that break the contract;
otherwise every response "validated" by the suite proves nothing."""

from __future__ import annotations

import copy

import pytest

from tests.support import contract, documents
from tests.support.contract import ContractError

INVOICE = documents.INVOICE
ERROR = {"message": "nope", "type": "invalid_request", "api_error_code": "resource_not_found",
         "http_status_code": 404, "error_code": "resource_not_found", "error_msg": "nope"}


def _event(event_type: str, content: dict) -> dict:
    return {"event": {"id": "ev_1", "occurred_at": 1700000000, "source": "api", "object": "event",
                      "api_version": "v1", "event_type": event_type, "webhook_status": "not_configured",
                      "webhooks": [], "content": content}}


def test_a_valid_invoice_passes():
    contract.check("GET", "/api/v1/invoices/inv_1", 200, {"invoice": INVOICE})


@pytest.mark.parametrize("body", [
    {"invoice": {"id": 5, "status": "bogus"}},  # wrong type, bad enum, required fields missing
    {"invoice": {**INVOICE, "status": "bogus"}},
    {"invoice": {**INVOICE, "amount": "12.50"}},
    {"invoice": {**INVOICE, "draft_id": "draft_inv_1"}},  # an internal field leaking out
    {"invoice": {**INVOICE, "line_items": [{**INVOICE["line_items"][0], "internal": 1}]}},  # nested leak
    {"invoice": INVOICE, "customer_internal": {}},  # a sibling the operation does not answer
    {},  # the resource itself missing
])
def test_invoice_bodies_that_break_the_contract_fail(body):
    with pytest.raises(ContractError):
        contract.check("GET", "/api/v1/invoices/inv_1", 200, body)


def test_free_form_objects_stay_free_form():
    sub = {"id": "s1", "plan_id": "basic", "plan_quantity": 1, "status": "active", "created_at": 1,
           "has_scheduled_changes": False, "object": "subscription", "customer_id": "cust_1",
           "meta_data": {"anything": {"nested": [1, 2]}}}
    contract.check("GET", "/api/v1/subscriptions/s1", 200, {"subscription": sub, "customer": documents.CUSTOMER})


def test_undocumented_status_fails():
    with pytest.raises(ContractError, match="not documented"):
        contract.check("GET", "/api/v1/invoices/inv_1", 418, ERROR)


def test_error_bodies_need_the_legacy_pair_and_nothing_else():
    contract.check("GET", "/api/v1/invoices/inv_1", 404, ERROR)
    with pytest.raises(ContractError):
        contract.check("GET", "/api/v1/invoices/inv_1", 404, {k: v for k, v in ERROR.items() if k != "error_code"})
    with pytest.raises(ContractError):
        contract.check("GET", "/api/v1/invoices/inv_1", 404, {**ERROR, "traceback": "..."})
    with pytest.raises(ContractError):
        contract.check("GET", "/api/v1/invoices/inv_1", 404, {**ERROR, "type": "not_a_type"})


def test_the_operation_comes_from_method_and_path_the_most_literal_template_winning():
    assert contract.operation_for("POST", "/api/v1/invoices/charge").operation_id == \
        "create_invoice_for_a_one-time_charge"
    assert contract.operation_for("POST", "/api/v1/invoices/inv_1/collect").operation_id == "close_pending_invoice"
    assert contract.operation_for("GET", "/api/v1/invoices/inv_1").operation_id == "retrieve_an_invoice"
    assert contract.operation_for("PUT", "/api/v1/invoices/inv_1") is None
    assert contract.operation_for("GET", "/api/v1/no_such_things") is None


def test_an_unknown_route_may_only_answer_an_error():
    contract.check("GET", "/api/v1/no_such_things", 404, ERROR | {"http_status_code": 404})
    with pytest.raises(ContractError):
        contract.check("GET", "/api/v1/no_such_things", 200, {"list": []})


def test_extension_routes_have_real_schemas():
    good = {"time_machine": {"name": "delorean", "time_travel_status": "succeeded", "genesis_time": 1,
                             "destination_time": 2, "object": "time_machine"}}
    contract.check("GET", "/api/v1/time_machines/delorean", 200, good)
    bad = copy.deepcopy(good)
    bad["time_machine"]["time_travel_status"] = "bogus"
    with pytest.raises(ContractError):
        contract.check("GET", "/api/v1/time_machines/delorean", 200, bad)
    with pytest.raises(ContractError):
        contract.check("POST", "/api/v1/invoices/inv_1/close", 200, {"invoice": {"id": 5}})


def test_event_content_is_held_to_its_resources():
    contract.check("GET", "/api/v1/events/ev_1", 200, _event("invoice_generated", {"invoice": INVOICE}))
    with pytest.raises(ContractError):  # a resource in the content missing its fields
        contract.check("GET", "/api/v1/events/ev_1", 200, _event("customer_created", {"customer": {"id": "c"}}))
    with pytest.raises(ContractError):  # something that is not part of the event type's payload
        contract.check("GET", "/api/v1/events/ev_1", 200,
                       _event("customer_created", {"customer": documents.CUSTOMER, "internal": {}}))
    with pytest.raises(ContractError):  # in a list too
        contract.check("GET", "/api/v1/events", 200,
                       {"list": [_event("invoice_generated", {"invoice": {**INVOICE, "draft_id": "x"}})]})
