"""``chargebee-idempotency-key`` on POST requests, as Chargebee documents it.

- Within 30 minutes, the same key with the same parameters replays the stored response
  (header ``chargebee-idempotency-replayed: true``) and does nothing else.
- The same key with other parameters (or another operation) -> 422 unable_to_process_request.
- Keys longer than 100 characters -> 400.
- Two simultaneous requests with one key: the first claims it and runs; the other waits
  for the stored response and replays it.

Never twice, even across a crash. The claim is a row of ``idempotency_keys`` owned by one
request (``owner``, a random token). The operation's first write - the transaction that
commits its effects (an invoice and its in-progress charge, a customer...) - also records,
in that same transaction, what it returned (``committed``, see ``Claim.journal``). So
however the request ends, the row says whether the operation happened:

- it answered: the response is stored (``done``) and replayed to every retry;
- it died (SIGKILL, power loss) or failed with a 5xx: a retry with the same key takes the
  claim over - at once after a 5xx, after ``Config.idempotency_stale`` seconds (default 120)
  without a heartbeat after a crash - and runs the operation again *from what it
  committed*: its first write is not run again but answers with the journaled result, and
  only the rest of the operation runs. That rest must be safe to repeat, and in billhive it
  is: calling the gateway with the transaction's own key (the gateway answers a repeated key
  with its original result, never a second charge) and settling the transaction
  (conditional on it still being unsettled). So a retry of ``POST /invoices/charge`` whose
  first attempt died after its commit answers with the same invoice, settled, and exactly
  one charge exists - whether payment recovery settled it before the retry came, or the
  retry settled it itself;
- the claim is fenced: the first write commits only while its request still owns the
  claim, so a request that was taken over (presumed dead, but only slow) cannot commit the
  operation a second time - it answers 422 and its retry's answer wins.

A request that failed before committing anything (a 4xx, or a 5xx) behaves as before: a 4xx
is stored and replayed; after a 5xx the key is released. Past the 30 minutes the key is new.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import pickle
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from billhive.errors import BillhiveError, ParamError, UnableToProcess
from billhive.runtime import App
from billhive.store import schema as S
from billhive.store.db import Q, Tx, wall_clock
from billhive.util import failpoints

log = logging.getLogger("billhive.idempotency")
T = S.idempotency_keys
WINDOW = 30 * 60
MAX_WAIT = 60.0
_WHERE = and_(T.c.site_id == bindparam("site_id"), T.c.key == bindparam("key"))
_SELECT = Q(select(T.c.request_hash, T.c.state, T.c.status_code, T.c.response, T.c.expires_at, T.c.owner,
                   T.c.heartbeat_at, T.c.committed).where(_WHERE).with_for_update())
_OWNED = and_(_WHERE, T.c.owner == bindparam("claim_owner"))
_JOURNAL = Q(update(T).where(_OWNED, T.c.committed.is_(None)).values(committed=bindparam("committed")))
_EXISTS = Q(select(T.c.pk).where(_WHERE))
_HEARTBEAT = Q(update(T).where(_OWNED).values(heartbeat_at=bindparam("now")))
_REPLAYED = [(b"chargebee-idempotency-replayed", b"true")]
_UNREPLAYABLE = b"unreplayable"


class Claim:
    """One request's hold on its idempotency key; the service sees it as ``ctx.claim``
    (services/context.py) and its first write calls ``journal`` inside its transaction."""

    __slots__ = ("committed", "key", "owner", "request_hash", "resumed", "site_id")

    def __init__(self, site_id: int, key: str):
        self.site_id = site_id
        self.key = key
        self.owner = secrets.token_hex(16)
        self.request_hash = ""
        self.resumed: bytes | None = None  # an earlier attempt's journaled first write
        self.committed = False  # the operation's first write is durable (this attempt's or an earlier one's)

    @property
    def _params(self) -> dict:
        return {"site_id": self.site_id, "key": self.key, "claim_owner": self.owner}

    def journal(self, tx: Tx, fn: Callable, result: Any) -> None:
        """In the first write's own transaction: record that the operation committed, and
        what the write returned. Raises (rolling the write back) if the claim was taken over."""
        failpoints.hit("idempotency.before_commit")
        try:
            blob = pickle.dumps((_step(fn), result), protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # still recorded as committed (never run twice); a retry cannot rebuild the answer
            log.warning("idempotency key %r: the result of %s cannot be journaled: %s", self.key, _step(fn), exc)
            blob = _UNREPLAYABLE
        if tx.rowcount(_JOURNAL, {**self._params, "committed": blob}) == 1:
            return
        if tx.one(_EXISTS, {"site_id": self.site_id, "key": self.key}) is not None:
            raise UnableToProcess("This request was taken over by a retry with the same idempotency key",
                                  param="chargebee-idempotency-key")
        # the operation deleted its own claim (start_afresh wipes the site's keys): claim it again
        now = wall_clock()
        tx.execute(insert(T).values(site_id=self.site_id, key=self.key, request_hash=self.request_hash,
                                    state="running", owner=self.owner, heartbeat_at=now, created_at=now,
                                    expires_at=now + WINDOW, committed=blob))

    def replay(self, fn: Callable) -> Any:
        """The first write's result as the interrupted attempt committed it."""
        assert self.resumed is not None
        self.committed = True
        try:
            step, result = _loads(self.resumed) if self.resumed != _UNREPLAYABLE else (None, None)
        except Exception:  # written by another version of billhive
            step = None
        if step != _step(fn):
            raise UnableToProcess("A request with this idempotency key was interrupted after its changes were "
                                  "committed, and its answer cannot be rebuilt; the changes are kept",
                                  param="chargebee-idempotency-key")
        return result


