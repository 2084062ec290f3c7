"""Building and closing invoices — written once, used by every path that makes an invoice:
collect (closing a pending invoice), renewals with metered billing off, one-time charges,
subscription creation and changes.

Closing (``close``) does, in the caller's transaction:
  1. take the next number from the site's invoice sequence (gapless: the sequence row is
     bumped inside this transaction, so a rollback gives the number back);
  2. set end_date (closing time, or the renewal date with the site's ``close_date`` setting);
  3. tax it (the site's tax rules, loaded by services/csv_tax_rules.basis) and apply the customer's
     promotional credits, refundable credits and excess payments, in that order, each up to what
     is still due (ledger rows, linked records on the invoice);
  4. decide payment: nothing due -> paid; auto-collection on with a usable card -> an
     ``in_progress`` payment transaction is recorded and a ChargePlan returned (the gateway
     is called after commit, see services/payments.py); otherwise payment_due.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, insert, select, update

from billhive import gateway as gateways
from billhive import sites
from billhive.domain import closing
from billhive.domain import invoices as D
from billhive.domain.taxes import Basis
from billhive.errors import ConfigurationIncompatible, InvalidState
from billhive.services import cards, credits, csv_tax_rules, dues
from billhive.store import schema as S
from billhive.store.db import Q
from billhive.store.resources import CARDS, CUSTOMERS, INVOICES, SUBSCRIPTIONS, TRANSACTIONS
from billhive.util.ids import draft_invoice_id, txn_id
from billhive.util.jsonutil import loads
from billhive.work.context import SCHEDULER, Work

log = logging.getLogger("billhive.invoicing")
_LINK = Q(insert(S.invoice_transactions).values(
    {c: bindparam(c) for c in ("site_id", "invoice_id", "txn_id", "applied_amount", "applied_at")}), combinable=True)
_SET_APPLIED = Q(update(S.invoice_transactions).where(
    S.invoice_transactions.c.site_id == bindparam("site_id"), S.invoice_transactions.c.invoice_id == bindparam(
        "invoice_id"), S.invoice_transactions.c.txn_id == bindparam("txn_id")).values(
    applied_amount=bindparam("applied_amount"), applied_at=bindparam("applied_at")), combinable=True)
_NEXT_NUMBER = Q(update(S.sites).where(S.sites.c.pk == bindparam("pk"))
                 .values(invoice_next_number=S.sites.c.invoice_next_number + 1)
                 .returning(S.sites.c.invoice_next_number))


@dataclass(frozen=True)
class ChargePlan:
    """A charge to make through the gateway once the closing transaction is durable."""

    txn_id: str
    invoice_id: str
    gateway: str
    token: str
    amount: int
    currency: str
    purpose: str  # close | create | collect_payment | dunning


def next_invoice_number(w: Work) -> str:
    """The site's next invoice number (prefix + number), taken in this transaction."""
    n = w.tx.scalar(_NEXT_NUMBER, {"pk": w.site_id}) - 1
    return D.invoice_number(w.site.setting("invoice_prefix"), n)


_I, _C, _K = INVOICES.t, CUSTOMERS.t, CARDS.t
_SITE_COLS = len(sites.COLUMNS)
_FOR_CLOSE = Q(select(*sites.COLUMNS, *INVOICES.loaded_columns(), *CUSTOMERS.loaded_columns(), _K.c.data)
               .select_from(_I.join(S.sites, S.sites.c.pk == _I.c.site_id)
                            .join(_C, and_(_C.c.site_id == _I.c.site_id, _C.c.id == _I.c.customer_id))
                            .outerjoin(_K, and_(_K.c.site_id == _I.c.site_id, _K.c.id == _I.c.customer_id)))
               .where(_I.c.site_id == bindparam("site_id"), _I.c.id == bindparam("id"))
               .with_for_update(of=[_I, _C]))


@dataclass(frozen=True)
class ForClose:
    """A pending invoice loaded to be closed: the invoice and its customer (both locked) and the
    customer's card."""

    invoice: dict
    customer: dict
    card: dict | None


