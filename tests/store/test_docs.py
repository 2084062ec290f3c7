"""DocTable: bulk insert (the same rows as one insert per document); updates that write only the
columns that changed, and never miss one (Tx.rows forgotten when it may be wrong)."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select, update

from billhive import sites
from billhive.store import schema as S
from billhive.store.resources import CUSTOMERS
from tests.support.recording import RecordingCursor


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


def _customer_site(app):
    site, _ = app.db.write_sync(lambda tx: sites.create(tx, f"t{uuid.uuid4().hex[:10]}-test", now=int(time.time())))
    doc = {"id": "cust_1", "object": "customer", "email": "a@example.com", "first_name": "Ann",
           "auto_collection": "on", "created_at": 1000}
    app.db.write_sync(lambda tx: CUSTOMERS.insert(tx, site.pk, doc, 1000))
    return site


def _row(app, site):
    c = S.customers.c
    return tuple(app.db.read_sync(lambda tx: tx.one(select(c.email, c.first_name, c.auto_collection, c.updated_at)
                                                    .where(c.site_id == site.pk, c.id == "cust_1"))))


def test_update_names_only_the_changed_columns(app):
    site = _customer_site(app)

    def change(tx):
        doc = CUSTOMERS.get(tx, site.pk, "cust_1", for_update=True)
        doc["email"] = "b@example.com"
        tx.cur = rec = RecordingCursor(tx.cur)
        assert CUSTOMERS.update(tx, site.pk, doc, 2000)
        return rec.sql

    [sql] = app.db.write_sync(change)
    assert sql.startswith("UPDATE customers SET ")
    set_clause = sql.split(" SET ")[1].split(" WHERE ")[0]
    assert [part.split("=")[0].strip() for part in set_clause.split(",")] == ["updated_at", "email", "data"]
    assert _row(app, site) == ("b@example.com", "Ann", "on", 2000)
    assert app.db.read_sync(lambda tx: CUSTOMERS.get(tx, site.pk, "cust_1"))["email"] == "b@example.com"


def test_update_after_another_statement_changed_the_row_writes_every_column(app):
    site = _customer_site(app)
    c = S.customers.c

    def change(tx):
        doc = CUSTOMERS.get(tx, site.pk, "cust_1", for_update=True)
        tx.execute(update(S.customers).where(c.site_id == site.pk, c.id == "cust_1").values(email="x@example.com"))
        doc["first_name"] = "Bo"  # email unchanged in the document: its column must be written back
        assert CUSTOMERS.update(tx, site.pk, doc, 2000)

    app.db.write_sync(change)
    assert _row(app, site) == ("a@example.com", "Bo", "on", 2000)


def test_update_after_a_savepoint_rolled_back_writes_what_it_undid(app):
    site = _customer_site(app)

    def change(tx):
        doc = CUSTOMERS.get(tx, site.pk, "cust_1", for_update=True)
        doc["email"] = "b@example.com"
        try:
            with tx.savepoint():
                CUSTOMERS.update(tx, site.pk, doc, 2000)
                raise ValueError("undo")
        except ValueError:
            pass
        assert CUSTOMERS.update(tx, site.pk, doc, 2000)  # the same document again: the row holds a@ again

    app.db.write_sync(change)
    assert _row(app, site) == ("b@example.com", "Ann", "on", 2000)


def test_a_joined_load_registers_its_rows_so_an_update_names_only_the_changed_columns(app):
    """DocTable.take: a row loaded by a joined statement (collect's and settle's loads) is known to
    Tx.rows as a DocTable.get-loaded one is: its update writes only what changed."""
    site = _customer_site(app)
    c = S.customers.c

    def change(tx):
        row = tx.one(select(*CUSTOMERS.loaded_columns()).where(c.site_id == site.pk, c.id == "cust_1")
                     .with_for_update())
        assert len(row) == CUSTOMERS.width
        doc = CUSTOMERS.take(tx, site.pk, row, locked=True)
        assert CUSTOMERS.take(tx, site.pk, (None,) * CUSTOMERS.width, locked=True) is None  # outer join: none
        doc["first_name"] = "Bea"
        tx.cur = rec = RecordingCursor(tx.cur)
        assert CUSTOMERS.update(tx, site.pk, doc, 1000)  # same second: updated_at unchanged
        return rec.sql

    [sql] = app.db.write_sync(change)
    set_clause = sql.split(" SET ")[1].split(" WHERE ")[0]
    assert [part.split("=")[0].strip() for part in set_clause.split(",")] == ["first_name", "data"]
    assert _row(app, site) == ("a@example.com", "Bea", "on", 1000)


def _customers_site(app, n):
    site, _ = app.db.write_sync(lambda tx: sites.create(tx, f"t{uuid.uuid4().hex[:10]}-test", now=int(time.time())))
    docs = [{"id": f"cust_{i}", "object": "customer", "email": f"c{i}@example.com", "first_name": f"N{i}",
             "auto_collection": "on", "created_at": 1000} for i in range(n)]
    app.db.write_sync(lambda tx: [CUSTOMERS.insert(tx, site.pk, d, 1000) for d in docs])
    return site, docs


def test_get_many_loads_in_one_statement_and_registers_the_rows(app):
    """DocTable.get_many: one statement for several rows (absent ones left out), each registered in
    Tx.rows as get does (an update names only the changed columns), and a later get of one of them
    answers from memory - the document as loaded, or as updated since."""
    site, docs = _customers_site(app, 3)

    def change(tx):
        tx.cur = rec = RecordingCursor(tx.cur)
        found = CUSTOMERS.get_many(tx, site.pk, ["cust_2", "cust_0", "nobody", "cust_0"], for_update=True)
        loads_sql = list(rec.sql)
        again = CUSTOMERS.get(tx, site.pk, "cust_0", for_update=True)
        assert again == found["cust_0"] and again is not found["cust_0"]  # each get its own copy
        assert len(rec.sql) == 1
        doc = found["cust_2"]
        doc["first_name"] = "Bea"
        assert CUSTOMERS.update(tx, site.pk, doc, 1000)
        update_sql = rec.sql[-1]
        after = CUSTOMERS.get(tx, site.pk, "cust_2")  # as updated, from memory
        assert after["first_name"] == "Bea" and len(rec.sql) == 2
        assert CUSTOMERS.get(tx, site.pk, "cust_1")["first_name"] == "N1"  # not loaded by get_many: read
        assert len(rec.sql) == 3
        return found, loads_sql, update_sql

    found, loads_sql, update_sql = app.db.write_sync(change)
    assert sorted(found) == ["cust_0", "cust_2"] and found["cust_0"] == docs[0]
    assert len(loads_sql) == 1 and " IN (" in loads_sql[0]
    set_clause = update_sql.split(" SET ")[1].split(" WHERE ")[0]
    assert [part.split("=")[0].strip() for part in set_clause.split(",")] == ["first_name", "data"]
    assert app.db.read_sync(lambda tx: CUSTOMERS.get(tx, site.pk, "cust_2"))["first_name"] == "Bea"
    assert app.db.write_sync(lambda tx: CUSTOMERS.get_many(tx, site.pk, [])) == {}


def test_get_many_rows_are_read_again_once_another_statement_or_a_rollback_may_have_changed_them(app):
    """What get_many loaded is answered from memory only while Tx.rows knows the row: a statement
    other than the table's own writes, or a savepoint rolled back, and get reads the row again."""
    site, _ = _customers_site(app, 2)
    c = S.customers.c

    def change(tx):
        CUSTOMERS.get_many(tx, site.pk, ["cust_0", "cust_1"], for_update=True)
        tx.execute(update(S.customers).where(c.site_id == site.pk, c.id == "cust_0")
                   .values(data=tx.scalar(select(c.data).where(c.site_id == site.pk, c.id == "cust_0"))
                           .replace("N0", "Z0")))
        first = CUSTOMERS.get(tx, site.pk, "cust_0")["first_name"]
        CUSTOMERS.get_many(tx, site.pk, ["cust_1"], for_update=True)
        try:
            with tx.savepoint():
                doc = CUSTOMERS.get(tx, site.pk, "cust_1", for_update=True)
                doc["first_name"] = "Undone"
                CUSTOMERS.update(tx, site.pk, doc, 1000)
                raise ValueError("undo")
        except ValueError:
            pass
        return first, CUSTOMERS.get(tx, site.pk, "cust_1")["first_name"]

    assert app.db.write_sync(change) == ("Z0", "N1")


