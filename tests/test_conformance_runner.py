"""The pieces of ``python -m tests.conformance`` that can be checked without running Schemathesis
(.ci/run runs the whole thing)."""

from __future__ import annotations

import tomllib

from tests.conformance import runner


def test_seeded_ids_become_dictionaries_bound_to_path_parameters():
    text = runner.schemathesis_config({"path.event-id": ["ev_1", "ev_2"], "path.coupon-code-code": ['a"b'],
                                       "query.offset": ["WyIxIl0="]})
    config = tomllib.loads(text)
    assert config["dictionaries"]["path.event-id"]["values"] == ["ev_1", "ev_2"]
    assert config["dictionaries"]["path.coupon-code-code"]["values"] == ['a"b']
    assert config["parameters"]["path.event-id"] == {"dictionary": "path.event-id", "probability": 0.5}
    assert config["parameters"]["query.offset"] == {"dictionary": "query.offset", "probability": 0.5}
    assert tomllib.loads(runner.schemathesis_config({})) == {"parameters": {}}


def test_examples_per_operation_shrink_as_operations_land():
    lo, hi = runner.EXAMPLES_RANGE
    assert runner.max_examples(2) == hi
    assert runner.max_examples(104) == runner.CASE_BUDGET // 104
    assert runner.max_examples(10_000) == lo
    assert lo <= runner.max_examples(104) <= hi


def test_server_errors_are_found_in_the_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("2026-01-01 INFO billhive: listening\n"
                   "2026-01-01 12:00:00,000 ERROR billhive.http: unexpected error on GET /api/v1/events\n"
                   "Traceback (most recent call last):\n")
    assert len(runner.server_errors(log)) == 2
    log.write_text("ERROR:    Exception in ASGI application\n")
    assert len(runner.server_errors(log)) == 1
    log.write_text("INFO:     127.0.0.1 - GET /api/v1/events 400\n")
    assert runner.server_errors(log) == []