def lock_for_close(w: Work, invoice_id: str) -> ForClose | None:
    """collect's loads in one statement: the site (``Work.adopt_site``: collect is ``site_first``),
    the invoice with its customer (both locked) and card. None when there is no such invoice, or
    no customer for it: the caller loads what there is the usual way (and says why it cannot close
    it), the site first (``Work.require_site``)."""
    found = w.tx.one(_FOR_CLOSE, {"site_id": w.site_id, "id": invoice_id})
    if found is None:
        return None
    w.adopt_site(sites.from_row(found[:_SITE_COLS]))
    # both rows are registered in Tx.rows (as DocTable.get does): their updates write only what changed
    n = _SITE_COLS + INVOICES.width
    inv = INVOICES.take(w.tx, w.site_id, found[_SITE_COLS:n], locked=True)
    customer = CUSTOMERS.take(w.tx, w.site_id, found[n:n + CUSTOMERS.width], locked=True)
    card = found[-1]
    assert inv is not None and customer is not None  # inner joins
    return ForClose(inv, customer, loads(card) if card is not None else None)


def line_item(*, date_from: int, date_to: int, unit_amount: int, quantity: int = 1, description: str,
              entity_type: str, entity_id: str | None = None, type: str = "charge", amount: int | None = None,
              param: str | None = None) -> dict:
    """An invoice line; ``param`` is the request parameter blamed if unit_amount x quantity goes
    beyond money.MAX_AMOUNT."""
    li = {
        "date_from": date_from,
        "date_to": date_to,
        "unit_amount": unit_amount,
        "quantity": quantity,
        "amount": D.line_amount(unit_amount, quantity, param) if amount is None else amount,
        "is_taxed": False,
        "tax": 0,
        "description": description,
        "type": type,
        "entity_type": entity_type,
    }
    if entity_id is not None:
        li["entity_id"] = entity_id
    return li


def new_invoice(w: Work, *, customer: dict, start_date: int, line_items: list[dict], recurring: bool,
                first_invoice: bool = False, subscription_id: str | None = None, discounts: list[dict] | None = None,
                pending: bool = False, invoice_id: str | None = None, shipping_address: dict | None = None) -> dict:
    """An invoice document (not saved), taxed. Pending invoices get a temporary ``draft_inv_`` id."""
    inv: dict = {
        "id": invoice_id or (draft_invoice_id() if pending else ""),
        "object": "invoice",
        "customer_id": customer["id"],
        "recurring": recurring,
        "status": "pending" if pending else "payment_due",
        "price_type": w.site.setting("price_type"),
        "start_date": start_date,
        "first_invoice": first_invoice,
        "currency_code": w.site.currency_code,
        "line_items": list(line_items),
        "discounts": list(discounts or []),
        "taxes": [],
        "linked_transactions": [],
        "linked_orders": [],
        "notes": [],
        "credits_applied": 0,
        "amount_paid": 0,
        "amount_adjusted": 0,
    }
    if subscription_id:
        inv["subscription_id"] = subscription_id
    if customer.get("vat_number"):
        inv["vat_number"] = customer["vat_number"]
    if customer.get("billing_address"):
        inv["billing_address"] = {**customer["billing_address"], "object": "billing_address"}
    if shipping_address:
        inv["shipping_address"] = {**shipping_address, "object": "shipping_address"}
    return D.recompute(inv, taxes=csv_tax_rules.basis(w, inv, customer))


def is_first_for_customer(w: Work, customer_id: str) -> bool:
    """Whether no invoice was raised for the customer yet (a non-recurring invoice's
    ``first_invoice``: "the first invoice raised for the customer", the spec's Invoice schema)."""
    return not INVOICES.find(w.tx, w.site_id, INVOICES.t.c.customer_id == customer_id, limit=1)


def insert_pending(w: Work, inv: dict) -> dict:
    """Save a pending invoice; fires invoice_created when the site's notify setting is on."""
    INVOICES.insert(w.tx, w.site_id, inv, w.now)
    if w.site.setting("notify_pending_invoices"):
        w.emit("invoice_created", {"invoice": inv})
    return inv


