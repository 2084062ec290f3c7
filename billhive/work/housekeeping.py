"""Housekeeping: rows that have served their purpose are deleted, so that nothing grows without
bound. Today: ``chargebee-idempotency-key`` claims past their 30-minute window (a key is new
again after it, so its row is dead weight), in batches."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, select

from billhive.runtime import App
from billhive.store import schema as S
from billhive.store.db import Q, Tx

BATCH = 1000
T = S.idempotency_keys
# a claim is kept a minute past its window: a request still running at the edge keeps its row
_GRACE = 60
_EXPIRED = Q(delete(T).where(T.c.pk.in_(
    select(T.c.pk).where(T.c.expires_at < bindparam("before")).order_by(T.c.expires_at).limit(BATCH)
    .scalar_subquery())))


async def purge_idempotency_keys(app: App) -> int:
    """Delete up to BATCH expired idempotency claims (of every site); how many went."""
    before = int(app.wall()) - _GRACE

    def unit(tx: Tx) -> int:
        return int(tx.rowcount(_EXPIRED, {"before": before}))
    return await app.db.write(unit)
