"""Every operation of the v1 spec compiles into a parameter decoder, whether or not it is
implemented yet: adding it to ROUTES must never stop the server from starting."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from billhive import spec
from billhive.errors import ParamRequired
from billhive.http.app import Compiled
from billhive.http.params import parse_pairs
from billhive.http.routes import Route
from tests.support.spec_params import form, minimal_params


async def _unused(*args):  # pragma: no cover - never called
    raise AssertionError


def _compiled(op_id: str) -> Compiled:
    return Compiled(Route(spec.operations()[op_id], _unused))


@pytest.mark.parametrize("op_id", sorted(spec.operations()))
def test_operation_compiles_and_accepts_its_minimal_params(op_id):
    compiled = _compiled(op_id)
    op = spec.operations()[op_id]
    params = compiled.decoder.decode(parse_pairs(urlencode(form(minimal_params(op)))))
    assert set(params) >= set(op.required_query) | set((op.body_schema or {}).get("required") or ())


def test_deep_object_query_parameter_keeps_its_own_required_fields():
    # GET /customers/{id}/create_subscription_estimate: the query parameter `subscription` is optional,
    # but once given it needs subscription[plan_id]. The parameter's own required flag (false) used to
    # overwrite the schema's required list, and compiling the operation raised TypeError.
    decoder = _compiled("create_subscription_for_a_customer_estimate").decoder
    assert decoder.decode([]) == {}
    assert decoder.decode([("subscription[plan_id]", "basic")]) == {"subscription": {"plan_id": "basic"}}
    with pytest.raises(ParamRequired) as e:
        decoder.decode([("subscription[id]", "sub_1")])
    assert e.value.param == "subscription[plan_id]"


def test_required_query_parameters_are_required():
    decoder = _compiled("retrieve_an_address").decoder
    with pytest.raises(ParamRequired) as e:
        decoder.decode([("label", "home")])
    assert e.value.param == "subscription_id"