def effective_auto_collection(w: Work, inv: dict, customer: dict) -> str:
    """The subscription's auto_collection override when it has one, else the customer's."""
    sub_id = inv.get("subscription_id")
    if sub_id:
        sub = SUBSCRIPTIONS.get(w.tx, w.site_id, sub_id)
        if sub and sub.get("auto_collection") in ("on", "off"):
            return sub["auto_collection"]
    return customer.get("auto_collection", "on")


def usable_card(w: Work, customer: dict) -> dict | None:
    """The customer's card if it can be charged now (their payment method, not expired) - every
    charge starts here.

    On a site without a payment gateway (a live site until a real one is configured for it) a
    card on file cannot be charged: a request that would charge it is refused
    (``ConfigurationIncompatible``; its transaction leaves nothing behind), while scheduled work
    (renewals, dunning retries, trial ends), which has nobody to answer, goes on as if the customer
    had no card."""
    card = cards.usable_card(w, customer)
    if card is None:
        return None
    try:
        gateways.for_site(w.app.gateways, w.site)
    except ConfigurationIncompatible:
        if w.origin.source == SCHEDULER.source:
            log.warning("site %s has no payment gateway: customer %s's card is not charged", w.site.name,
                        customer["id"])
            return None
        raise
    return card


def snapshot(w: Work, customer_id: str, subscription_id: str | None = None, *,
             loaded: tuple[dict | None, dict | None] | None = None) -> dict:
    """Event content around an invoice: customer, card (if any), subscription (if any).
    ``loaded``: the customer and card, loaded already in this transaction."""
    customer, card = loaded if loaded is not None else (CUSTOMERS.get(w.tx, w.site_id, customer_id), None)
    if customer is not None and loaded is None:
        card = cards.get_card(w, customer_id)
    out: dict = cards.content(customer, card) if customer is not None else {}
    if subscription_id:
        sub = SUBSCRIPTIONS.get(w.tx, w.site_id, subscription_id)
        if sub is not None:
            out["subscription"] = sub
    return out


def _unused_payments(w: Work, customer: dict) -> list[dict]:
    """The customer's earlier payments with an unused amount, oldest first, locked."""
    t = TRANSACTIONS.t
    return TRANSACTIONS.find(w.tx, w.site_id, t.c.customer_id == customer["id"], t.c.unused_amount > 0,
                             t.c.type == "payment", order_by=[t.c.pk], for_update=True)


def _apply_excess_payment(w: Work, inv: dict, customer: dict, txn: dict, take: int) -> None:
    """Use ``take`` of an earlier payment's unused amount for inv (already counted in amount_paid)."""
    txn = closing.use_excess(txn, inv, take, w.now)
    TRANSACTIONS.save(w.tx, w.site_id, txn, w.now)
    link_transaction(w, inv, txn, take)
    credits.move(w, customer, "excess", -take, "applied", reference_type="invoice", reference_id=inv["id"],
                 description=f"Excess payment of {txn['id']} applied")
    w.emit("transaction_updated", {"transaction": txn})


def link_transaction(w: Work, inv: dict, txn: dict, applied: int, *, row_exists: bool = False) -> None:
    """Record that txn touched inv (linked_transactions on the invoice; invoice_transactions row).

    row_exists: a charge recorded its link (0 applied) when it started; settling it sets the amount."""
    if applied > 0:
        inv.setdefault("linked_transactions", []).append(closing.transaction_link(txn, applied, w.now))
    if row_exists:
        set_applied(w, inv["id"], txn["id"], applied)
    else:
        insert_link(w, inv["id"], txn["id"], applied)


_CHARGING = Q(select(TRANSACTIONS.t.c.pk).where(
    TRANSACTIONS.t.c.site_id == bindparam("site_id"), TRANSACTIONS.t.c.status == "in_progress",
    TRANSACTIONS.t.c.id.in_(select(S.invoice_transactions.c.txn_id).where(
        S.invoice_transactions.c.site_id == bindparam("site_id"),
        S.invoice_transactions.c.invoice_id == bindparam("invoice_id")))).limit(1))


