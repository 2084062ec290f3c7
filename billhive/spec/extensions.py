"""What billhive serves beyond the Chargebee API v1 spec, written as OpenAPI so that billhive's own
``/openapi.json`` documents it and the tests hold every response to it.

- ``OPERATIONS``: operations that are not in the v1 spec (v2's invoice close and time machine on
  v1 URLs, event resend, the test gateway's payment-intent authorization). Each is an OpenAPI path
  item; parameters and bodies are decoded from it exactly like the v1 operations'.
- ``SCHEMAS``: component schemas those operations answer with.
- ``FIELDS``: fields billhive's resources carry that the v1 spec's schemas leave out, each with the
  reason it is there. Together with the spec these are *all* the fields a response may hold: the
  contract check in the tests forbids anything else.
"""

from __future__ import annotations

from typing import Any

_UNIX_TIME = {"type": "integer", "format": "unix-time", "minimum": 0}
_ERRORS = ("400", "401", "403", "404", "405", "409", "422", "429", "500", "503")

# every Chargebee resource, and every object nested in one, names its kind: "object": "invoice",
# "line_item", "billing_address"... (Chargebee's v1 sample payloads; the v1 spec's schemas omit it)
OBJECT_FIELD = {"type": "string", "description": "The kind of object (Chargebee's v1 payloads carry it)."}

# the legacy pair (and its param) that v1 clients older than 1.1.48, and the 1.x Python SDK, read
ERROR_FIELDS: dict[str, Any] = {
    "http_status_code": {"type": "integer", "description": "The HTTP status, repeated in the body."},
    "error_code": {"type": "string", "description": "Legacy v1 error code (read by old v1 clients)."},
    "error_msg": {"type": "string", "description": "Legacy v1 error message."},
    "error_param": {"type": "string", "description": "Legacy v1 name of the parameter in error."},
}

FIELDS: dict[str, dict[str, Any]] = {
    "Subscription": {
        # a v1 field (Chargebee's v1 API reference and payloads); the spec's schema lacks it and
        # the official SDKs' Subscription models read it
        "customer_id": {"type": "string", "maxLength": 50,
                        "description": "Identifier of the customer with whom this subscription is associated."},
    },
    "Invoice": {
        "voided_at": {**_UNIX_TIME, "description": "When the invoice was voided (Chargebee's v2 field)."},
    },
    "Customer": {
        # a v1 field the spec's schema lacks: the official 1.x SDKs' Customer models declare it and
        # Chargebee's v1 payloads carry it ("card_status": "no_card" / "valid"; docs/PARITY.md)
        "card_status": {"type": "string", "enum": ["no_card", "valid", "expiring", "expired"],
                        "description": "Current status of the customer's card."},
    },
    "Transaction": {
        # a v1 field (the official 1.x SDKs' Transaction models); record_payment's ``memo`` fills it
        # (the spec: "This will be the description in the transaction created")
        "description": {"type": "string", "maxLength": 65000, "description": "Description for this transaction."},
    },
    "Event": {
        # v1 events carry webhook_status (Chargebee's v1 events API and payloads)
        "webhook_status": {"type": "string",
                           "enum": ["not_configured", "scheduled", "succeeded", "re_scheduled", "failed",
                                    "skipped", "not_applicable", "disabled"],
                           "description": "The summary status of the event's webhook deliveries."},
        "origin": {"type": "object", "additionalProperties": False,
                   "properties": {"user": {"type": "string"}, "ip": {"type": "string"},
                                  "device": {"type": "string"}},
                   "description": "billhive: the chargebee-request-origin-* headers of the request that caused "
                                  "the event."},
    },
}

SCHEMAS: dict[str, Any] = {
    "TimeMachine": {
        "type": "object",
        "description": "A test site's clock (Chargebee API v2's time machine, served on v1 URLs).",
        "properties": {
            "name": {"type": "string", "description": "Always delorean."},
            "time_travel_status": {"type": "string", "enum": ["not_enabled", "in_progress", "succeeded", "failed"]},
            "genesis_time": _UNIX_TIME,
            "destination_time": _UNIX_TIME,
            "failure_code": {"type": "string"},
            "failure_reason": {"type": "string"},
            "error_json": {"type": "string", "description": "The error as JSON: message, type, api_error_code and "
                           "http_code, every value a string (what the v2 SDKs' "
                           "wait_for_time_travel_completion reads)."},
            # billhive: a travel's progress (the v2 resource has none; travels run in the background)
            "current_time": {**_UNIX_TIME, "description": "billhive: the time the site clock has reached so far."},
            "jobs_done": {"type": "integer", "minimum": 0,
                          "description": "billhive: scheduled jobs (renewals, dunning...) this travel has run."},
            "jobs_due": {"type": "integer", "minimum": 0,
                         "description": "billhive: while in_progress, jobs due up to destination_time not yet run "
                                        "(a renewal schedules the next one, so it may grow)."},
            "object": OBJECT_FIELD,
        },
        "required": ["name", "time_travel_status", "genesis_time", "destination_time"],
    },
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _answers(resource: str, schema: str) -> dict:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": {
        "type": "object", "properties": {resource: _ref(schema)}, "required": [resource]}}}}}
    for status in _ERRORS:
        out[status] = {"description": "on error", "content": {"application/json": {"schema": _ref(status)}}}
    return out


