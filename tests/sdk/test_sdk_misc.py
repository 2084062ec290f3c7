"""The unmodified chargebee 1.6.6 SDK: comments, portal sessions, csv tax rules."""

from __future__ import annotations

import chargebee
import pytest
from chargebee import request

from tests.support import factories as F
from tests.support import sdk


@pytest.fixture
def cb(server, site):
    sdk.configure(server, site)
    return site


def test_comments(cb):
    cust = F.customer(cb)
    created = chargebee.Comment.create({"entity_type": "customer", "entity_id": cust["id"],
                                        "notes": "Prefers invoices by post"}).comment
    assert created.type == "user" and created.added_by == "full_access_key" and created.entity_id == cust["id"]
    assert chargebee.Comment.retrieve(created.id).comment.notes == "Prefers invoices by post"
    listed = chargebee.Comment.list({"entity_type": "customer", "entity_id": cust["id"], "limit": 5})
    assert [e.comment.id for e in listed] == [created.id] and listed.next_offset is None
    assert chargebee.Comment.delete(created.id).comment.id == created.id
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Comment.retrieve(created.id)
    assert exc.value.http_status_code == 404
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.Comment.create({"entity_type": "subscription", "entity_id": "sub_nope", "notes": "x"})
    assert exc.value.api_error_code == "resource_not_found" and exc.value.param == "entity_id"


def test_portal_sessions(cb):
    cust = F.customer(cb, email="ada@example.com")
    s = chargebee.PortalSession.create({"customer": {"id": cust["id"]},
                                        "redirect_url": "https://example.com/account"}).portal_session
    assert s.status == "created" and s.expires_at == s.created_at + 3600
    assert s.access_url.endswith(f"/portal/{cb.name}/{s.token}")
    (lc,) = s.linked_customers
    assert lc.customer_id == cust["id"] and lc.email == "ada@example.com" and lc.has_payment_method is True
    assert chargebee.PortalSession.retrieve(s.id).portal_session.token == s.token
    assert chargebee.PortalSession.activate(s.id, {"token": s.token}).portal_session.status == "activated"
    out = chargebee.PortalSession.logout(s.id).portal_session
    assert out.status == "logged_out" and out.logout_at is not None
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        chargebee.PortalSession.create({"customer": {"id": "nope"}})
    assert exc.value.http_status_code == 404 and exc.value.param == "customer[id]"


def test_csv_tax_rule(cb):
    # chargebee 1.6.6 has no CsvTaxRule model: the SDK's own request layer posts the form
    result = request.send("post", request.uri_path("csv_tax_rules"),
                          {"country": "US", "state": "NY", "tax1_name": "NY State", "tax1_rate": 4,
                           "tax2_name": "NYC", "tax2_rate": 4.875, "overwrite": True})
    rule = result._response["csv_tax_rule"]
    assert rule["tax1_rate"] == 4.0 and rule["tax2_rate"] == 4.875 and rule["overwrite"] is True
    assert rule["status"] == "active" and rule["rule_weight"] == 2
    with pytest.raises(chargebee.InvalidRequestError) as exc:
        request.send("post", request.uri_path("csv_tax_rules"), {"country": "US", "tax1_name": "T", "tax1_rate": 101})
    assert exc.value.param == "tax1_rate"