def test_what_remember_kept_is_recalled_until_a_write_may_change_it(app):
    """DocTable.remember / recall (Tx.memo): a read of the rows by one column's value (the unpaid
    invoices of a subscription, dues.preload) is answered again until a DocTable write gives a row
    that value or takes it away, another statement writes the table, or a savepoint rolls back;
    writes of rows with other values leave it."""
    site, _ = _customers_site(app, 2)
    c = S.customers.c

    def run(tx):
        def keep(value):
            CUSTOMERS.remember(tx, site.pk, "email", value, "t", [value])

        def known(value):
            return CUSTOMERS.recall(tx, site.pk, "email", value, "t")
        got = []
        CUSTOMERS.get_many(tx, site.pk, ["cust_0", "cust_1"], for_update=True)
        keep("c0@example.com"), keep("new@example.com"), keep("other@example.com")
        got.append((known("c0@example.com"), CUSTOMERS.recall(tx, site.pk, "email", "c0@example.com", "u")))
        doc = CUSTOMERS.get(tx, site.pk, "cust_0", for_update=True)
        doc["first_name"] = "Same email"
        CUSTOMERS.update(tx, site.pk, doc, 1000)  # its email still c0@: the read is changed
        got.append((known("c0@example.com"), known("other@example.com")))
        keep("c0@example.com")
        doc = CUSTOMERS.get(tx, site.pk, "cust_1", for_update=True)
        doc["email"] = "new@example.com"  # takes the value: what was read of new@ may be wrong now
        CUSTOMERS.update(tx, site.pk, doc, 1000)
        got.append((known("c0@example.com"), known("new@example.com"), known("other@example.com")))
        CUSTOMERS.insert(tx, site.pk, {"id": "cust_9", "object": "customer", "email": "other@example.com"}, 1000)
        got.append(known("other@example.com"))
        keep("other@example.com")
        tx.execute(update(S.customers).where(c.site_id == site.pk, c.id == "cust_9").values(first_name="X"))
        got.append(known("other@example.com"))  # another statement wrote the table
        keep("other@example.com")
        try:
            with tx.savepoint():
                raise ValueError("undo")
        except ValueError:
            pass
        got.append(known("other@example.com"))
        return got

    assert app.db.write_sync(run) == [(["c0@example.com"], None), (None, ["other@example.com"]),
                                      (["c0@example.com"], None, ["other@example.com"]), None, None, None]
