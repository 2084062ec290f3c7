"""``GET /metrics`` in Prometheus' text format (prometheus-client): API requests by operation
and status with their total time, and the SQLite writer's group-commit counters."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily


class _Collector:
    def __init__(self, app: Any, api: Any):
        self.app = app
        self.api = api

    def collect(self):  # type: ignore[no-untyped-def]
        requests = CounterMetricFamily("billhive_api_requests", "API requests answered",
                                       labels=["operation", "status"])
        seconds = CounterMetricFamily("billhive_api_request_seconds", "Time spent answering API requests",
                                      labels=["operation", "status"])
        for (op, status), (count, total) in list(self.api.request_stats.items()):
            requests.add_metric([op, str(status)], count)
            seconds.add_metric([op, str(status)], total)
        yield requests
        yield seconds
        if self.app.db.dialect == "sqlite":
            stats = self.app.db.stats
            yield CounterMetricFamily("billhive_db_commits", "SQLite write batches committed (group commit)",
                                      value=stats["batches"])
            yield CounterMetricFamily("billhive_db_units", "Units of work written (one transaction each)",
                                      value=stats["units"])


def render(app: Any, api: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Collector(app, api))
    return generate_latest(registry)
