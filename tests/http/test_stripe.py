"""A site with ``gateway=stripe`` runs the collect story through Stripe's API (localstripe here,
tests.support.stripe_fake): cards stored as Stripe Customers + PaymentMethods, a subscription
paid on creation and at renewal, a declining card into dunning, 3D Secure on an off-session
charge, refunds - every charge a PaymentIntent keyed by billhive's transaction id."""

from __future__ import annotations

import asyncio

import pytest

from billhive import sites
from billhive.services import payments
from billhive.store.resources import INVOICES, TRANSACTIONS
from tests.support.subs import DAY, invoices, plan, start, travel, ts, types

FEB_1 = ts(2026, 2, 1)
GOOD = "4242424242424242"
DECLINES = "4000000000000341"  # attaches; every charge declined (https://docs.stripe.com/testing)
NEEDS_3DS = "4000002760003184"  # "authentication required" on every payment


@pytest.fixture
def ssite(stripe_site):
    start(stripe_site)
    plan(stripe_site)
    return stripe_site


def card(number: str = GOOD, prefix: str = "card") -> dict:
    return {f"{prefix}[number]": number, f"{prefix}[expiry_month]": 12, f"{prefix}[expiry_year]": 2040,
            f"{prefix}[cvv]": "123"}


def subscribe_with_card(site, number: str = GOOD, customer_id: str = "ada") -> dict:
    return site.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": customer_id,
                                            "customer[email]": f"{customer_id}@example.com", **card(number)}).body


def txns(site, invoice_id: str) -> list[dict]:
    return [t["transaction"] for t in site.api.get(f"/invoices/{invoice_id}/transactions").body["list"]]


def test_a_card_is_stored_at_stripe_and_only_its_reference_kept(ssite, stripe_fake):
    body = ssite.api.post("/customers", {"id": "ada", "first_name": "Ada", "card[first_name]": "Ada", **card()}).body
    c = body["card"]
    assert c["gateway"] == "stripe" and c["last4"] == "4242" and c["card_type"] == "visa"
    assert (c["expiry_month"], c["expiry_year"]) == (12, 2040) and c["masked_number"] == "************4242"
    customer_ref, _, method_ref = c["reference_id"].partition("/")  # cus_.../pm_..., as Chargebee shows Stripe cards
    assert customer_ref.startswith("cus_") and method_ref.startswith("pm_")
    assert body["customer"]["payment_method"] == {"type": "card", "gateway": "stripe", "status": "valid",
                                                  "reference_id": c["reference_id"]}
    at_stripe = stripe_fake.http.get(f"/v1/customers/{customer_ref}").json()
    assert at_stripe["metadata"] == {"billhive_site": str(ssite.pk)} and at_stripe["name"] == "Ada"


def test_a_tmp_token_from_stripe_is_stored_without_card_details(ssite, stripe_fake):
    # card[tmp_token]: "The single-use card token returned by vaults like Stripe ... there is no need
    # to specify other card details" (the spec, update_card_for_a_customer)
    tok = stripe_fake.http.post("/v1/tokens", data={"card[number]": "5555555555554444", "card[exp_month]": 7,
                                                   "card[exp_year]": 2041, "card[cvc]": "123"}).json()
    c = ssite.api.post("/customers", {"id": "tok", "card[tmp_token]": tok["id"]}).body["card"]
    assert c["last4"] == "4444" and (c["expiry_month"], c["expiry_year"]) == (7, 2041)
    assert c["iin"] == "******"  # Stripe does not tell a token's first six digits; the spec wants six characters
    assert c["reference_id"].startswith("cus_") and "/card_" in c["reference_id"]
    pm = stripe_fake.http.post("/v1/payment_methods", data={"type": "card", "card[number]": GOOD,
                                                            "card[exp_month]": 3, "card[exp_year]": 2042,
                                                            "card[cvc]": "123"}).json()
    c = ssite.api.post("/customers/tok/credit_card", {"tmp_token": pm["id"]}).body["card"]
    assert c["reference_id"].endswith("/" + pm["id"]) and c["expiry_year"] == 2042
    inv = ssite.api.post("/invoices", {"customer_id": "tok", "charges[amount][0]": 700,
                                       "charges[description][0]": "Setup"}).body["invoice"]
    assert inv["status"] == "paid"