class _Unpickler(pickle.Unpickler):
    """Journals hold plain data and billhive's own result classes (dataclasses of services):
    nothing else is rebuilt from a row, whoever wrote it."""

    SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool",
                               "NoneType", "complex"})

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in self.SAFE_BUILTINS:
            return super().find_class(module, name)
        if module.split(".")[0] == "billhive":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"journal may not hold {module}.{name}")


def _loads(blob: bytes) -> Any:
    return _Unpickler(io.BytesIO(blob)).load()


def _step(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def request_hash(method: str, path: str, pairs: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    h.update(f"{method} {path}\n".encode())
    for k, v in sorted(pairs):
        h.update(orjson.dumps([k, v]))
    return h.hexdigest()


def _claim(claim: Claim, rhash: str, stale: float):
    def unit(tx: Tx) -> tuple[str, Any]:
        now = wall_clock()
        fresh = {"request_hash": rhash, "state": "running", "status_code": None, "response": None,
                 "committed": None, "owner": claim.owner, "heartbeat_at": now, "created_at": now,
                 "expires_at": now + WINDOW}
        ins = pg_insert(T) if tx.is_postgres else sqlite_insert(T)
        if tx.rowcount(ins.values(site_id=claim.site_id, key=claim.key, **fresh).on_conflict_do_nothing()) == 1:
            return "run", None
        row = tx.one(_SELECT, {"site_id": claim.site_id, "key": claim.key})  # locked until this unit commits
        if row is None:  # pragma: no cover - deleted between the two statements
            return "wait", None
        stored_hash, state, status, response, expires_at, owner, heartbeat_at, committed = row
        dead = owner is None or (heartbeat_at or 0) < now - stale
        if expires_at <= now and (state == "done" or dead):  # the key's 30 minutes are over: a new request
            tx.execute(update(T).where(_WHERE).values(**fresh), {"site_id": claim.site_id, "key": claim.key})
            return "run", None
        if stored_hash != rhash:
            return "mismatch", None
        if state == "done":
            return "replay", (status, response)
        if dead:  # its request died (or failed after committing): take over, resuming from what it committed
            tx.execute(update(T).where(_WHERE).values(owner=claim.owner, heartbeat_at=now),
                       {"site_id": claim.site_id, "key": claim.key})
            return "run", committed
        return "wait", None
    return unit


def _store(claim: Claim, status: int, body: bytes):
    def unit(tx: Tx) -> None:
        tx.execute(update(T).where(_OWNED).values(state="done", status_code=status, response=body.decode(),
                                                  owner=None), claim._params)
    return unit


def _release(claim: Claim):
    """The request failed without an answer to keep: forget the key if nothing committed,
    else leave the claim ownerless so that a retry resumes it at once."""
    def unit(tx: Tx) -> None:
        tx.execute(delete(T).where(_OWNED, T.c.committed.is_(None)), claim._params)
        tx.execute(update(T).where(_OWNED).values(owner=None), claim._params)
    return unit


def _beat(claim: Claim):
    def unit(tx: Tx) -> None:
        tx.execute(_HEARTBEAT, {**claim._params, "now": wall_clock()})
    return unit


async def _heartbeat(app: App, claim: Claim, every: float) -> None:
    """Keep a long-running request's claim from looking dead."""
    while True:
        await asyncio.sleep(every)
        try:
            await app.db.write(_beat(claim))
        except Exception as exc:  # the next beat tries again
            log.warning("idempotency heartbeat failed: %s", exc)


async def run(app: App, claim: Claim, method: str, path: str, pairs: list[tuple[str, str]],
              call: Awaitable[dict]) -> tuple[int, bytes, list]:
    """Run ``call`` (the service coroutine, whose Ctx carries ``claim``) under the key."""
    if not claim.key or len(claim.key) > 100:
        call.close()  # type: ignore[attr-defined]
        raise ParamError("chargebee-idempotency-key : must be 1 to 100 characters",
                         param="chargebee-idempotency-key")
    rhash = claim.request_hash = request_hash(method, path, pairs)
    stale = app.config.idempotency_stale
    waited = 0.0
    while True:
        outcome, stored = await app.db.write(_claim(claim, rhash, stale))
        if outcome == "run":
            claim.resumed = stored
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
    if claim.resumed is not None:
        log.info("idempotency key %r: resuming a request interrupted after its commit", claim.key)
    beat = asyncio.create_task(_heartbeat(app, claim, max(stale / 3, 0.1)))
    try:
        result = await call
    except BillhiveError as exc:
        status, body = exc.http_status, orjson.dumps(exc.to_json())
        await app.db.write(_release(claim) if status >= 500 else _store(claim, status, body))
        raise
    except BaseException:
        await app.db.write(_release(claim))
        raise
    finally:
        beat.cancel()
    body = orjson.dumps(result)
    failpoints.hit("idempotency.before_store")
    await app.db.write(_store(claim, 200, body))
    return 200, body, []
