"""``chargebee-idempotency-key`` on POST requests, as Chargebee documents it.

- Within 30 minutes, the same key with the same parameters replays the stored response
  (header ``chargebee-idempotency-replayed: true``) and does nothing else.
- The same key with other parameters (or another operation) -> 422 unable_to_process_request.
- Keys longer than 100 characters -> 400.
- Two simultaneous requests with one key: the first claims it and runs; the other waits
  for the stored response and replays it.

The claim and the stored response are rows of ``idempotency_keys``. A claim whose request
died with its process (no response after ``STALE`` seconds) is taken over. Server errors
(5xx) are not stored: the key is released so the request can be retried.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Awaitable

import orjson
from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from billhive.errors import BillhiveError, ParamError, UnableToProcess
from billhive.runtime import App
from billhive.store import schema as S
from billhive.store.db import Q, Tx, wall_clock

T = S.idempotency_keys
WINDOW = 30 * 60
STALE = 120
MAX_WAIT = 60.0
_SELECT = Q(select(T.c.request_hash, T.c.state, T.c.status_code, T.c.response, T.c.created_at, T.c.expires_at)
            .where(T.c.site_id == bindparam("site_id"), T.c.key == bindparam("key")))
_REPLAYED = [(b"chargebee-idempotency-replayed", b"true")]


def request_hash(method: str, path: str, pairs: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    h.update(f"{method} {path}\n".encode())
    for k, v in sorted(pairs):
        h.update(orjson.dumps([k, v]))
    return h.hexdigest()


def _claim(site_id: int, key: str, rhash: str):
    def unit(tx: Tx) -> tuple[str, tuple | None]:
        now = wall_clock()
        ins = pg_insert(T) if tx.is_postgres else sqlite_insert(T)
        stmt = ins.values(site_id=site_id, key=key, request_hash=rhash, state="running",
                          created_at=now, expires_at=now + WINDOW).on_conflict_do_nothing()
        if tx.rowcount(stmt) == 1:
            return "run", None
        row = tx.one(_SELECT, {"site_id": site_id, "key": key})
        if row is None:  # pragma: no cover - deleted between the two statements
            return "wait", None
        stored_hash, state, status, response, created_at, expires_at = row
        if expires_at <= now or (state == "running" and created_at < now - STALE):
            # expired, or its request died: start over with this request
            tx.execute(update(T).where(and_(T.c.site_id == site_id, T.c.key == key)).values(
                request_hash=rhash, state="running", status_code=None, response=None,
                created_at=now, expires_at=now + WINDOW))
            return "run", None
        if stored_hash != rhash:
            return "mismatch", None
        if state == "done":
            return "replay", (status, response)
        return "wait", None
    return unit


def _store(site_id: int, key: str, status: int, body: bytes):
    def unit(tx: Tx) -> None:
        tx.execute(update(T).where(and_(T.c.site_id == site_id, T.c.key == key)).values(
            state="done", status_code=status, response=body.decode()))
    return unit


def _release(site_id: int, key: str):
    def unit(tx: Tx) -> None:
        tx.execute(delete(T).where(and_(T.c.site_id == site_id, T.c.key == key, T.c.state == "running")))
    return unit


async def run(app: App, site_id: int, key: str, method: str, path: str, pairs: list[tuple[str, str]],
              call: Awaitable[dict]) -> tuple[int, bytes, list]:
    if not key or len(key) > 100:
        call.close()  # type: ignore[attr-defined]
        raise ParamError("chargebee-idempotency-key : must be 1 to 100 characters",
                         param="chargebee-idempotency-key")
    rhash = request_hash(method, path, pairs)
    waited = 0.0
    while True:
        outcome, stored = await app.db.write(_claim(site_id, key, rhash))
        if outcome == "run":
            break
        if outcome == "mismatch":
            call.close()  # type: ignore[attr-defined]
            raise UnableToProcess("The idempotency key was already used with different request parameters",
                                  param="chargebee-idempotency-key")
        if outcome == "replay":
            call.close()  # type: ignore[attr-defined]
            status, response = stored
            return status, response.encode(), _REPLAYED
        if waited >= MAX_WAIT:
            call.close()  # type: ignore[attr-defined]
            raise UnableToProcess("A request with this idempotency key is still being processed",
                                  param="chargebee-idempotency-key")
        await asyncio.sleep(0.05)
        waited += 0.05
    try:
        result = await call
    except BillhiveError as exc:
        status, body = exc.http_status, orjson.dumps(exc.to_json())
        if status >= 500:
            await app.db.write(_release(site_id, key))
            raise
        await app.db.write(_store(site_id, key, status, body))
        raise
    except BaseException:
        await app.db.write(_release(site_id, key))
        raise
    body = orjson.dumps(result)
    await app.db.write(_store(site_id, key, 200, body))
    return 200, body, []