def own_ids(site) -> set[str]:
    """This site's transaction ids: the Stripe fake is shared by the session and site pks repeat
    across the stores' fresh databases, so a test counts only what its own transactions made."""
    return {t["transaction"]["id"] for t in site.api.get("/transactions", {"limit": 100}).body["list"]}


def own(by_key: dict, site) -> dict:
    ids = own_ids(site)
    return {k: v for k, v in by_key.items() if k in ids}


def test_a_card_stripe_declines_is_refused_and_nothing_kept(ssite):
    err = ssite.api.post("/customers", {"id": "bad", **card("4000000000000002")}, expect=400).body
    assert err["api_error_code"] == "payment_method_verification_failed" and err["param"] == "card[number]"
    assert "card_declined" in err["message"]
    ssite.api.get("/customers/bad", expect=404)


def test_subscription_paid_at_once_then_renewal_collected_through_stripe(ssite, stripe_fake):
    body = subscribe_with_card(ssite)
    assert body["invoice"]["status"] == "paid"
    sub = body["subscription"]
    travel(ssite, FEB_1 + 60)
    first, second = invoices(ssite, sub["id"])
    assert second["status"] == "paid" and second["start_date"] == FEB_1
    paid = [txns(ssite, inv["id"])[0] for inv in (first, second)]
    charged = own(stripe_fake.charges_by_key(ssite.pk), ssite)
    assert {t["id"]: ["succeeded"] for t in paid} == charged  # one PaymentIntent per transaction, keyed by its id
    for t in paid:
        assert t["gateway"] == "stripe" and t["status"] == "success" and t["id_at_gateway"].startswith("pi_")
    intents = {p["id"]: p for p in stripe_fake.intents(ssite.pk)}
    assert [intents[t["id_at_gateway"]]["amount"] for t in paid] == [1000, 1000]
    assert types(ssite).count("payment_succeeded") == 2


def test_a_declined_signup_creates_nothing_and_a_declined_renewal_goes_into_dunning(ssite, stripe_fake):
    # a signup whose first charge Stripe declines: nothing is created (Chargebee: 400 payment_processing_failed)
    err = ssite.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": "dee", "customer[email]": "d@x.org",
                                            **card(DECLINES)}, expect=400).body
    assert err["api_error_code"] == "payment_processing_failed" and "card_declined" in err["message"]
    assert ssite.api.get("/subscriptions").body == {"list": []} and ssite.api.get("/invoices").body == {"list": []}
    # a renewal Stripe declines: dunning, with Stripe's code on the failed transaction
    sub = subscribe_with_card(ssite)["subscription"]
    ssite.api.post(f"/customers/{sub['customer_id']}/credit_card",
                   {"number": DECLINES, "expiry_month": 12, "expiry_year": 2040, "cvv": "123"})
    travel(ssite, FEB_1 + 60)
    inv = invoices(ssite, sub["id"])[-1]
    assert inv["status"] == "payment_due" and inv["dunning_status"] == "in_progress"
    (txn,) = txns(ssite, inv["id"])
    # Chargebee's failed payment: status failure, the gateway's code and message on the transaction
    assert txn["status"] == "failure" and txn["error_code"] == "card_declined" and txn["error_text"]
    travel(ssite, FEB_1 + DAY + 60)  # the first retry charges Stripe again, with a new key
    retried = txns(ssite, inv["id"])
    assert len(retried) == 2
    assert [v for k, v in stripe_fake.charges_by_key(ssite.pk).items() if k in {t["id"] for t in retried}] == \
        [["requires_payment_method"]] * 2
    assert types(ssite).count("payment_failed") == 2