def _path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _form(properties: dict, required: tuple[str, ...] = ()) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {"content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _op(operation_id: str, summary: str, params: list[dict], answers: dict, body: dict | None = None) -> dict:
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "parameters": params,
                          "responses": answers, "x-billhive-extension": True}
    if body is not None:
        op["requestBody"] = body
    return op


_CARD_FIELD = {"type": "string", "maxLength": 50}
_TM = _path_param("time-machine-name")

OPERATIONS: dict[str, dict[str, Any]] = {
    "/invoices/{invoice-id}/close": {"post": _op(
        "close_an_invoice", "Close a pending invoice (Chargebee v2's name for collect)",
        [_path_param("invoice-id")], _answers("invoice", "Invoice"),
        _form({"comment": {"type": "string", "maxLength": 300},
               "invoice_date": {"type": "integer", "format": "unix-time"},
               "invoice_note": {"type": "string", "maxLength": 2000}}))},
    "/events/{event-id}/resend": {"post": _op(
        "resend_an_event", "Deliver an event again to every enabled webhook endpoint that wants it",
        [_path_param("event-id")], _answers("event", "Event"))},
    "/time_machines/{time-machine-name}": {"get": _op(
        "retrieve_a_time_machine", "Retrieve a test site's time machine", [_TM],
        _answers("time_machine", "TimeMachine"))},
    "/time_machines/{time-machine-name}/start_afresh": {"post": _op(
        "start_afresh_a_time_machine", "Wipe the test site's data and set its clock to genesis_time", [_TM],
        _answers("time_machine", "TimeMachine"), _form({"genesis_time": _UNIX_TIME}))},
    "/time_machines/{time-machine-name}/travel_forward": {"post": _op(
        "travel_forward_a_time_machine", "Move the test site's clock forward, running everything due", [_TM],
        _answers("time_machine", "TimeMachine"), _form({"destination_time": _UNIX_TIME}, ("destination_time",)))},
    "/payment_intents/{payment-intent-id}/authorize": {"post": _op(
        "authorize_a_payment_intent", "Authorize a payment intent with a test card (test sites; what "
        "Chargebee.js and the 3DS challenge do)", [_path_param("payment-intent-id")],
        _answers("payment_intent", "PaymentIntent"),
        _form({"number": {"type": "string", "maxLength": 1500},
               "expiry_month": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 12},
               "expiry_year": {"type": "integer", "format": "int32"},
               "cvv": {"type": "string", "maxLength": 520},
               "first_name": _CARD_FIELD, "last_name": _CARD_FIELD},
              ("number", "expiry_month", "expiry_year")))},
}


# ---- the admin API (billhive/http/admin_api.py): outside /api/v1, JSON bodies, the admin token ----

_ADMIN_SITE = {
    "type": "object",
    "description": "billhive: a site as the admin API shows it (its keys only when made or rotated).",
    "properties": {
        "name": {"type": "string"},
        "test_site": {"type": "boolean"},
        "currency_code": {"type": "string"},
        "created_at": _UNIX_TIME,
        "time_travel_status": {"type": "string", "enum": ["not_enabled", "in_progress", "succeeded", "failed"]},
        "api_url": {"type": "string", "description": "The site's API base URL (the key chooses the site)."},
        "api_key": {"type": "string", "description": "Full-access key (only in create and rotate_keys)."},
        "read_only_key": {"type": "string", "description": "Read-only key (only in create and rotate_keys)."},
        "deleted": {"type": "boolean"},
        "object": OBJECT_FIELD,
    },
    "required": ["name"],
}
SCHEMAS["AdminSite"] = _ADMIN_SITE
_ADMIN_ERRORS = ("400", "401", "404", "409", "413", "500", "503")


