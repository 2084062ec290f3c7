"""Observability: request ids and one log line per request, JSON and text log formats, the
library noise gone, and the metrics of /metrics (README, "Operating billhive")."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from billhive.util import logs
from tests.support.delivery import wait_until


@pytest.fixture
def captured(monkeypatch):
    """billhive.request's lines in JSON for this test (its own handler; restored after it)."""
    logger = logging.getLogger("billhive.request")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.with_request_id)  # the filter configure() installs
    monkeypatch.setattr(logger, "handlers", [handler])
    old_level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not the attribute: it clears logging's isEnabledFor cache
    # a uvicorn.Config built with its default log_config (dictConfig) disables loggers that existed
    monkeypatch.setattr(logger, "disabled", False)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    logger.setLevel(old_level)


def test_request_id_is_returned_and_logged(api, site, server, captured):
    r = httpx.get(server.base_url + "/api/v1/customers", auth=(site.key, ""),
                  headers={"Host": f"{site.name}.localhost", "X-Request-Id": "req-42.a"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42.a"
    # the line is written once the response is sent: the client may have it first
    line = wait_until(lambda: next((x for x in captured() if x["logger"] == "billhive.request"
                                    and x.get("request_id") == "req-42.a"), None), what="the request's log line")
    assert line["operation"] == "list_customers" and line["status"] == 200 and line["site"] == site.name
    assert line["method"] == "GET" and line["path"] == "/api/v1/customers" and line["duration_ms"] >= 0


def test_a_request_id_is_made_when_none_or_a_bad_one_is_sent(server):
    one = httpx.get(server.base_url + "/health").headers["x-request-id"]
    bad = {"X-Request-Id": "no spaces <allowed>"}
    two = httpx.get(server.base_url + "/health", headers=bad).headers["x-request-id"]
    assert len(one) == 32 and len(two) == 32 and one != two


def test_text_format_keeps_extra_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    log = logging.getLogger("billhive.test_text")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("job failed", extra={"site": "a-test", "job_id": "renewal:sub_1", "error": "two words"})
    finally:
        log.removeHandler(handler)
        log.propagate = True
    line = stream.getvalue().strip()
    assert line.endswith('WARNING billhive.test_text: job failed site=a-test job_id=renewal:sub_1 error="two words"')


def test_configure_quiets_alembic_and_fonttools():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in logs.QUIET})
    try:
        for name in logs.QUIET:
            logging.getLogger(name).setLevel(logging.NOTSET)
        stream = io.StringIO()
        logs.configure("json", stream=stream)
        logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.schemas")
        logging.getLogger("fontTools.subset").info("Glyph names: ...")
        logging.getLogger("billhive.x").info("kept", extra={"site": "s"})
        # only this test's loggers: the session server's threads may log a request of an earlier test
        # (its access line) while the root logger writes to this stream
        ours = ("alembic.runtime.plugins", "fontTools.subset", "billhive.x")
        lines = [x for x in map(json.loads, stream.getvalue().splitlines()) if x["logger"] in ours]
        assert [x["message"] for x in lines] == ["kept"] and lines[0]["site"] == "s" and lines[0]["level"] == "info"
        with pytest.raises(ValueError):
            logs.configure("xml")
    finally:  # setLevel (not the attributes): it also clears logging's isEnabledFor caches
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def test_metrics_histograms_and_store_gauges(api, site, server):
    api.get("/customers")
    api.post("/customers", {"id": "cus_m1"})
    text = httpx.get(server.base_url + "/metrics", timeout=60).text  # per-site figures over every site of the session
    assert 'billhive_http_request_duration_seconds_bucket{le="+Inf",operation="list_customers",status="200"}' in text
    assert 'billhive_http_request_duration_seconds_count{operation="create_a_customer",status="200"}' in text
    assert "billhive_db_write_queue_depth " in text
    assert 'billhive_db_batch_units_bucket{le="+Inf"}' in text
    assert f'billhive_webhook_deliveries{{site="{site.name}",state="pending"}}' in text
    assert f'billhive_email_deliveries{{site="{site.name}",state="failed"}} 0.0' in text
    assert f'billhive_job_lag_seconds{{site="{site.name}"}}' in text
    assert f'billhive_time_travel{{site="{site.name}",status="not_enabled"}} 1.0' in text


def test_gateway_calls_are_timed_by_outcome(api, server):
    api.post("/customers", {"id": "cus_gw", "card[number]": "4111111111111111", "card[expiry_month]": "12",
                            "card[expiry_year]": "2035", "card[cvv]": "123"})
    text = httpx.get(server.base_url + "/metrics", timeout=60).text  # per-site figures over every site of the session
    assert 'billhive_gateway_call_seconds_count{call="store_card",gateway="chargebee",outcome="success"}' in text