def charging(w: Work, invoice_id: str) -> bool:
    """Whether a charge of the invoice is recorded in_progress (to be made after commit)."""
    return w.tx.one(_CHARGING, {"site_id": w.site_id, "invoice_id": invoice_id}) is not None


def insert_link(w: Work, invoice_id: str, txn_id: str, applied: int) -> None:
    """The invoice_transactions row of a transaction that touched the invoice."""
    w.tx.execute(_LINK, {"site_id": w.site_id, "invoice_id": invoice_id, "txn_id": txn_id, "applied_amount": applied,
                         "applied_at": w.now})


def set_applied(w: Work, invoice_id: str, txn_id: str, applied: int) -> None:
    """A charge recorded its invoice_transactions row (0 applied) when it started; its settlement
    sets the amount applied."""
    w.tx.execute(_SET_APPLIED, {"site_id": w.site_id, "invoice_id": invoice_id, "txn_id": txn_id,
                                "applied_amount": applied, "applied_at": w.now})


# the gateway keys of charges already made, in order, for the next start_charge calls of this
# transaction to take (services/charge_first.py: an operation created once its charge succeeded)
PRESET_TXN_IDS = "invoicing.preset_txn_ids"


def new_payment(w: Work, *, inv: dict, customer: dict, card: dict, amount: int) -> dict:
    preset: list[str] = w.cached(PRESET_TXN_IDS, list)
    doc = {
        "id": preset.pop(0) if preset else txn_id(),
        "object": "transaction",
        "customer_id": customer["id"],
        "payment_method": "card",
        "gateway": card.get("gateway", "chargebee"),
        "type": "payment",
        "date": w.now,
        "currency_code": inv["currency_code"],
        "amount": amount,
        "status": "in_progress",
        "initiator_type": "merchant",
        "amount_unused": 0,
        "linked_invoices": [closing.invoice_link(inv, 0, w.now)],
    }
    if inv.get("subscription_id"):
        doc["subscription_id"] = inv["subscription_id"]
    if card.get("masked_number"):
        doc["masked_card_number"] = card["masked_number"]
    return doc


def start_charge(w: Work, inv: dict, customer: dict, card: dict, purpose: str) -> ChargePlan:
    """Record an in_progress payment for the invoice's amount due; the charge happens after commit."""
    txn = new_payment(w, inv=inv, customer=customer, card=card, amount=int(inv["amount_due"]))
    TRANSACTIONS.insert(w.tx, w.site_id, txn, w.now, columns={"idempotency_key": txn["id"], "purpose": purpose})
    link_transaction(w, inv, txn, 0)  # listed under the invoice from the start (even while in progress)
    return ChargePlan(txn["id"], inv["id"], txn["gateway"], card["reference_id"], txn["amount"],
                      inv["currency_code"], purpose)


def close(w: Work, inv: dict, *, old_id: str | None = None, expect_status: str | None = "pending",
          insert: bool = False, purpose: str = "close") -> ChargePlan | None:
    """Close ``inv``: load what the decision needs (``load_closing``), decide
    (``domain.closing.close``), save (``save_closing``). ``inv`` is updated in place to the closed,
    numbered invoice. Returns the charge to make after commit, or None. (collect, in
    services/invoices.py, makes the same three calls itself.)"""
    loaded = load_closing(w, inv)
    decided = closing.close(inv, balances=loaded.balances, payer=loaded.payer, now=w.now,
                            keep_end_date=loaded.keep_end_date, taxes=loaded.taxes)
    return save_closing(w, inv, decided, loaded, old_id=old_id, expect_status=expect_status, insert=insert,
                        purpose=purpose)


@dataclass(frozen=True)
class ClosingInputs:
    """What the closing decision needs, loaded (row locks on the customer and on the earlier
    payments whose unused amounts it may take), and the rows its save writes."""

    customer: dict
    unused: list[dict]  # the customer's payments with an unused amount, oldest first
    card: dict | None
    balances: closing.Balances
    payer: closing.Payer
    keep_end_date: bool  # the site's close_date setting is renewal_date
    taxes: Basis  # the invoice's tax basis (services/csv_tax_rules.basis)


