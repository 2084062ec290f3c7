"""``GET /metrics`` in Prometheus' text format (prometheus-client). Every name is listed, with
what to alert on, in the README's "Operating billhive" section.

- ``billhive_http_request_duration_seconds{operation, status}``: histogram of every HTTP
  request (``operation``: the API's operationId, or ``admin``, ``health``, ``portal``, ...);
  ``billhive_api_requests`` / ``billhive_api_request_seconds``: the API's counters (as before);
- ``billhive_db_write_queue_depth``; ``billhive_db_batch_units``: histogram of group-commit
  batch sizes (SQLite writer; PostgreSQL lane); ``billhive_db_commits`` / ``billhive_db_units``;
- ``billhive_webhook_deliveries{site, state}`` and ``billhive_email_deliveries{site, state}``:
  ``pending`` and ``failed``; ``billhive_job_lag_seconds{site}``: site time since the oldest due
  job fell due; ``billhive_time_travel{site, status}``: 1 for the site's time machine status;
- ``billhive_gateway_call_seconds{gateway, call, outcome}``: histogram of payment gateway calls;
- ``billhive_background_loop_up{loop}`` / ``billhive_background_loop_failures{loop}``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from billhive.gateway import measured
from billhive.http import requests
from billhive.services.observe import SiteHealth
from billhive.store.units import BATCH_SIZE_BUCKETS


def render(app: Any, api: Any, latency: requests.Latency, site_health: Iterable[SiteHealth] = ()) -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Collector(app, api, latency, list(site_health)))
    return generate_latest(registry)


class _Collector:
    def __init__(self, app: Any, api: Any, latency: requests.Latency, site_health: list[SiteHealth]):
        self.app = app
        self.api = api
        self.latency = latency
        self.site_health = site_health

    def collect(self):
        yield from self._api()
        yield _histogram("billhive_http_request_duration_seconds", "HTTP requests by operation and status",
                         ["operation", "status"], requests.BUCKETS,
                         {(op, str(status)): s for (op, status), s in list(self.latency.series.items())})
        yield from self._store()
        yield from self._sites()
        yield _histogram("billhive_gateway_call_seconds", "Payment gateway calls by call and outcome",
                         ["gateway", "call", "outcome"], measured.BUCKETS, self._gateway_calls())
        up = GaugeMetricFamily("billhive_background_loop_up", "1 while the background loop runs in this process",
                               labels=["loop"])
        failures = GaugeMetricFamily("billhive_background_loop_failures", "The loop's failed passes in a row",
                                     labels=["loop"])
        for name, state in list(self.app.loops.items()):
            up.add_metric([name], 1 if state.running else 0)
            failures.add_metric([name], state.failures)
        yield up
        yield failures

    def _gateway_calls(self) -> dict:
        out: dict = {}
        for gateway in list(self.app.gateways.values()):
            stats = gateway.stats if isinstance(gateway, measured.Measured) else None
            if stats is not None:
                out.update(stats.series)
        return out

    def _api(self):
        reqs = CounterMetricFamily("billhive_api_requests", "API requests answered", labels=["operation", "status"])
        seconds = CounterMetricFamily("billhive_api_request_seconds", "Time spent answering API requests",
                                      labels=["operation", "status"])
        for (op, status), (count, total) in list(self.api.request_stats.items()):
            reqs.add_metric([op, str(status)], count)
            seconds.add_metric([op, str(status)], total)
        yield reqs
        yield seconds

    def _store(self):
        db = self.app.db
        yield GaugeMetricFamily("billhive_db_write_queue_depth",
                                "Units of work waiting for the writer (SQLite) or the group-commit lane (PostgreSQL)",
                                value=db.queue_depth())
        counts = list(db.batch_sizes)
        buckets, running = [], 0
        for bound, n in zip(BATCH_SIZE_BUCKETS, counts):
            running += n
            buckets.append((str(bound), running))
        buckets.append(("+Inf", running))
        yield HistogramMetricFamily("billhive_db_batch_units", "Units of work per group-commit batch",
                                    buckets=buckets, sum_value=db.stats["units"])
        yield CounterMetricFamily("billhive_db_commits", "Write batches committed (group commit)",
                                  value=db.stats["batches"])
        yield CounterMetricFamily("billhive_db_units", "Units of work written (one transaction each)",
                                  value=db.stats["units"])

    def _sites(self):
        webhooks = GaugeMetricFamily("billhive_webhook_deliveries", "Webhook deliveries pending or failed",
                                     labels=["site", "state"])
        emails = GaugeMetricFamily("billhive_email_deliveries", "Email deliveries pending or failed",
                                   labels=["site", "state"])
        lag = GaugeMetricFamily("billhive_job_lag_seconds", "Site time since the oldest due job fell due",
                                labels=["site"])
        travel = GaugeMetricFamily("billhive_time_travel", "The time machine's status (1 for the current one)",
                                   labels=["site", "status"])
        for h in self.site_health:
            webhooks.add_metric([h.site, "pending"], h.webhooks_pending)
            webhooks.add_metric([h.site, "failed"], h.webhooks_failed)
            emails.add_metric([h.site, "pending"], h.emails_pending)
            emails.add_metric([h.site, "failed"], h.emails_failed)
            lag.add_metric([h.site], h.job_lag_seconds)
            travel.add_metric([h.site, h.time_travel_status], 1)
        yield webhooks
        yield emails
        yield lag
        yield travel


def _histogram(name: str, doc: str, labels: list[str], bounds: tuple, series: dict) -> HistogramMetricFamily:
    """A histogram family from ``{label values: [per-bucket counts, sum, count]}``."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, (counts, total, count) in series.items():
        buckets, running = [], 0
        for bound, n in zip(bounds, list(counts)):
            running += n
            buckets.append((repr(float(bound)), running))
        buckets.append(("+Inf", count))
        family.add_metric(list(values), buckets, total)
    return family
