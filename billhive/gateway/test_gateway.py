"""The deterministic test gateway (``gateway = chargebee``), for test sites only
(``billhive.gateway.for_site`` never hands it to a live site).

Behaves like Chargebee's test gateway for its published test cards:
- success cards: 4111111111111111 (Visa), 5555555555554444 (Mastercard), 378282246310005 (Amex),
  6011111111111117 (Discover), 3530111333300000 (JCB), 38520000023237 (Diners);
- 4119862760338320: storing the card fails, "(3009) Do not honour";
- 4005519200000004: stores fine, every charge fails with 3001 "Insufficient funds";
- 4000000000000119 (billhive's addition): charges and refunds go through at the gateway but the
  caller sees a timeout, so recovery must settle them by looking them up (never repeating them).
Any other Luhn-valid number behaves as a success card *(choice)*.

The gateway keeps its own books (tables ``gateway_vault`` and ``gateway_operations``), written
in transactions of their own as a remote gateway would: a charge is durable at the gateway
before billhive hears of it. Every operation is idempotent on the caller's key.

With SQLite the books live in a database file of their own beside billhive's
(``billhive.db`` -> ``billhive-gateway.db``, durable, with its own writer): a remote gateway
does not queue behind billhive's single SQLite writer. With PostgreSQL they are tables in the
same database (concurrent writers are PostgreSQL's business).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import and_, bindparam, create_engine, func, insert, pool, select

from billhive.domain.customers import luhn_ok
from billhive.errors import ParamError, PaymentMethodVerificationFailed
from billhive.gateway.interface import CardDetails, GatewayResult, StoredCard
from billhive.store import schema as S
from billhive.store.db import Database, Q, Tx, wall_clock
from billhive.util.ids import random_id, secret_id

REFUSED_AT_STORE = "4119862760338320"
INSUFFICIENT_FUNDS = "4005519200000004"
TIMES_OUT = "4000000000000119"

V, O = S.gateway_vault, S.gateway_operations  # noqa: E741 (the table aliases: O for operations)
_VAULT_INSERT = Q(insert(V).values({c: bindparam(c) for c in ("site_id", "token", "behaviour", "brand", "last4",
                                                              "created_at")}))
_BEHAVIOUR = Q(select(V.c.behaviour).where(V.c.site_id == bindparam("site_id"), V.c.token == bindparam("token")))
_OP_INSERT = Q(insert(O).values({c: bindparam(c) for c in ("site_id", "idempotency_key", "kind", "token", "amount",
                                                           "currency_code", "status", "reference", "error_code",
                                                           "error_text", "created_at")}))
_LOOKUP = Q(select(O.c.status, O.c.reference, O.c.error_code, O.c.error_text)
            .where(O.c.site_id == bindparam("site_id"), O.c.idempotency_key == bindparam("key")))
# a charge's two reads in one statement: the card's behaviour and an operation already made with
# the key (no row: the token is not on file; the two reads are then made one by one)
_CHARGE_READ = Q(select(V.c.behaviour, O.c.status, O.c.reference, O.c.error_code, O.c.error_text)
                 .select_from(V.outerjoin(O, and_(O.c.site_id == V.c.site_id,
                                                  O.c.idempotency_key == bindparam("key"))))
                 .where(V.c.site_id == bindparam("site_id"), V.c.token == bindparam("token")))
_CHARGE_BY_REF = Q(select(O.c.status, O.c.amount, O.c.token).where(O.c.site_id == bindparam("site_id"),
                                                        O.c.reference == bindparam("ref"), O.c.kind == "charge"))


def books_for(db: Database) -> Database:
    """The database holding the test gateway's books for billhive's database ``db`` (see the
    module docstring)."""
    if db.dialect != "sqlite":
        return db
    main = Path(db.path)
    path = main.with_name(main.stem + "-gateway" + (main.suffix or ".db"))
    engine = create_engine(f"sqlite:///{path}", poolclass=pool.NullPool)
    try:
        S.metadata.create_all(engine, tables=[V, O])
    finally:
        engine.dispose()
    return Database(f"sqlite:///{path}", synchronous=db.synchronous)


def brand_of(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("51", "52", "53", "54", "55") or 2221 <= int(number[:4] or 0) <= 2720:
        return "mastercard"
    if number[:2] in ("34", "37"):
        return "american_express"
    if number.startswith("6011") or number.startswith("65") or 644 <= int(number[:3] or 0) <= 649:
        return "discover"
    if 3528 <= int(number[:4] or 0) <= 3589:
        return "jcb"
    if number[:2] in ("36", "38") or 300 <= int(number[:3] or 0) <= 305:
        return "diners_club"
    return "other"


def mask(number: str) -> str:
    return "*" * (len(number) - 4) + number[-4:]


class TestGateway:
    name = "chargebee"
    __test__ = False  # not a pytest class

    def __init__(self, db: Database):
        self.main_db = db
        self.db = books_for(db)

    def close(self) -> None:
        if self.db is not self.main_db:
            self.db.close()

    async def store_card(self, site_pk: int, card: CardDetails) -> StoredCard:
        if card.tmp_token is not None:
            raise ParamError("card[tmp_token] : temporary tokens are not supported by the chargebee gateway; pass the "
                             "card details", param="card[tmp_token]")
        number = card.number.replace(" ", "").replace("-", "")
        if not luhn_ok(number):
            raise ParamError("card[number] : invalid card number", param="card[number]")
        if number == REFUSED_AT_STORE:
            raise PaymentMethodVerificationFailed("(3009) Do not honour", param="card[number]")
        behaviour = {INSUFFICIENT_FUNDS: "insufficient_funds", TIMES_OUT: "timeout"}.get(number, "success")
        token = secret_id("tok_", 20)
        stored = StoredCard(token=token, brand=brand_of(number), last4=number[-4:], iin=number[:6],
                            masked_number=mask(number), gateway=self.name)

        def unit(tx: Tx) -> None:
            tx.execute(_VAULT_INSERT, dict(site_id=site_pk, token=token, behaviour=behaviour, brand=stored.brand,
                                           last4=stored.last4, created_at=wall_clock()))
        await self.db.write(unit)
        return stored

    def _operation(self, site_pk: int, key: str, kind: str, amount: int, currency: str, token: str | None,
                   decide: Callable[[Tx], tuple[str, str | None, str | None]],
                   read: Callable[[Tx], tuple[GatewayResult | None, Callable[[Tx], tuple[str, str | None, str | None]]]]
                   | None = None) -> Callable[[Tx], tuple[GatewayResult, bool]]:
        """``read``: the operation made with ``key`` already (None: none) and the ``decide`` to use,
        read together (a charge's one statement); default: ``_lookup``, then ``decide``."""
        def unit(tx: Tx) -> tuple[GatewayResult, bool]:
            existing, decides = read(tx) if read is not None else (_lookup(tx, site_pk, key), decide)
            if existing is not None:
                return existing, False
            status, code, text = decides(tx)
            ref = random_id("cb_", 16)
            tx.execute(_OP_INSERT, dict(site_id=site_pk, idempotency_key=key, kind=kind, token=token, amount=amount,
                                        currency_code=currency, status=status, reference=ref, error_code=code,
                                        error_text=text, created_at=wall_clock()))
            return GatewayResult(status, ref, code, text), True
        return unit

    async def charge(self, site_pk: int, idempotency_key: str, token: str, amount: int,
                     currency: str) -> GatewayResult:
        behaviour_box: list[str] = []

        def by_behaviour(behaviour: str) -> tuple[str, str | None, str | None]:
            behaviour_box.append(behaviour)
            if behaviour == "insufficient_funds":
                return "failure", "3001", "Insufficient funds"
            if behaviour == "unknown_token":
                return "failure", "3008", "The card is not on file at the gateway"
            return "success", None, None  # the timeout card's charge succeeds at the gateway

        def decide(tx: Tx) -> tuple[str, str | None, str | None]:
            row = tx.one(_BEHAVIOUR, {"site_id": site_pk, "token": token})
            return by_behaviour(row[0] if row else "unknown_token")

        def read(tx: Tx) -> tuple[GatewayResult | None, Callable[[Tx], tuple[str, str | None, str | None]]]:
            row = tx.one(_CHARGE_READ, {"site_id": site_pk, "token": token, "key": idempotency_key})
            if row is None:  # the token is not on file: the operation's own lookup, then decide
                return _lookup(tx, site_pk, idempotency_key), decide
            existing = GatewayResult(row[1], row[2], row[3], row[4]) if row[1] is not None else None
            return existing, lambda _tx: by_behaviour(row[0])

        result, fresh = await self.db.write(self._operation(site_pk, idempotency_key, "charge", amount, currency,
                                                            token, decide, read))
        if fresh and behaviour_box and behaviour_box[0] == "timeout":
            return GatewayResult("timeout", result.reference, "timeout", "The gateway did not answer in time")
        return result

    async def refund(self, site_pk: int, idempotency_key: str, charge_reference: str, amount: int,
                     currency: str) -> GatewayResult:
        behaviour_box: list[str] = []

        def decide(tx: Tx) -> tuple[str, str | None, str | None]:
            row = tx.one(_CHARGE_BY_REF, {"site_id": site_pk, "ref": charge_reference})
            if row is None or row[0] != "success":
                return "failure", "3020", "No successful charge to refund"
            card = tx.one(_BEHAVIOUR, {"site_id": site_pk, "token": row[2]}) if row[2] else None
            behaviour_box.append(card[0] if card else "success")
            return "success", None, None
        result, fresh = await self.db.write(self._operation(site_pk, idempotency_key, "refund", amount, currency,
                                                            None, decide))
        if fresh and behaviour_box and behaviour_box[0] == "timeout":
            # the timeout card's refunds, like its charges, go through but the answer is lost
            return GatewayResult("timeout", result.reference, "timeout", "The gateway did not answer in time")
        return result

    async def void(self, site_pk: int, idempotency_key: str, charge_reference: str) -> GatewayResult:
        def decide(tx: Tx) -> tuple[str, str | None, str | None]:
            return "success", None, None
        result, _ = await self.db.write(self._operation(site_pk, idempotency_key, "void", 0, "", None, decide))
        return result

    async def lookup(self, site_pk: int, idempotency_key: str) -> GatewayResult | None:
        return await self.db.read(lambda tx: _lookup(tx, site_pk, idempotency_key))

    def charges(self, site_pk: int) -> dict[str, str]:
        """Every charge on the books: idempotency key -> status (tests: 'never charge twice')."""
        return self.operations(site_pk, "charge")

    def operations(self, site_pk: int, kind: str) -> dict[str, str]:
        """Every operation of a kind (charge, refund, void) on the books: idempotency key -> status."""
        return dict(self.db.read_sync(lambda tx: tx.all(
            select(O.c.idempotency_key, O.c.status).where(O.c.site_id == site_pk, O.c.kind == kind))))

    def card_count(self, site_pk: int) -> int:
        """Cards in the vault (tests: what a refused request must not have stored)."""
        return int(self.db.read_sync(lambda tx: tx.scalar(select(func.count()).where(V.c.site_id == site_pk))))

    def charge_count(self, site_pk: int) -> int:
        return int(self.db.read_sync(lambda tx: tx.scalar(
            select(func.count()).where(O.c.site_id == site_pk, O.c.kind == "charge"))))


def _lookup(tx: Tx, site_pk: int, key: str) -> GatewayResult | None:
    row = tx.one(_LOOKUP, {"site_id": site_pk, "key": key})
    return GatewayResult(row[0], row[1], row[2], row[3]) if row else None