def load_closing(w: Work, inv: dict, found: ForClose | None = None) -> ClosingInputs:
    """``found``: the customer and card loaded with ``inv`` (``lock_for_close``)."""
    if found is not None:
        customer, card = found.customer, found.card
    else:
        stored = CUSTOMERS.get(w.tx, w.site_id, inv["customer_id"], for_update=True)
        if stored is None:
            raise InvalidState(f"The invoice's customer {inv['customer_id']} no longer exists")
        customer, card = stored, cards.get_card(w, stored["id"])
    unused = _unused_payments(w, customer) if credits.balance(customer, "excess") else []
    balances = closing.Balances(credits.balance(customer, "promotional"), credits.balance(customer, "refundable"),
                                tuple((p["id"], int(p.get("amount_unused", 0))) for p in unused))
    return ClosingInputs(customer, unused, card, balances, _payer(w, inv, customer, card),
                         w.site.setting("close_date") == "renewal_date", csv_tax_rules.basis(w, inv, customer))


def save_closing(w: Work, inv: dict, decided: closing.Closing, loaded: ClosingInputs, *, old_id: str | None = None,
                 expect_status: str | None = "pending", insert: bool = False,
                 purpose: str = "close", held: bool = False) -> ChargePlan | None:
    """Save what closing ``inv`` decided: number it, save it, move the balances, record the charge.
    ``inv`` is updated in place to the closed, numbered invoice.

    ``insert``: the invoice is new (closed at creation, e.g. a renewal without metered billing);
    otherwise it is renamed from ``old_id`` with a conditional update on ``expect_status`` — a
    concurrent close loses with 409. ``purpose``: how settlement treats the charge — ``close``
    (a failure starts dunning) or ``create`` (a one-off invoice: a failure voids it, see
    ``undo_balances``). ``held``: the caller loaded ``inv`` for update in this transaction and saw it in
    ``expect_status``, so nobody else can have changed it: its update needs no condition and goes
    with the other writes (one round trip on PostgreSQL).
    Returns the charge to make after commit, or None. invoice_generated is emitted here when no
    charge follows, else by the settlement (so the event shows the invoice's outcome).
    """
    customer, card, unused = loaded.customer, loaded.card, loaded.unused
    dues.refresh(w, decided.invoice)  # the subscription's dues with this invoice closed
    # take the number - the site's sequence row stays locked until commit, so everything after
    # this is writes only (pipelined on PostgreSQL: one round trip)
    old_id = old_id or inv["id"]
    inv.clear()
    inv.update(decided.invoice)
    inv["id"] = next_invoice_number(w)
    renamed = {"draft_id": old_id} if old_id != inv["id"] else None
    if insert:
        INVOICES.insert(w.tx, w.site_id, inv, w.now)
    elif not held and not INVOICES.update(w.tx, w.site_id, inv, w.now, old_id=old_id,
                                          expect={"status": expect_status} if expect_status else None,
                                          columns=renamed):
        raise InvalidState(f"Invoice {old_id} is no longer {expect_status}")
    plan = None
    with w.tx.pipeline():
        if held and not insert:
            INVOICES.update(w.tx, w.site_id, inv, w.now, old_id=old_id, columns=renamed)
        if decided.promotional:
            credits.move(w, customer, "promotional", -decided.promotional, "applied", reference_type="invoice",
                         reference_id=inv["id"], description="Promotional credits applied")
        if decided.refundable:
            credits.move(w, customer, "refundable", -decided.refundable, "applied", reference_type="invoice",
                         reference_id=inv["id"], description="Refundable credits applied")
        by_id = {p["id"]: p for p in unused}
        for txn_id_, take in decided.excess:
            _apply_excess_payment(w, inv, customer, by_id[txn_id_], take)
        if decided.excess:  # the links above changed the invoice document after its save
            INVOICES.save(w.tx, w.site_id, inv, w.now)
        if decided.charge:
            assert card is not None
            plan = start_charge(w, inv, customer, card, purpose)
        if decided.balances_moved:
            CUSTOMERS.save(w.tx, w.site_id, customer, w.now)
            w.emit("customer_changed", cards.content(customer, card))
        if plan is None:
            w.emit("invoice_generated", {"invoice": inv})
    return plan


