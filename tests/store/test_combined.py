"""Tx.pipeline() on PostgreSQL sends consecutive combinable writes (DocTable's inserts and updates,
Q(..., combinable=True)), each to a different table, as one statement (data-modifying WITH
clauses); anything else, a second write to a held table, a savepoint and the block's end send
what is held first. On SQLite every statement runs as it comes. Both stores: the same rows."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import func, select

from billhive import sites
from billhive.services import invoicing
from billhive.store import schema as S
from billhive.store.resources import CUSTOMERS
from tests.support.recording import RecordingCursor


def _site(app):
    site, _ = app.db.write_sync(lambda tx: sites.create(tx, f"t{uuid.uuid4().hex[:10]}-test", now=int(time.time())))
    doc = {"id": "cust_1", "object": "customer", "first_name": "Ann", "auto_collection": "on", "created_at": 1000}
    app.db.write_sync(lambda tx: CUSTOMERS.insert(tx, site.pk, doc, 1000))
    return site


def _link(site, applied):
    return {"site_id": site.pk, "invoice_id": "1", "txn_id": "txn_1", "applied_amount": applied, "applied_at": 1000}


def _state(app, site):
    it = S.invoice_transactions.c

    def read(tx):
        return (CUSTOMERS.get(tx, site.pk, "cust_1")["first_name"],
                [tuple(r) for r in tx.all(select(it.txn_id, it.applied_amount).where(it.site_id == site.pk))])
    return app.db.read_sync(read)


def test_writes_to_different_tables_go_as_one_statement_and_a_read_sees_them(app):
    site = _site(app)
    it = S.invoice_transactions.c

    def change(tx):
        doc = CUSTOMERS.get(tx, site.pk, "cust_1", for_update=True)
        tx.cur = rec = RecordingCursor(tx.cur)
        with tx.pipeline():
            doc["first_name"] = "Bea"
            assert CUSTOMERS.update(tx, site.pk, doc, 1000)
            tx.execute(invoicing._LINK, _link(site, 0))
            tx.execute(invoicing._SET_APPLIED, _link(site, 5))  # its table is held: what is held goes first
            doc["first_name"] = "Cy"
            assert CUSTOMERS.update(tx, site.pk, doc, 1000)
            seen = tx.scalar(select(func.count()).select_from(S.invoice_transactions)
                             .where(it.site_id == site.pk, it.applied_amount == 5))
        return rec.sql, seen

    sql, seen = app.db.write_sync(change)
    assert seen == 1  # the read came after the writes held before it
    first = [s.split(" ")[0] for s in sql]
    if app.db.url.startswith("postgresql"):
        assert first == ["WITH", "WITH", "SELECT"]
        assert "c0 AS (UPDATE customers SET" in sql[0] and ") INSERT INTO invoice_transactions" in sql[0]
        assert "c0 AS (UPDATE invoice_transactions SET" in sql[1] and ") UPDATE customers SET" in sql[1]
    else:
        assert first == ["UPDATE", "INSERT", "UPDATE", "UPDATE", "SELECT"]
    assert _state(app, site) == ("Cy", [("txn_1", 5)])


def test_inserts_into_one_table_go_one_after_another(app):
    # one statement's new rows take their keys in no given order: a unit's events must keep theirs
    site = _site(app)
    it = S.invoice_transactions.c

    def change(tx):
        tx.cur = rec = RecordingCursor(tx.cur)
        with tx.pipeline():
            for n in range(1, 4):
                tx.execute(invoicing._LINK, {**_link(site, n), "txn_id": f"txn_{n}"})
        return rec.sql

    sql = app.db.write_sync(change)
    assert len(sql) == 3 and all(s.startswith("INSERT INTO invoice_transactions") for s in sql)
    order = app.db.read_sync(lambda tx: [r[0] for r in tx.all(select(it.txn_id).where(it.site_id == site.pk)
                                                                  .order_by(it.pk))])
    assert order == ["txn_1", "txn_2", "txn_3"]


def test_a_combined_write_that_fails_fails_the_unit(app):
    site = _site(app)
    app.db.write_sync(lambda tx: tx.execute(invoicing._LINK, _link(site, 1)))

    def change(tx):
        doc = CUSTOMERS.get(tx, site.pk, "cust_1", for_update=True)
        with tx.pipeline():
            doc["first_name"] = "Bea"
            CUSTOMERS.update(tx, site.pk, doc, 1000)
            tx.execute(invoicing._LINK, _link(site, 2))  # the same (site, invoice, txn): unique

    with pytest.raises(Exception, match="(?i)unique"):
        app.db.write_sync(change)
    assert _state(app, site) == ("Ann", [("txn_1", 1)])


def test_a_savepoint_that_rolls_back_drops_what_it_held(app):
    site = _site(app)

    def change(tx):
        doc = CUSTOMERS.get(tx, site.pk, "cust_1", for_update=True)
        with tx.pipeline():
            tx.execute(invoicing._LINK, _link(site, 3))  # held, then sent when the savepoint opens
            try:
                with tx.savepoint():
                    doc["first_name"] = "Bea"
                    CUSTOMERS.update(tx, site.pk, doc, 1000)
                    raise ValueError("undo")
            except ValueError:
                pass

    app.db.write_sync(change)
    assert _state(app, site) == ("Ann", [("txn_1", 3)])
