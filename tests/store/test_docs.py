"""DocTable bulk insert: the same rows as one insert per document."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from billhive import sites
from billhive.store import schema as S
from billhive.store.resources import CUSTOMERS


def test_insert_many_writes_documents_and_derived_columns(app):
    site, _ = app.db.write_sync(lambda tx: sites.create(tx, f"t{uuid.uuid4().hex[:10]}-test", now=int(time.time())))
    docs = [{"id": f"cust_{i}", "object": "customer", "email": f"c{i}@example.com",
             "auto_collection": "off" if i else "on", "created_at": 1000 + i} for i in range(3)]
    app.db.write_sync(lambda tx: CUSTOMERS.insert_many(tx, site.pk, docs, 2000))
    app.db.write_sync(lambda tx: CUSTOMERS.insert_many(tx, site.pk, [], 2000))  # nothing to do
    c = S.customers.c

    def read(tx):
        rows = tx.all(select(c.id, c.email, c.auto_collection, c.created_at, c.updated_at)
                      .where(c.site_id == site.pk).order_by(c.pk))
        return rows, [CUSTOMERS.get(tx, site.pk, d["id"]) for d in docs]

    rows, loaded = app.db.read_sync(read)
    assert [tuple(r) for r in rows] == [("cust_0", "c0@example.com", "on", 1000, 2000),
                                        ("cust_1", "c1@example.com", "off", 1001, 2000),
                                        ("cust_2", "c2@example.com", "off", 1002, 2000)]
    assert loaded == docs
