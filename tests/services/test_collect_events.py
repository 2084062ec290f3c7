"""Collect's settlement writes its events (a payment's three) in one multi-row INSERT
(``payments._settle_one``: ``outbox.buffered``), on both backends: the same events, in the order
they were recorded, and one statement for them instead of three."""

from __future__ import annotations

from sqlalchemy import select

from billhive.store import schema as S
from billhive.work import outbox
from tests.support import factories as F


def test_a_collects_settlement_writes_its_events_in_one_insert_in_recording_order(site, monkeypatch):
    cust = F.customer(site)
    draft = F.pending_invoice(site, cust["id"], ((2500, "usage"),))
    recorded: list[tuple[str, str]] = []  # (event id, type) in the order outbox.record made them
    inserts: list[tuple[str, int]] = []  # (table, rows) of every multi-row insert of buffered events
    record, insert_rows = outbox.record, outbox._insert_rows

    def recording(tx, site_, origin, now, event_type, content, **kw):
        event = record(tx, site_, origin, now, event_type, content, **kw)
        if site_.pk == site.pk:
            recorded.append((event["id"], event_type))
        return event

    def counting(tx, table, rows):
        if rows and rows[0].get("site_id") == site.pk:
            inserts.append((table.name, len(rows)))
        insert_rows(tx, table, rows)

    monkeypatch.setattr(outbox, "record", recording)
    monkeypatch.setattr(outbox, "_insert_rows", counting)
    inv = site.api.post(f"/invoices/{draft['id']}/collect")["invoice"]
    assert inv["status"] == "paid"

    assert [t for _, t in recorded] == ["invoice_generated", "transaction_created", "payment_succeeded"]
    assert inserts == [("events", 3)]  # the settlement's three events: one statement
    ev = S.events
    stored = site.app.db.read_sync(lambda tx: tx.all(
        select(ev.c.id, ev.c.event_type).where(ev.c.site_id == site.pk).order_by(ev.c.pk)))
    assert [tuple(r) for r in stored][-3:] == recorded  # stored in the order recorded (their pks ascending)
    # and each as the API shows it: the payment's event carries the settled transaction, invoice and customer
    by_type = {e["event"]["event_type"]: e["event"] for e in site.api.get("/events", {"limit": 10})["list"]}
    paid = by_type["payment_succeeded"]["content"]
    assert paid["invoice"]["id"] == inv["id"] and paid["invoice"]["status"] == "paid"
    assert paid["transaction"]["status"] == "success" and paid["customer"]["id"] == cust["id"]
