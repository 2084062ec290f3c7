"""Housekeeping deletes idempotency claims past their window (nothing grows without bound), and
only those."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import insert, select

from billhive.store import schema as S
from billhive.work import housekeeping

T = S.idempotency_keys


def _keys(app, site_pk):  # type: ignore[no-untyped-def]
    return set(app.db.read_sync(lambda tx: [r[0] for r in tx.all(select(T.c.key).where(T.c.site_id == site_pk))]))


def test_expired_idempotency_claims_are_deleted_and_live_ones_kept(app, site):
    now = int(app.wall())
    rows = {f"old-{uuid.uuid4().hex[:6]}": now - 3600, f"edge-{uuid.uuid4().hex[:6]}": now - 30,
            f"live-{uuid.uuid4().hex[:6]}": now + 1200}

    def seed(tx):  # type: ignore[no-untyped-def]
        for key, expires in rows.items():
            tx.execute(insert(T).values(site_id=site.pk, key=key, request_hash="h", state="done", status_code=200,
                                        response="{}", created_at=expires - 1800, expires_at=expires))
    app.db.write_sync(seed)
    while asyncio.run(housekeeping.purge_idempotency_keys(app)) >= housekeeping.BATCH:
        pass
    left = _keys(app, site.pk)
    assert not any(k.startswith("old-") for k in left)
    assert any(k.startswith("edge-") for k in left) and any(k.startswith("live-") for k in left)