def _admin_answers(ok: dict) -> dict:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    for status in _ADMIN_ERRORS:
        out[status] = {"description": "on error", "content": {"application/json": {"schema": _ref(
            status if status in _ERRORS else "400")}}}
    return out


def _admin_op(operation_id: str, summary: str, params: list[dict], ok: dict, body: dict | None = None) -> dict:
    op = _op(operation_id, summary, params, _admin_answers(ok))
    op["security"] = [{"billhive_admin_token": []}]
    op["tags"] = ["billhive admin"]
    if body is not None:
        op["requestBody"] = {"content": {"application/json": {"schema": body}}}
    return op


_SITE_ANSWER = {"type": "object", "properties": {"site": _ref("AdminSite")}, "required": ["site"]}
_SITE_NAME = _path_param("name")

# full paths (their own server: the base URL, not /api/v1)
ADMIN_OPERATIONS: dict[str, dict[str, Any]] = {
    "/admin/api/sites": {
        "post": _admin_op("admin_create_site", "Create a test site with a full-access and a read-only key", [],
                          _SITE_ANSWER, {"type": "object", "properties": {
                              "name": {"type": "string", "description": "Default: a random name ending in -test."},
                              "currency_code": {"type": "string", "minLength": 3, "maxLength": 3},
                              "metered_billing": {"type": "boolean"}}}),
        "get": _admin_op("admin_list_sites", "List every site", [], {
            "type": "object", "properties": {"list": {"type": "array", "items": _SITE_ANSWER}}, "required": ["list"]}),
    },
    "/admin/api/sites/{name}": {
        "get": _admin_op("admin_retrieve_site", "Retrieve a site", [_SITE_NAME], _SITE_ANSWER),
        "delete": _admin_op("admin_delete_site", "Delete a site and everything of it", [_SITE_NAME], _SITE_ANSWER),
    },
    "/admin/api/sites/{name}/reset": {
        "post": _admin_op("admin_reset_site", "Wipe the site's data and reset its time machine (settings, keys and "
                          "webhook endpoints stay)", [_SITE_NAME], _SITE_ANSWER),
    },
    "/admin/api/sites/{name}/rotate_keys": {
        "post": _admin_op("admin_rotate_site_keys", "Revoke every key of the site and make a new full-access and "
                          "read-only key", [_SITE_NAME], _SITE_ANSWER),
    },
}

# seeds and snapshots (billhive/http/seeds.py, billhive/services/snapshots.py)
_SEED = {
    "type": "object",
    "description": "billhive: a seed (examples/seed.yaml): lists of entries, each the parameters of the v1 "
                   "operation that creates it, nested (card: {number: ...}, addons: [{id: ..., quantity: ...}]). "
                   "Loaded in this order through the API's operations; on the first bad entry the site is put "
                   "back as it was and the error's param names the entry (customers[1].card[number]).",
    "properties": {
        **{name: {"type": "array", "items": {"type": "object"}, "description": f"The parameters of {op}."}
           for name, op in (("plans", "POST /plans"), ("addons", "POST /addons"), ("coupons", "POST /coupons"),
                            ("customers", "POST /customers"),
                            ("subscriptions", "POST /subscriptions, or POST /customers/{customer}/subscriptions "
                                              "when the entry's customer is an id"))},
        "webhook_endpoints": {"type": "array", "items": {"type": "object", "properties": {
            "url": {"type": "string"}, "id": {"type": "string"}, "username": {"type": "string"},
            "password": {"type": "string"}, "secret": {"type": "string"},
            "event_types": {"type": "array", "items": {"type": "string"}}, "enabled": {"type": "boolean"}},
            "required": ["url"]}, "description": "Added after the other sections."},
    },
    "additionalProperties": False,
}
_SEED_ANSWER = {"type": "object", "properties": {
    "object": {"type": "string", "enum": ["site_seed"]}, "name": {"type": "string"},
    "created": {"type": "object", "description": "The ids made, per section.",
                "additionalProperties": {"type": "array", "items": {"type": "string"}}}},
    "required": ["object", "name", "created"]}
