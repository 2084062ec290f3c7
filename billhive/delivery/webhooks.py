"""Webhook delivery: POST every scheduled event to its endpoints, at least once.

The body is the stored event document, exactly what ``GET /api/v1/events/{id}`` returns
under ``event``, sent as ``application/json``; HTTP basic auth when the endpoint has a user
name; and (beyond Chargebee) a signature over the raw body:

    X-Billhive-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

Any 2xx within the site's ``webhook_timeout`` (default 10 s) is a success. Anything else is
retried on Chargebee's schedule - 7 retries, +2 min, +6 min, +30 min, +1 h, +5 h, +1 day,
+2 days after the previous attempt, on the site clock (the time machine moves it) - and
then the delivery has ``failed``. Every attempt is a ``webhook_attempts`` row.

The event's ``webhooks[]`` lists one entry per endpoint delivery with that delivery's
status; ``webhook_status`` aggregates them (see ``aggregate``). The claim/lease/fence
mechanics are in ``billhive.work.outbox``.

Endpoints are served side by side, one lane each (``billhive.delivery.lanes``): at most
``webhook_concurrency_per_endpoint`` deliveries in flight to one endpoint and
``webhook_concurrency`` in all (per process), so an endpoint that hangs delays only itself.

Faults on purpose (an endpoint's delivery modes, set through the admin API; see
billhive/domain/faults.py): ``delay_seconds`` holds each claimed delivery that long before it is
sent; ``out_of_order`` gathers the lane's deliveries for ``window_seconds`` after a claim (a second
claim takes what became due meanwhile) and sends them one at a time, newest first;
``fail_first_n`` sends the first N attempts of each delivery's round but records them as failed,
so the retry schedule runs; ``duplicate`` sends every delivery a second time right after the
first. Leases cover the holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

import httpx

from billhive import webhook_endpoints
from billhive.delivery import lanes
from billhive.domain.faults import WebhookFault, webhook_fault_from_stored
from billhive.runtime import App
from billhive.store.db import Tx
from billhive.work import loops, outbox
from billhive.work.outbox import Batch, Claim, Outcome

log = logging.getLogger("billhive.webhooks")

RETRY_DELAYS = outbox.WEBHOOK_RETRY_DELAYS
SIGNATURE_HEADER = "X-Billhive-Signature"
USER_AGENT = "billhive-webhooks/1"
ERROR_EXCERPT = 300
OUTBOX = outbox.WEBHOOKS
aggregate = outbox.webhook_status  # the event's webhook_status from its deliveries' statuses
sync_event = outbox.sync_event


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Billhive-Signature value for body, signed at timestamp (Unix seconds)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# ---- the worker ----------------------------------------------------------------------------

def _endpoints(tx: Tx, site) -> dict[str, webhook_endpoints.Endpoint]:
    return {e.id: e for e in webhook_endpoints.list_all(tx, site.pk)}


def _skip(endpoints: dict[str, webhook_endpoints.Endpoint], row: dict) -> str | None:
    e = endpoints.get(row["endpoint_id"])
    if e is None:
        return "endpoint removed"
    if not e.enabled:
        return "endpoint disabled"
    return None


async def post(client: httpx.AsyncClient, endpoint: webhook_endpoints.Endpoint, body: bytes, timeout: float,
               wall: float) -> Outcome:
    """One delivery attempt. Never raises (except cancellation)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if endpoint.secret:
        headers[SIGNATURE_HEADER] = sign(endpoint.secret, body, int(wall))
    auth = (endpoint.username, endpoint.password or "") if endpoint.username else None
    started = time.monotonic()

    async def call() -> tuple[int, bytes]:
        async with client.stream("POST", endpoint.url, content=body, headers=headers, auth=auth,
                                 timeout=timeout) as r:
            excerpt = b""
            if not 200 <= r.status_code < 300:
                async for chunk in r.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= ERROR_EXCERPT:
                        break
            return r.status_code, excerpt

    try:
        status, excerpt = await asyncio.wait_for(call(), timeout)
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(False, None, f"timed out after {timeout:g}s", _ms(started))
    except Exception as exc:  # connection refused, DNS, TLS, protocol errors...
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:1000], _ms(started))
    if 200 <= status < 300:
        return Outcome(True, status, None, _ms(started))
    text = excerpt[:ERROR_EXCERPT].decode("utf-8", "replace").strip()
    return Outcome(False, status, f"HTTP {status}" + (f": {text}" if text else ""), _ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _record(batch: Batch, results: dict[int, Outcome]):
    """Record a batch's answers in one transaction: its events locked together (in id order, the
    order every worker takes them), each delivery finished behind its fence, then the events whose
    deliveries changed rewritten from their delivery rows (read together)."""
    def unit(tx: Tx) -> None:
        if not batch.claims:
            return
        events = outbox.lock_events(tx, batch.site.pk, [c.event_id for c in batch.claims])
        changed = {c.event_id for c in batch.claims if OUTBOX.finish(tx, c, results.get(c.pk)) is not None}
        outbox.sync_events(tx, batch.site.pk, [events[i] for i in sorted(changed) if i in events],
                           batch.claims[0].attempted_at)
    return unit


def _claim(app: App, lane: tuple[int, str], limit: int):
    site_id, endpoint_id = lane

    def lease(tx: Tx, site) -> float:
        timeout = site.setting("webhook_timeout")
        endpoint = next((e for e in webhook_endpoints.cached(tx, site.pk, site.config_version)
                         if e.id == endpoint_id), None)
        fault = webhook_fault_from_stored(endpoint.fault) if endpoint else None
        if fault is None:
            return timeout + app.config.delivery_lease_grace
        # held, then (out of order: one at a time, this claim's and the window's second claim's)
        sends = 2 * limit if fault.out_of_order else 1
        return fault.hold_seconds() + sends * timeout * (2 if fault.duplicate else 1) + app.config.delivery_lease_grace

    def unit(tx: Tx) -> Batch:
        return OUTBOX.claim(tx, site_id, wall=app.wall(), limit=limit, lane=endpoint_id,
                            lease=lambda site: lease(tx, site), load=_endpoints, skip=_skip)
    return unit


def _fault(batch: Batch) -> WebhookFault | None:
    """The delivery modes of the batch's endpoint (a lane is one endpoint), if any."""
    for c in batch.claims:
        endpoint = (batch.context or {}).get(c.row["endpoint_id"])
        if endpoint is not None:
            return webhook_fault_from_stored(endpoint.fault)
    return None


async def _deliver(app: App, client: httpx.AsyncClient, batch: Batch) -> None:
    """POST a claimed batch (one endpoint's deliveries) concurrently and record the answers."""
    fault = _fault(batch)
    if fault is not None and any(c.skip is None for c in batch.claims):
        await _deliver_faulty(app, client, batch, fault)
        return
    timeout = float(batch.site.setting("webhook_timeout"))
    live = [c for c in batch.claims if c.skip is None]
    outcomes = await asyncio.gather(*(
        post(client, batch.context[c.row["endpoint_id"]], batch.events[c.event_id].encode(), timeout, app.wall())
        if c.event_id in batch.events else _missing()
        for c in live))
    await app.db.write(_record(batch, {c.pk: o for c, o in zip(live, outcomes)}))
    _log(batch, live, outcomes)


async def _deliver_faulty(app: App, client: httpx.AsyncClient, first: Batch, fault: WebhookFault) -> None:
    """A batch of an endpoint with delivery modes (see the module's docstring)."""
    batches = [first]
    if fault.delay_seconds:
        await asyncio.sleep(fault.delay_seconds)
    if fault.out_of_order:
        await asyncio.sleep(fault.window_seconds)
        lane = (first.site.pk, first.claims[0].row["endpoint_id"])
        more = await app.db.write(_claim(app, lane, app.config.webhook_concurrency_per_endpoint))
        if more.claims:
            batches.append(more)
    timeout = float(first.site.setting("webhook_timeout"))

    async def one(batch: Batch, c: Claim) -> Outcome:
        if c.event_id not in batch.events:
            return await _missing()
        endpoint = batch.context[c.row["endpoint_id"]]
        body = batch.events[c.event_id].encode()
        outcome = await post(client, endpoint, body, timeout, app.wall())
        if fault.duplicate:
            again = await post(client, endpoint, body, timeout, app.wall())
            log.info("webhook %s sent again to %s (fault: duplicate): %s", c.event_id, endpoint.id,
                     again.error or again.status_code)
        in_round = c.attempt - c.round_start
        if outcome.ok and fault.treated_as_failed(in_round):
            outcome = Outcome(False, outcome.status_code, f"fault fail_first_n: attempt {in_round} of the first "
                              f"{fault.fail_first_n} recorded as failed (the endpoint answered "
                              f"{outcome.status_code})", outcome.duration_ms)
        return outcome

    pairs = [(b, c) for b in batches for c in b.claims if c.skip is None]
    if fault.out_of_order:  # one at a time, newest delivery first (claims come oldest first)
        pairs.sort(key=lambda bc: bc[1].pk, reverse=True)
        outcomes = [await one(b, c) for b, c in pairs]
    else:
        outcomes = list(await asyncio.gather(*(one(b, c) for b, c in pairs)))
    results = {c.pk: o for (_, c), o in zip(pairs, outcomes)}
    for batch in batches:
        await app.db.write(_record(batch, results))
        live = [c for c in batch.claims if c.skip is None]
        _log(batch, live, [results[c.pk] for c in live])


def _log(batch: Batch, live: list[Claim], outcomes: list[Outcome]) -> None:
    for c, o in zip(live, outcomes):
        log.log(logging.INFO if o.ok else logging.WARNING, "webhook %s %s to %s: %s", c.event_id,
                "delivered" if o.ok else "failed", c.row["endpoint_id"], o.error or o.status_code,
                extra={"site": batch.site.name, "event_id": c.event_id, "endpoint_id": c.row["endpoint_id"],
                       "attempt": c.attempt, "status_code": o.status_code, "duration_ms": o.duration_ms})


async def _missing() -> Outcome:
    return Outcome(False, None, "event not found", 0, permanent=True)


def dispatcher(app: App, client: httpx.AsyncClient) -> lanes.Dispatcher:
    """Webhook lanes: one per endpoint (see billhive.delivery.lanes)."""
    async def due(a: App) -> list:
        return await a.db.read(lambda tx: OUTBOX.due_lanes(tx, int(a.wall())))

    async def claim(a: App, lane: tuple[int, str], limit: int) -> Batch:
        return await a.db.write(_claim(a, lane, limit))

    async def deliver(a: App, batch: Batch) -> None:
        await _deliver(a, client, batch)

    return lanes.Dispatcher(lanes.Channel("webhook delivery", due, claim, deliver,
                                          per_lane=app.config.webhook_concurrency_per_endpoint,
                                          total=app.config.webhook_concurrency))


async def run_once(app: App, client: httpx.AsyncClient | None = None) -> int:
    """Deliver what is due now, every endpoint side by side, and wait for it; returns how many
    deliveries were handled."""
    if client is None:
        async with _client(app) as c:
            return await run_once(app, c)
    return await dispatcher(app, client).run_once(app)


def _client(app: App) -> httpx.AsyncClient:
    # a connection per delivery in flight: the pool never makes one endpoint wait for another's
    limits = httpx.Limits(max_connections=app.config.webhook_concurrency)
    return httpx.AsyncClient(follow_redirects=False, limits=limits)


async def webhook_loop(app: App) -> None:
    async with _client(app) as client:
        d = dispatcher(app, client)
        interval = app.config.delivery_interval
        try:
            # claims of a failed pass expire and are retried
            await loops.drain(app, interval, lambda a: d.step(a, interval), "webhook delivery",
                              bell=app.deliveries)
        finally:
            await d.close()
