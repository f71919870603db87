"""The Stripe activities decline-aware dunning reads, on the real SDK against the emulator: why
an invoice's payment failed (its PaymentIntent), a customer's default card, a card's expiry, a
charge's refunds and the invoice it paid."""

from __future__ import annotations

import httpx
import pytest
import stripe
from temporalio.exceptions import ApplicationError

from activities.stripe import StripeActivities
from core.declines import DeclineKind, kind_of
from core.payloads import CreateSubscription, Failure, PayInvoice, Plan
from tests.activities.helpers import Run, customer_with_card, key


async def subscribe(acts: StripeActivities, run: Run, customer: str, pm: str) -> str:
    """A pro/monthly subscription; its first invoice's id."""
    sub = await run(
        acts.create_subscription,
        CreateSubscription(
            customer_id=customer,
            user_id="u",
            plan=Plan.PRO,
            payment_method_id=pm,
            idempotency_key=key(),
        ),
    )
    assert sub.latest_invoice_id is not None
    return sub.latest_invoice_id


@pytest.mark.parametrize(
    ("decline", "code", "decline_code", "kind"),
    [
        ("insufficient_funds", "card_declined", "insufficient_funds", DeclineKind.SOFT),
        ("lost_card", "card_declined", "lost_card", DeclineKind.HARD),
        # Stripe gives these as error codes of their own, with no decline code at all.
        ("expired_card", "expired_card", None, DeclineKind.HARD),
        ("processing_error", "processing_error", None, DeclineKind.SOFT),
    ],
)
async def test_get_invoice_says_why_its_payment_failed(
    acts: StripeActivities,
    run: Run,
    emulator: httpx.AsyncClient,
    decline: str,
    code: str,
    decline_code: str | None,
    kind: DeclineKind,
) -> None:
    customer, pm = await customer_with_card(acts, run)
    forced = await emulator.post(
        f"/_emulator/customers/{customer}/declines", json={"decline_code": decline}
    )
    assert forced.status_code == 200
    invoice_id = await subscribe(acts, run, customer, pm)
    inv = await run(acts.get_invoice, invoice_id)
    assert (inv.status, inv.attempt_count, inv.requires_action) == ("open", 1, False)
    assert inv.hosted_invoice_url and inv.hosted_invoice_url.endswith(invoice_id)
    error = inv.last_payment_error
    assert error is not None
    assert (error.code, error.decline_code) == (code, decline_code)
    assert error.message
    assert error.payment_method == pm
    assert kind_of(error, inv.requires_action) == kind
    # A retry of ours is declined the same way, and Stripe does not count it as an attempt.
    with pytest.raises(ApplicationError) as err:
        await run(acts.pay_invoice, PayInvoice(invoice_id=invoice_id, idempotency_key=key()))
    assert err.value.type == Failure.CARD_DECLINED
    assert (await run(acts.get_invoice, invoice_id)).attempt_count == 1


async def test_get_invoice_of_a_payment_waiting_for_authentication(
    acts: StripeActivities, run: Run
) -> None:
    customer, pm = await customer_with_card(acts, run, "pm_card_authenticationRequired")
    invoice_id = await subscribe(acts, run, customer, pm)
    inv = await run(acts.get_invoice, invoice_id)
    assert (inv.status, inv.requires_action) == ("open", True)
    assert inv.last_payment_error is not None
    assert kind_of(inv.last_payment_error, inv.requires_action) == DeclineKind.AUTHENTICATION
    assert inv.hosted_invoice_url is not None
    async with httpx.AsyncClient() as http:  # the customer authenticates on Stripe's page
        assert (await http.post(inv.hosted_invoice_url, json={})).status_code == 200
    paid = await run(acts.get_invoice, invoice_id)
    assert (paid.status, paid.requires_action, paid.last_payment_error) == ("paid", False, None)


async def test_get_customer_and_payment_method(
    acts: StripeActivities, run: Run, stripe_sdk: stripe.StripeClient
) -> None:
    customer, pm = await customer_with_card(acts, run, "pm_card_mastercard")
    found = await run(acts.get_customer, customer)
    assert (found.id, found.default_payment_method) == (customer, pm)
    assert found.user_id.startswith("user-")
    card = await run(acts.get_payment_method, pm)
    assert card.card is not None
    assert (card.card.brand, card.card.last4) == ("mastercard", "4444")
    # A card from its number, with the expiry given (Stripe's raw card API, test numbers).
    raw = await stripe_sdk.v1.payment_methods.create_async(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 3, "exp_year": 2031, "cvc": "123"},
        }
    )
    info = await run(acts.get_payment_method, raw.id)
    assert info.card is not None
    assert (info.card.exp_month, info.card.exp_year) == (3, 2031)
    with pytest.raises(ApplicationError) as err:
        await run(acts.get_customer, "cus_nobody")
    assert err.value.type == Failure.INVALID_REQUEST


async def test_get_charge_refunds_with_the_invoice_it_paid(
    acts: StripeActivities, run: Run, stripe_sdk: stripe.StripeClient
) -> None:
    customer, pm = await customer_with_card(acts, run)
    invoice_id = await subscribe(acts, run, customer, pm)
    [charge] = (await stripe_sdk.v1.charges.list_async({"customer": customer})).data
    empty = await run(acts.get_charge_refunds, charge.id)
    assert (empty.invoice_id, empty.customer_id, empty.refunds) == (invoice_id, customer, [])
    first = await stripe_sdk.v1.refunds.create_async({"charge": charge.id, "amount": 1_000})
    second = await stripe_sdk.v1.refunds.create_async({"charge": charge.id})
    refunds = await run(acts.get_charge_refunds, charge.id)
    assert [(r.id, r.amount, r.status) for r in refunds.refunds] == [
        (first.id, 1_000, "succeeded"),
        (second.id, 9_900 - 1_000, "succeeded"),
    ]
    assert refunds.currency == "usd"