_SNAPSHOT = {
    "type": "object",
    "description": "billhive: everything of one site - the site row's settings, invoice number sequence and "
                   "time machine, and the rows of every table of the site (keys, catalog, customers, cards' "
                   "gateway tokens, subscriptions, invoices, transactions, events, deliveries, jobs). Restored "
                   "only by a billhive at the same format version and schema revision.",
    "properties": {
        "object": {"type": "string", "enum": ["site_snapshot"]},
        "format": {"type": "string", "enum": ["billhive.site_snapshot"]},
        "version": {"type": "integer"},
        "schema_revision": {"type": "string"},
        "schema": {"type": "string", "description": "A digest of the tables and columns held."},
        "taken_at": _UNIX_TIME,
        "site": {"type": "object", "properties": {"name": {"type": "string"}, "settings": {"type": "object"}},
                 "required": ["name", "settings"]},
        "tables": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "columns": {"type": "array", "items": {"type": "string"}}, "rows": {"type": "array"}},
            "required": ["columns", "rows"]}},
    },
    "required": ["format", "version", "schema_revision", "schema", "site", "tables"],
}
_RESTORE_ANSWER = {"type": "object", "properties": {
    "object": {"type": "string", "enum": ["site_restore"]}, "name": {"type": "string"},
    "snapshot_of": {"type": "string"},
    "keys_restored": {"type": "boolean", "description": "True when the snapshot is of this site (same name); "
                                                        "into another site the target keeps its own keys."},
    "rows": {"type": "object", "additionalProperties": {"type": "integer"}}},
    "required": ["object", "name", "keys_restored", "rows"]}
_seed_op = _admin_op("admin_seed_site", "Load a seed (plans, addons, coupons, customers with test cards, "
                     "subscriptions, webhook endpoints) through the API's operations; all or nothing",
                     [_SITE_NAME], _SEED_ANSWER, _SEED)
_seed_op["requestBody"]["content"]["application/yaml"] = {"schema": _SEED}
ADMIN_OPERATIONS.update({
    "/admin/api/sites/{name}/seed": {"post": _seed_op},
    "/admin/api/sites/{name}/snapshot": {
        "get": _admin_op("admin_snapshot_site", "Everything of the site as one JSON document (refused while its "
                         "time machine travels)", [_SITE_NAME], _SNAPSHOT),
    },
    "/admin/api/sites/{name}/restore": {
        "post": _admin_op("admin_restore_site", "Replace the site's data by a snapshot's, in one transaction (into "
                          "another site: the target keeps its name and keys); an incompatible snapshot is refused "
                          "with configuration_incompatible", [_SITE_NAME], _RESTORE_ANSWER, _SNAPSHOT),
    },
})

# ---- faults on purpose (billhive/domain/faults.py) ----

_STATUSES = [400, 401, 403, 404, 405, 409, 422, 429, 500, 503]
_FAULT_RULE_FIELDS: dict[str, Any] = {
    "operation": {"type": "string", "description": "The operation: its operationId in this document (e.g. "
                  "close_pending_invoice), or its method and path as written here (\"POST /invoices/{invoice-id}/"
                  "collect\"), or \"*\" for every operation of the site."},
    "status": {"type": "integer", "enum": _STATUSES, "description": "The error status to answer (a status every "
               "operation documents). Without it the rule only adds latency and the operation runs."},
    "api_error_code": {"type": "string", "description": "One of the codes this document lists for the status "
                       "(default: billhive's own code for it, e.g. 503 internal_temporary_error)."},
    "type": {"type": "string", "description": "One of the types listed for the status (default: payment for "
             "the payment_* codes of 400, else the status's usual type)."},
    "message": {"type": "string", "maxLength": 500},
    "param": {"type": "string", "maxLength": 200, "description": "The param the error names, if any."},
    "probability": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "The chance that a "
                    "counted call is struck (default: every counted call)."},
    "seed": {"type": "integer", "description": "Seeds the probability: the n-th counted call is struck or not "
             "whatever process serves it, so a seed reproduces a run (default: random, shown here)."},
    "times": {"type": "integer", "minimum": 1, "maximum": 1000000, "description": "The rule applies to the "
              "next this-many calls of the operation, then never again (default: no limit)."},
    "latency_ms": {"type": "integer", "minimum": 0, "maximum": 30000, "description": "Wait this long before "
                   "answering (or running the operation)."},
}
SCHEMAS["AdminFaultRule"] = {
    "type": "object",
    "description": "billhive: a fault rule of a site (faults on purpose: off while a site has none).",
    "properties": {
        "id": {"type": "string"}, **_FAULT_RULE_FIELDS,
        "calls": {"type": "integer", "description": "Calls of the operation counted so far (at most times)."},
        "struck": {"type": "integer", "description": "Calls the rule struck."},
        "remaining": {"type": "integer", "description": "Calls left to count (rules with times)."},
        "created_at": _UNIX_TIME, "deleted": {"type": "boolean"}, "object": OBJECT_FIELD,
    },
    "required": ["id", "operation", "latency_ms", "seed", "calls", "struck"],
}
_WEBHOOK_FAULT_FIELDS: dict[str, Any] = {
    "duplicate": {"type": "boolean", "description": "Every delivery is sent twice (the second right after "
                  "the first; its answer is logged, not recorded)."},
    "out_of_order": {"type": "boolean", "description": "Deliveries are gathered for window_seconds and sent "
                     "one at a time, newest first."},
    "window_seconds": {"type": "integer", "minimum": 1, "maximum": 60, "description": "out_of_order's window "
                       "(default 2)."},
    "delay_seconds": {"type": "integer", "minimum": 0, "maximum": 60, "description": "Each delivery is held "
                      "at least this long (wall clock) before it is sent."},
    "fail_first_n": {"type": "integer", "minimum": 0, "maximum": 8, "description": "The first N attempts of "
                     "each delivery are sent but recorded as failed, so Chargebee's retry schedule runs (on "
                     "the site clock)."},
}
SCHEMAS["AdminWebhookFault"] = {
    "type": "object",
    "description": "billhive: a webhook endpoint's delivery modes (faults on purpose).",
    "properties": {"endpoint_id": {"type": "string"}, "url": {"type": "string"},
                   "fault": {"type": "object", "properties": _WEBHOOK_FAULT_FIELDS},
                   "object": OBJECT_FIELD},
    "required": ["endpoint_id"],
}
_FAULT_ANSWER = {"type": "object", "properties": {"fault_rule": _ref("AdminFaultRule")}, "required": ["fault_rule"]}
_WEBHOOK_FAULT_ANSWER = {"type": "object", "properties": {"webhook_endpoint_fault": _ref("AdminWebhookFault")},
                         "required": ["webhook_endpoint_fault"]}
