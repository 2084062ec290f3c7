"""The unmodified chargebee 1.6.6 SDK: comments, portal sessions, csv tax rules."""

from __future__ import annotations

import chargebee
import pytest

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
