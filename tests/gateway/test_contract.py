"""The gateway contract (billhive.gateway.interface), the same tests for every gateway: the test
gateway (``chargebee``) and Stripe (``stripe``, against localstripe, tests.support.stripe_fake).

What billhive relies on: a stored card comes back as a reference (never the number); a repeated
idempotency key is the same operation with its first answer (never a second charge); declines are
failures carrying the gateway's code and message; ``lookup`` answers what a key did, or None if
the gateway never saw it (recovery's question after a crash)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest

from billhive import gateway as gateways
from billhive import sites
from billhive.errors import PaymentMethodVerificationFailed
from billhive.gateway import CardDetails, Gateway, StoredCard
from billhive.store import tx as txmod
from tests.support import server


@dataclass(frozen=True)
class Cards:
    good: str  # stores and charges
    declines: str  # stores; every charge fails
    refused: str  # storing it fails


CARDS = {
    # Chargebee's test cards (billhive.gateway.test_gateway)
    "chargebee": Cards(good="4111111111111111", declines="4005519200000004", refused="4119862760338320"),
    # Stripe's test cards (https://docs.stripe.com/testing#declined-payments): 0341 attaches to a
    # customer but its charges are declined; 0002 is declined when attached
    "stripe": Cards(good="4242424242424242", declines="4000000000000341", refused="4000000000000002"),
}


@dataclass
class Under:
    """The gateway under test, for one site."""
    name: str
    gateway: Gateway
    site: server.TestSite
    cards: Cards

    def run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run(coro)

    def store(self, number: str) -> StoredCard:
        return self.run(self.gateway.store_card(self.site.pk, CardDetails(number, 12, 2040, cvv="123",
                                                                            first_name="Ada", last_name="L")))

    def charge(self, key: str, token: str, amount: int = 1000):  # type: ignore[no-untyped-def]
        return self.run(self.gateway.charge(self.site.pk, key, token, amount, "USD"))


@pytest.fixture(params=["chargebee", "stripe"])
def under(request, make_site) -> Under:
    if request.param == "stripe":
        site = make_site(**request.getfixturevalue("stripe_fake").settings())
    else:
        site = make_site()
    gw = gateways.for_site(site.app.gateways, site.app.db.read_sync(lambda tx: sites.load(tx, site.pk)))
    assert gw.name == request.param
    return Under(request.param, gw, site, CARDS[request.param])


def key() -> str:
    return "txn_" + uuid.uuid4().hex[:16]


def test_a_stored_card_is_a_reference_with_brand_last4_and_expiry(under):
    stored = under.store(under.cards.good)
    assert stored.brand == "visa" and stored.last4 == under.cards.good[-4:]
    assert under.cards.good not in stored.token and stored.token
    assert stored.masked_number.endswith(under.cards.good[-4:]) and under.cards.good not in stored.masked_number
    assert stored.gateway == under.name
    assert (stored.expiry_month or 12, stored.expiry_year or 2040) == (12, 2040)


def test_a_card_the_gateway_refuses_is_not_stored(under):
    with pytest.raises(PaymentMethodVerificationFailed) as info:
        under.store(under.cards.refused)
    assert info.value.param == "card[number]"


def test_a_charge_succeeds_once_per_key(under):
    token = under.store(under.cards.good).token
    k = key()
    first = under.charge(k, token)
    assert first.ok and first.reference
    again = under.charge(k, token)  # a retry with the same key: the same charge, not a second one
    assert again.ok and again.reference == first.reference
    assert under.run(under.gateway.lookup(under.site.pk, k)) == first


def test_a_declined_charge_is_a_failure_with_the_gateways_code_and_message(under):
    token = under.store(under.cards.declines).token
    k = key()
    result = under.charge(k, token)
    assert result.status == "failure" and result.error_code and result.error_text
    looked = under.run(under.gateway.lookup(under.site.pk, k))
    assert looked is not None and looked.status == "failure"


def test_lookup_of_a_key_the_gateway_never_saw_is_none(under):
    assert under.run(under.gateway.lookup(under.site.pk, key())) is None


def test_refunds_full_and_partial(under):
    token = under.store(under.cards.good).token
    charge = under.charge(key(), token, amount=3000)
    part_key = key()
    part = under.run(under.gateway.refund(under.site.pk, part_key, charge.reference, 1000, "USD"))
    assert part.ok and part.reference
    assert under.run(under.gateway.refund(under.site.pk, part_key, charge.reference, 1000, "USD")) == part
    rest = under.run(under.gateway.refund(under.site.pk, key(), charge.reference, 2000, "USD"))
    assert rest.ok and rest.reference != part.reference
    assert under.run(under.gateway.lookup(under.site.pk, part_key)) == part


def test_a_refund_of_no_charge_fails(under):
    result = under.run(under.gateway.refund(under.site.pk, key(), "pi_doesnotexist0000", 100, "USD"))
    assert result.status == "failure"


def test_the_test_gateways_charge_reads_its_books_in_one_statement(make_site, monkeypatch):
    """The test gateway's charge: the card's behaviour and an earlier operation of the key in one
    read, then the insert (was: a lookup, a read of the card, the insert); a repeated key answers the
    first result, a declining card declines, a token not on file fails with 3008 as before."""
    site = make_site()
    under = Under("chargebee", gateways.for_site(site.app.gateways, site.app.db.read_sync(
        lambda tx: sites.load(tx, site.pk))), site, CARDS["chargebee"])
    good, declines = under.store(under.cards.good).token, under.store(under.cards.declines).token
    reads: list[str] = []
    one = txmod.Tx.one

    def counting(self, stmt, params=None):  # type: ignore[no-untyped-def]
        if params and params.get("site_id") == site.pk and "gateway_" in stmt.sql(self.dialect)[0]:
            words = stmt.sql(self.dialect)[0].split()
            reads.append(words[words.index("FROM") + 1])  # the table read first
        return one(self, stmt, params)

    monkeypatch.setattr(txmod.Tx, "one", counting)
    k = key()
    first = under.charge(k, good)
    assert first.ok and reads == ["gateway_vault"]  # one read (the vault joined with the operations)
    reads.clear()
    again = under.charge(k, good)
    assert again == first and reads == ["gateway_vault"]  # the key's first answer, found by the same read
    assert under.charge(key(), declines).error_code == "3001"
    reads.clear()
    unknown = under.charge(key(), "tok_not_on_file")
    assert (unknown.status, unknown.error_code) == ("failure", "3008")
    assert reads == ["gateway_vault", "gateway_operations", "gateway_vault"]  # no card: one by one, as before
    assert site.app.gateways["chargebee"].charge_count(site.pk) == 3
