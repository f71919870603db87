"""Every Stripe activity, run with the real SDK over HTTP against the emulator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import stripe
from temporalio.exceptions import ApplicationError

from activities.stripe import StripeActivities, stripe_client
from core.payloads import (
    AttachPaymentMethod,
    CancelSubscription,
    ChangeSubscription,
    CreateSubscription,
    DateRange,
    DetachPaymentMethod,
    EnsureCustomer,
    Failure,
    Interval,
    MeterEvent,
    PayInvoice,
    Plan,
    ProrationBehavior,
    ReportUsage,
    ResumeSubscription,
    SetDefaultPaymentMethod,
)
from core.settings import Settings
from tests.activities.helpers import DAY, Run, customer_with_card, key
from tests.helpers import T0, advance, free_port


async def test_ensure_customer_creates_once_then_finds_by_user_id(
    acts: StripeActivities, run: Run
) -> None:
    user = f"user-ensure-{uuid.uuid4().hex[:6]}"
    req = EnsureCustomer(user_id=user, email="e1@example.com", name="Ada", idempotency_key=key())
    created = await run(acts.ensure_customer, req)
    assert created.id.startswith("cus_")
    assert created.user_id == user
    assert created.created
    # The same step again (its first answer lost with a crashed worker): found, and still
    # "created" by it, so the workflow does not take its own new subscription for another's.
    again = await run(acts.ensure_customer, req)
    assert again.id == created.id
    assert again.created
    # Another step (another key) finds the same customer through metadata.user_id: not made
    # by it, so the workflow looks for a live subscription before creating one.
    found = await run(acts.ensure_customer, req.model_copy(update={"idempotency_key": key()}))
    assert found.id == created.id
    assert not found.created


async def test_payment_methods_attach_default_detach(
    acts: StripeActivities, run: Run, stripe_sdk: stripe.StripeClient
) -> None:
    customer, pm = await customer_with_card(acts, run, "pm_card_mastercard")
    stored = await stripe_sdk.v1.customers.retrieve_async(customer)
    assert stored.invoice_settings is not None
    assert stored.invoice_settings.default_payment_method == pm
    detached = await run(
        acts.detach_payment_method, DetachPaymentMethod(payment_method_id=pm, idempotency_key=key())
    )
    assert detached.id == pm
    assert detached.card is not None
    assert detached.card.last4 == "4444"
    stored = await stripe_sdk.v1.customers.retrieve_async(customer)
    assert stored.invoice_settings is not None
    assert stored.invoice_settings.default_payment_method is None


@pytest.mark.parametrize(
    ("card", "decline"),
    [
        ("pm_card_visa_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_declined_card_is_a_non_retryable_card_declined(
    acts: StripeActivities, run: Run, card: str, decline: str
) -> None:
    customer = await run(
        acts.ensure_customer,
        EnsureCustomer(user_id=f"u-{uuid.uuid4()}", email="x@example.com", idempotency_key=key()),
    )
    with pytest.raises(ApplicationError) as err:
        await run(
            acts.attach_payment_method,
            AttachPaymentMethod(
                customer_id=customer.id, payment_method_id=card, idempotency_key=key()
            ),
        )
    assert err.value.type == Failure.CARD_DECLINED
    assert err.value.non_retryable
    assert err.value.details[0]["code"] == "card_declined"
    assert err.value.details[0]["decline_code"] == decline


async def test_invalid_request_is_non_retryable_with_stripes_code(
    acts: StripeActivities, run: Run
) -> None:
    with pytest.raises(ApplicationError) as err:
        await run(acts.get_subscription, "sub_doesnotexist")
    assert err.value.type == Failure.INVALID_REQUEST
    assert err.value.non_retryable
    assert err.value.details[0]["code"] == "resource_missing"
    assert err.value.details[0]["http_status"] == 404


@pytest.mark.parametrize(
    ("status", "error"), [(429, stripe.RateLimitError), (500, stripe.APIError)]
)
async def test_rate_limits_and_5xx_are_left_to_temporal(
    acts: StripeActivities,
    run: Run,
    emulator: httpx.AsyncClient,
    status: int,
    error: type[Exception],
) -> None:
    await emulator.post(
        "/_emulator/faults", json={"method": "GET", "path": "/v1/subscriptions/", "status": status}
    )
    with pytest.raises(error) as err:
        await run(acts.get_subscription, "sub_whatever")
    assert not isinstance(err.value, ApplicationError)  # retryable by the activity's retry policy


async def test_connection_errors_are_left_to_temporal(settings: Settings, run: Run) -> None:
    nowhere = settings.model_copy(update={"stripe_api_base": f"http://127.0.0.1:{free_port()}"})
    async with stripe_client(nowhere) as client:
        acts = StripeActivities(client, nowhere)
        with pytest.raises(stripe.APIConnectionError):
            await run(acts.get_invoice, "in_whatever")


async def test_subscription_with_trial(
    acts: StripeActivities, run: Run, settings: Settings
) -> None:
    customer, pm = await customer_with_card(acts, run)
    sub = await run(
        acts.create_subscription,
        CreateSubscription(
            customer_id=customer,
            user_id="u-trial",
            plan=Plan.PRO,
            interval=Interval.YEARLY,
            trial_days=14,
            payment_method_id=pm,
            idempotency_key=key(),
        ),
    )
    assert (sub.status, sub.plan, sub.interval, sub.price_id) == (
        "trialing",
        Plan.PRO,
        Interval.YEARLY,
        settings.stripe_price_pro_yearly,
    )
    assert sub.trial_end is not None
    assert sub.current_period_end == sub.trial_end
    assert sub.default_payment_method == pm


async def test_first_payment_failure_then_recovery_by_paying_the_invoice(
    acts: StripeActivities, run: Run
) -> None:
    customer, _ = await customer_with_card(acts, run, "pm_card_chargeCustomerFail")
    sub = await run(
        acts.create_subscription,
        CreateSubscription(
            customer_id=customer, user_id="u-fail", plan=Plan.STARTER, idempotency_key=key()
        ),
    )
    assert sub.status == "incomplete"
    assert sub.latest_invoice_id is not None
    invoice = await run(acts.get_invoice, sub.latest_invoice_id)
    assert (invoice.status, invoice.attempt_count, invoice.subscription_id, invoice.amount_due) == (
        "open",
        1,
        sub.id,
        2_900,
    )
    with pytest.raises(ApplicationError) as err:
        await run(acts.pay_invoice, PayInvoice(invoice_id=invoice.id, idempotency_key=key()))
    assert err.value.type == Failure.CARD_DECLINED
    visa = await run(
        acts.attach_payment_method,
        AttachPaymentMethod(
            customer_id=customer, payment_method_id="pm_card_visa", idempotency_key=key()
        ),
    )
    await run(
        acts.set_default_payment_method,
        SetDefaultPaymentMethod(
            customer_id=customer,
            payment_method_id=visa.id,
            subscription_id=sub.id,
            idempotency_key=key(),
        ),
    )
    paid = await run(acts.pay_invoice, PayInvoice(invoice_id=invoice.id, idempotency_key=key()))
    # Stripe counts only its automatic retries after the first attempt, never `invoice.pay`.
    assert (paid.status, paid.amount_paid, paid.attempt_count) == ("paid", 2_900, 1)
    assert (await run(acts.get_subscription, sub.id)).status == "active"


async def test_change_cancel_resume_and_cancel_now(acts: StripeActivities, run: Run) -> None:
    customer, _ = await customer_with_card(acts, run)
    sub = await run(
        acts.create_subscription,
        CreateSubscription(
            customer_id=customer, user_id="u-change", plan=Plan.STARTER, idempotency_key=key()
        ),
    )
    assert sub.status == "active"
    changed = await run(
        acts.change_subscription,
        ChangeSubscription(
            subscription_id=sub.id,
            plan=Plan.ENTERPRISE,
            interval=Interval.MONTHLY,
            proration_behavior=ProrationBehavior.NONE,
            idempotency_key=key(),
        ),
    )
    assert (changed.plan, changed.interval) == (Plan.ENTERPRISE, Interval.MONTHLY)
    scheduled = await run(
        acts.cancel_subscription,
        CancelSubscription(subscription_id=sub.id, at_period_end=True, idempotency_key=key()),
    )
    assert scheduled.cancel_at_period_end
    assert scheduled.status == "active"
    resumed = await run(
        acts.resume_subscription, ResumeSubscription(subscription_id=sub.id, idempotency_key=key())
    )
    assert not resumed.cancel_at_period_end
    cancel = CancelSubscription(subscription_id=sub.id, at_period_end=False, idempotency_key=key())
    canceled = await run(acts.cancel_subscription, cancel)
    assert canceled.status == "canceled"
    assert canceled.canceled_at is not None
    # A retried cancel (DELETE carries no idempotency at Stripe) answers the same state.
    assert (await run(acts.cancel_subscription, cancel)).status == "canceled"


async def test_interval_change_bills_now(acts: StripeActivities, run: Run) -> None:
    customer, _ = await customer_with_card(acts, run)
    sub = await run(
        acts.create_subscription,
        CreateSubscription(
            customer_id=customer, user_id="u-int", plan=Plan.STARTER, idempotency_key=key()
        ),
    )
    yearly = await run(
        acts.change_subscription,
        ChangeSubscription(
            subscription_id=sub.id,
            plan=Plan.STARTER,
            interval=Interval.YEARLY,
            idempotency_key=key(),
        ),
    )
    assert yearly.interval == Interval.YEARLY
    assert yearly.latest_invoice_id is not None
    assert yearly.latest_invoice_id != sub.latest_invoice_id
    invoice = await run(acts.get_invoice, yearly.latest_invoice_id)
    assert invoice.status == "paid"
    assert invoice.billing_reason == "subscription_update"
    assert yearly.current_period_end is not None
    assert yearly.current_period_start is not None
    assert yearly.current_period_end - yearly.current_period_start >= timedelta(days=365)


async def test_report_usage_counts_each_identifier_once(
    acts: StripeActivities, run: Run, stripe_sdk: stripe.StripeClient
) -> None:
    customer, _ = await customer_with_card(acts, run)
    now = datetime.now(UTC)
    events = [
        MeterEvent(
            event_name="leads_generated", customer_id=customer, value=v, timestamp=now, identifier=i
        )
        for i, v in (("lead-a", 3), ("lead-b", 4))
    ]
    assert (await run(acts.report_usage, ReportUsage(events=events))).sent == 2
    await run(acts.report_usage, ReportUsage(events=events[:1]))  # a retried batch
    meter = next(
        m
        for m in (await stripe_sdk.v1.billing.meters.list_async()).data
        if m.event_name == "leads_generated"
    )
    summary = await stripe_sdk.v1.billing.meters.event_summaries.list_async(
        meter.id,
        {
            "customer": customer,
            "start_time": int(now.timestamp()) - 60,
            "end_time": int(now.timestamp()) + 60,
        },
    )
    assert summary.data[0].aggregated_value == 7


async def test_listing_paid_invoices_and_charges_follows_every_page(
    acts: StripeActivities, run: Run, stripe_sdk: stripe.StripeClient
) -> None:
    clock = await stripe_sdk.v1.test_helpers.test_clocks.create_async(
        {"frozen_time": T0 - 400 * DAY * 9}
    )
    customer = await stripe_sdk.v1.customers.create_async(
        {"email": "p@example.com", "test_clock": clock.id}
    )
    pm = await stripe_sdk.v1.payment_methods.attach_async("pm_card_visa", {"customer": customer.id})
    await stripe_sdk.v1.customers.update_async(
        customer.id, {"invoice_settings": {"default_payment_method": pm.id}}
    )
    settings = acts._settings
    await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": settings.stripe_price_starter_monthly}]}
    )
    start = datetime.fromtimestamp(clock.frozen_time, UTC)
    await advance(stripe_sdk, clock.id, clock.frozen_time + 3_200 * DAY)  # about 105 renewals
    window = DateRange(start=start, end=start + timedelta(days=3_200))
    invoices = await run(acts.list_paid_invoices, window)
    mine = [i for i in invoices if i.customer_id == customer.id]
    assert len(mine) == 106
    assert len({i.id for i in mine}) == 106  # more than one page of 100
    assert all(i.status == "paid" for i in mine)
    assert all(i.amount_paid == 2_900 for i in mine)
    charges = [c for c in await run(acts.list_charges, window) if c.customer_id == customer.id]
    assert len(charges) == 106
    assert sum(c.amount for c in charges) == 106 * 2_900


# --- retries through a real Temporal server ---------------------------------------------------


async def test_find_subscription_reads_the_real_sdk_objects(
    acts: StripeActivities, run: Run
) -> None:
    # A customer made with user metadata, its live subscription and what Stripe was paid.
    customer, _ = await customer_with_card(acts, run)
    nothing = await run(acts.find_subscription, customer)
    assert nothing.subscription is None
    assert nothing.paid_invoices == []
    assert nothing.customer.user_id.startswith("user-")  # read with the SDK's accessors
    sub = await run(
        acts.create_subscription,
        CreateSubscription(
            customer_id=customer, user_id="u-find", plan=Plan.PRO, idempotency_key=key()
        ),
    )
    found = await run(acts.find_subscription, customer)
    assert found.subscription is not None
    assert (found.subscription.id, found.subscription.plan) == (sub.id, Plan.PRO)
    [paid] = found.paid_invoices
    assert (paid.id, paid.status) == (sub.latest_invoice_id, "paid")
    assert paid.amount_paid == found.subscription.amount_minor
    # Ended subscriptions are not live: nothing to adopt once it is canceled.
    cancel = CancelSubscription(subscription_id=sub.id, at_period_end=False, idempotency_key=key())
    await run(acts.cancel_subscription, cancel)
    after = await run(acts.find_subscription, customer)
    assert after.subscription is None
    assert after.paid_invoices == []
    # A customer Stripe does not have is a typed, non-retryable failure.
    with pytest.raises(ApplicationError) as missing:
        await run(acts.find_subscription, "cus_not_in_this_account")
    assert missing.value.type == Failure.INVALID_REQUEST
    assert missing.value.non_retryable