def _payer(w: Work, inv: dict, customer: dict, card: dict | None) -> closing.Payer:
    """How the invoice can be collected: auto-collection, a chargeable card, a gateway for the site."""
    no_gateway = None
    try:
        gateways.for_site(w.app.gateways, w.site)
    except ConfigurationIncompatible as exc:
        no_gateway = exc.message
    # scheduled work has nobody to answer a refusal: it goes on as if the customer had no card
    without_gateway = "skip" if w.origin.source == SCHEDULER.source else "refuse"
    return closing.Payer(auto_collection=effective_auto_collection(w, inv, customer) == "on",
                         card_usable=cards.is_usable(w, customer, card), no_gateway=no_gateway,
                         without_gateway=without_gateway)


def release_for_void(w: Work, inv: dict) -> None:
    """Give back the promotional and refundable credits the invoice took (void/delete)."""
    g = closing.give_back(inv)
    if not g.promotional and not g.refundable:
        return
    customer = CUSTOMERS.get(w.tx, w.site_id, inv["customer_id"], for_update=True)
    if customer is None:
        return
    if g.promotional:
        credits.move(w, customer, "promotional", g.promotional, "released", reference_type="invoice",
                     reference_id=inv["id"], description="Promotional credits reclaimed from a voided invoice")
    if g.refundable:
        credits.move(w, customer, "refundable", g.refundable, "released", reference_type="invoice",
                     reference_id=inv["id"], description="Refundable credits released from a voided invoice")
    CUSTOMERS.save(w.tx, w.site_id, customer, w.now)
    w.emit("customer_changed", {"customer": customer})


# ---- one-off invoices whose charge failed (purpose "create") --------------------------------------

def undo_balances(w: Work, inv: dict) -> None:
    """Give back every balance ``close`` took for ``inv`` — promotional credits (the
    account_credits discount), refundable credits (credits_applied) and excess payments (links to
    earlier payments) — and take them off the invoice, which then shows its full amount due.

    Used when a one-off invoice's automatic charge fails: Chargebee generates such an invoice only
    on a successful payment, so billhive voids it and leaves the customer's balances as they were.
    """
    customer = CUSTOMERS.get(w.tx, w.site_id, inv["customer_id"], for_update=True)
    if customer is None:
        return
    g = closing.give_back(inv, taxes=csv_tax_rules.basis(w, inv, customer))
    why = "given back: the invoice's payment failed"
    if g.promotional:
        credits.move(w, customer, "promotional", g.promotional, "released", reference_type="invoice",
                     reference_id=inv["id"], description=f"Promotional credits {why}")
    if g.refundable:
        credits.move(w, customer, "refundable", g.refundable, "released", reference_type="invoice",
                     reference_id=inv["id"], description=f"Refundable credits {why}")
    link = S.invoice_transactions
    for txn_id_, take in g.excess:
        txn = closing.return_excess(TRANSACTIONS.require(w.tx, w.site_id, txn_id_, for_update=True), inv["id"], take)
        TRANSACTIONS.save(w.tx, w.site_id, txn, w.now)
        w.tx.execute(delete(link).where(link.c.site_id == w.site_id, link.c.invoice_id == inv["id"],
                                        link.c.txn_id == txn["id"]))
        credits.move(w, customer, "excess", take, "released", reference_type="invoice", reference_id=inv["id"],
                     description=f"Excess payment of {txn['id']} {why}")
        w.emit("transaction_updated", {"transaction": txn})
    inv.clear()
    inv.update(g.invoice)
    if g.moved:
        CUSTOMERS.save(w.tx, w.site_id, customer, w.now)
        w.emit("customer_changed", {"customer": customer})
