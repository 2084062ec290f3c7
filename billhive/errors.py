"""The closed family of failures billhive reports, each with Chargebee's code, type and status.

Services raise these; one place (billhive.http.app) turns them into the error JSON.
Tests assert on ``api_error_code`` and ``param``, never on the message text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class SettingError(ValueError):
    """A site setting or webhook endpoint that cannot be (the CLI reports it; not an API error)."""


class BillhiveError(Exception):
    """Base class: every subclass fixes http_status, type and a default api_error_code."""

    http_status = 400
    error_type: str | None = "invalid_request"
    api_error_code = "invalid_request"
    legacy_error_code: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()  # extra response headers (Retry-After)

    def __init__(self, message: str, *, param: str | None = None, api_error_code: str | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if api_error_code:
            self.api_error_code = api_error_code
        self.extra = extra or {}

    def to_json(self) -> dict:
        body: dict = {"message": self.message}
        if self.error_type:
            body["type"] = self.error_type
        body["api_error_code"] = self.api_error_code
        if self.param:
            body["param"] = self.param
        body["http_status_code"] = self.http_status
        # legacy pair read by old v1 clients
        # the legacy pair old v1 clients (and the 1.x Python SDK, which reads ``error_code``
        # unconditionally) read beside ``api_error_code``: the same code, unless a class says otherwise
        body["error_code"] = self.legacy_error_code or self.api_error_code
        body["error_msg"] = self.message
        if self.param:
            body["error_param"] = self.param
        body.update(self.extra)
        return body


class ParamError(BillhiveError):
    """A request parameter is missing, unknown or has a wrong value (400)."""

    api_error_code = "param_wrong_value"


class ParamRequired(ParamError):
    """A required parameter is absent. Chargebee answers these with ``param_wrong_value``
    ("<param> : cannot be blank"); the legacy ``error_code`` is ``param_not_present``."""

    legacy_error_code = "param_not_present"


class InvalidRequest(BillhiveError):
    """The request is well-formed but not acceptable (400 invalid_request)."""


class PaymentMethodVerificationFailed(BillhiveError):
    api_error_code = "payment_method_verification_failed"
    error_type = "payment"


class PaymentProcessingFailed(BillhiveError):
    api_error_code = "payment_processing_failed"
    error_type = "payment"


class PaymentMethodNotPresent(BillhiveError):
    api_error_code = "payment_method_not_present"
    error_type = "payment"


class ConfigurationIncompatible(BillhiveError):
    """The request needs configuration the site lacks, e.g. a payment gateway (400; the spec's
    "not compatible with the configuration for the site or the configuration is incomplete")."""

    api_error_code = "configuration_incompatible"


class DuplicateEntry(BillhiveError):
    api_error_code = "duplicate_entry"


class ResourceLimitExhausted(BillhiveError):
    api_error_code = "resource_limit_exhausted"


class AuthenticationFailed(BillhiveError):
    http_status = 401
    error_type = "untyped"
    api_error_code = "api_authentication_failed"


class AuthorizationFailed(BillhiveError):
    http_status = 403
    error_type = "untyped"
    api_error_code = "api_authorization_failed"


class NotFound(BillhiveError):
    http_status = 404
    api_error_code = "resource_not_found"


class SiteNotFound(BillhiveError):
    http_status = 404
    error_type = "untyped"
    api_error_code = "site_not_found"


class MethodNotAllowed(BillhiveError):
    http_status = 405
    api_error_code = "http_method_not_supported"


class RequestTimeout(BillhiveError):
    """The client took too long to send its request (408; not in the spec: HTTP's own answer)."""

    http_status = 408
    api_error_code = "invalid_request"


class InvalidState(BillhiveError):
    http_status = 409
    api_error_code = "invalid_state_for_request"


class UnableToProcess(BillhiveError):
    http_status = 422
    api_error_code = "unable_to_process_request"


class PayloadTooLarge(BillhiveError):
    """The request body is larger than the limit (413; not in the spec: HTTP's own answer)."""

    http_status = 413
    api_error_code = "invalid_request"


class HeadersTooLarge(BillhiveError):
    """The request line and headers are larger than the limit (431; not in the spec: HTTP's own answer)."""

    http_status = 431
    api_error_code = "invalid_request"


class RateLimited(BillhiveError):
    http_status = 429
    error_type = "operation_failed"
    api_error_code = "api_request_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.headers = ((b"retry-after", str(retry_after).encode()),)


class InternalError(BillhiveError):
    http_status = 500
    error_type = "operation_failed"
    api_error_code = "internal_error"


class Overloaded(BillhiveError):
    """The server is at its connection limit; the client may retry shortly (503, as Chargebee's
    ``internal_temporary_error``: "the request can be re-tried, with exponential backoff")."""

    http_status = 503
    error_type = "operation_failed"
    api_error_code = "internal_temporary_error"


class StoreError(BillhiveError):
    """The database could not do the unit of work (503; the spec's codes for it). ``committed``
    says what became of the unit: False - it was not applied (retrying is safe); None - the
    connection was lost while it committed, so it may or may not have been applied (retry only
    what is safe to repeat: a collect is - the invoice closes once - and an idempotency key
    makes any POST so)."""

    http_status = 503
    error_type = "operation_failed"
    api_error_code = "internal_temporary_error"

    def __init__(self, message: str, *, committed: bool | None = False, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.committed = committed


class StoreUnavailable(StoreError):
    """The database is unreachable (the connection was lost or cannot be made)."""

    api_error_code = "db_connection_failure"


class StoreNotWritable(StoreError):
    """The database cannot take writes (disk full, read-only file or file system); reads work."""

    api_error_code = "site_read_only_mode"


class StoreTimeout(StoreError):
    """The unit of work ran past its deadline (it waited too long for its turn, or a statement
    ran longer than the statement timeout) or lost a conflict with a concurrent one."""

    api_error_code = "internal_temporary_error"


class InjectedFault(BillhiveError):
    """An error a fault rule made an operation answer (admin API, billhive/domain/faults.py): any
    status, code and type the spec documents for every operation."""

    def __init__(self, message: str, *, http_status: int, error_type: str, api_error_code: str,
                 param: str | None = None):
        super().__init__(message, param=param, api_error_code=api_error_code)
        self.http_status = http_status
        self.error_type = error_type
        if http_status in (429, 503):  # as billhive's own 429s and 503s: when to retry
            self.headers = ((b"retry-after", b"1"),)


def not_found(resource: str, ident: str | None = None, *, param: str | None = None) -> NotFound:
    """Chargebee phrases 404s as '<Resource> not found for id <id>' (v1: '... is not present')."""
    label = resource.replace("_", " ").capitalize()
    msg = f"{label} not found for id {ident}" if ident is not None else f"{label} not found"
    return NotFound(msg, param=param)


@contextlib.contextmanager
def params_renamed(names: dict[str, str]) -> Iterator[None]:
    """Errors raised inside name their parameter as the calling operation spells it: for code shared
    by operations whose parameters differ (``plan_id`` in one is ``subscription[plan_id]`` in another)."""
    try:
        yield
    except BillhiveError as exc:
        new = names.get(exc.param) if exc.param else None
        if new is not None:
            assert exc.param is not None
            if exc.message.startswith(exc.param + " "):
                exc.message = new + exc.message[len(exc.param):]
            exc.param = new
        raise