def test_off_session_3ds_fails_the_payment(ssite, stripe_fake):
    # Chargebee: off-session (merchant-initiated) charges are mostly exempt from SCA; when the bank
    # still asks for 3DS the payment fails ("we are ramping up our dunning and email notification
    # settings to notify existing customers about the 3DS authentication" -
    # https://support.chargebee.com/support/solutions/articles/240876-what-is-the-fallback-mechanism-how-is-it-used-).
    # Stripe answers such a charge requires_action (or authentication_required); billhive cancels it
    # there, so it cannot complete behind its back. At signup the charge comes first, so nothing is
    # created; on a renewal it goes into dunning like any failed charge.
    before = {p["id"] for p in stripe_fake.intents(ssite.pk)}
    err = ssite.api.post("/subscriptions", {"plan_id": "basic", "customer[id]": "tds", "customer[email]": "t@x.org",
                                            **card(NEEDS_3DS)}, expect=400).body
    assert err["api_error_code"] == "payment_processing_failed" and "3D Secure" in err["message"]
    assert "authentication_required" in err["message"] and ssite.api.get("/subscriptions").body == {"list": []}
    (intent,) = [p for p in stripe_fake.intents(ssite.pk) if p["id"] not in before]
    assert intent["status"] == "canceled"


def test_refunds_partial_then_full_go_to_stripe(ssite, stripe_fake):
    inv = subscribe_with_card(ssite)["invoice"]
    r = ssite.api.post(f"/invoices/{inv['id']}/refund", {"refund_amount": 300}).body
    assert r["transaction"]["status"] == "success" and r["transaction"]["gateway"] == "stripe"
    r2 = ssite.api.post(f"/invoices/{inv['id']}/refund").body
    assert r2["transaction"]["amount"] == 700
    refunds = [x for x in stripe_fake.refunds(ssite.pk)
                if x["metadata"]["billhive_key"] in own_ids(ssite)]  # the fake is shared, site pks repeat
    assert sorted(x["amount"] for x in refunds) == [300, 700]
    assert {x["metadata"]["billhive_key"] for x in refunds} == {r["transaction"]["id"], r2["transaction"]["id"]}
    assert {x["id"] for x in refunds} == {r["transaction"]["id_at_gateway"], r2["transaction"]["id_at_gateway"]}


def test_recovery_settles_an_unanswered_charge_from_stripe_without_charging_again(ssite, stripe_fake):
    """The answer of a charge is lost (billhive died, or the network): the transaction is left
    in_progress; recovery finds the PaymentIntent by its key and settles from it."""
    inv = subscribe_with_card(ssite)["invoice"]
    (txn,) = txns(ssite, inv["id"])

    def unsettle(tx):  # what billhive's books hold between the charge and its settlement
        t = TRANSACTIONS.require(tx, ssite.pk, txn["id"])
        t["status"] = "in_progress"
        TRANSACTIONS.save(tx, ssite.pk, t, 0)
        i = INVOICES.require(tx, ssite.pk, inv["id"])
        i.update({"status": "payment_due", "amount_paid": 0, "amount_due": i["amount_paid"] + i["amount_due"]})
        i.pop("paid_on", None)
        INVOICES.update(tx, ssite.pk, i, 0)
    ssite.app.db.write_sync(unsettle)
    assert asyncio.run(payments.recover_site(ssite.app, ssite.pk)) == 1
    assert ssite.api.get(f"/invoices/{inv['id']}")["invoice"]["status"] == "paid"
    assert own(stripe_fake.charges_by_key(ssite.pk), ssite) == {txn["id"]: ["succeeded"]}


def test_site_show_never_prints_the_secret_key(ssite):
    shown = ssite.app.db.read_sync(lambda tx: sites.describe(tx, sites.load(tx, ssite.pk)))
    assert shown["settings"]["gateway"] == "stripe"
    assert shown["settings"]["stripe_secret_key"] == "sk_test_…0000"
    assert "sk_test_billhivefake0000" not in repr(shown)


def test_gateway_settings_are_checked_together(ssite, live_site):
    with pytest.raises(Exception, match="secret key"):
        ssite.setting(stripe_secret_key="")
    with pytest.raises(Exception, match="test sites only"):
        live_site.setting(gateway="chargebee")
    live_site.setting(gateway="stripe", stripe_secret_key="sk_live_abcdefghijklmnop")
    assert live_site.app.db.read_sync(lambda tx: sites.load(tx, live_site.pk)).setting("gateway") == "stripe"