_ID = _path_param("id")
ADMIN_OPERATIONS["/admin/api/sites/{name}/faults"] = {
    "post": _admin_op("admin_add_fault_rule", "Add a fault rule: an operation of the site answers an error "
                      "and/or waits, for the next N calls or with a probability; the error is applied before "
                      "the operation runs, so a struck call changes nothing", [_SITE_NAME], _FAULT_ANSWER,
                      {"type": "object", "properties": _FAULT_RULE_FIELDS, "required": ["operation"]}),
    "get": _admin_op("admin_list_faults", "List the site's fault rules and the webhook endpoints with delivery "
                     "modes", [_SITE_NAME], {"type": "object", "properties": {
                         "list": {"type": "array", "items": _FAULT_ANSWER},
                         "webhook_endpoints": {"type": "array", "items": _ref("AdminWebhookFault")}},
                         "required": ["list", "webhook_endpoints"]}),
    "delete": _admin_op("admin_clear_faults", "Every fault of the site off: its rules deleted, every webhook "
                        "endpoint delivered normally", [_SITE_NAME], {"type": "object", "properties": {
                            "faults": {"type": "object", "properties": {
                                "fault_rules_deleted": {"type": "integer"},
                                "webhook_endpoints_cleared": {"type": "array", "items": {"type": "string"}},
                                "object": OBJECT_FIELD}}}, "required": ["faults"]}),
}
ADMIN_OPERATIONS["/admin/api/sites/{name}/faults/{id}"] = {
    "delete": _admin_op("admin_delete_fault_rule", "Delete one fault rule", [_SITE_NAME, _ID], _FAULT_ANSWER),
}
ADMIN_OPERATIONS["/admin/api/sites/{name}/webhook_endpoints/{id}/fault"] = {
    "post": _admin_op("admin_set_webhook_fault", "Set a webhook endpoint's delivery modes (replacing any "
                      "set before): duplicate, out_of_order, delay_seconds, fail_first_n",
                      [_SITE_NAME, _ID], _WEBHOOK_FAULT_ANSWER,
                      {"type": "object", "properties": _WEBHOOK_FAULT_FIELDS}),
    "get": _admin_op("admin_retrieve_webhook_fault", "Retrieve a webhook endpoint's delivery modes",
                     [_SITE_NAME, _ID], _WEBHOOK_FAULT_ANSWER),
    "delete": _admin_op("admin_clear_webhook_fault", "Deliver to the endpoint normally again",
                        [_SITE_NAME, _ID], _WEBHOOK_FAULT_ANSWER),
}
# how the admin API authenticates (components.securitySchemes in /openapi.json)
ADMIN_SECURITY = {"billhive_admin_token": {
    "type": "http", "scheme": "bearer",
    "description": "billhive's admin token (serve --admin-token / BILLHIVE_ADMIN_TOKEN); also accepted as the "
                   "user of HTTP Basic auth. Never a site's API key."}}
