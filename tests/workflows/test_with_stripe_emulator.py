"""The lifecycle with the real Stripe activities (SDK over HTTP to the emulator) and real SMTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import stripe
from temporalio.testing import WorkflowEnvironment

from core.payloads import SetPaymentMethod, Status
from tests.helpers import Inbox, eventually
from tests.workflows.helpers import POLICY, lifecycle, order
from workflows.subscription import SubscriptionWorkflow


async def test_declined_first_payment_recovers_with_a_new_card(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
    smtp_sink: tuple[Inbox, int],
) -> None:
    inbox, _ = smtp_sink
    async with lifecycle(
        env, order(payment_method_id="pm_card_chargeCustomerFail"), real_activities
    ) as handle:
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.PAST_DUE
        assert view.failed_payment_attempts == 1
        sub = await stripe_sdk.v1.subscriptions.retrieve_async(view.stripe_subscription_id or "")
        assert sub.status == "incomplete"
        await eventually(lambda: len(inbox.of_kind("payment_failed")) == 1)
        customer = await stripe_sdk.v1.customers.retrieve_async(view.stripe_customer_id or "")
        assert customer.metadata is not None
        assert customer.metadata["user_id"] == view.user_id

        card = await handle.execute_update(
            SubscriptionWorkflow.set_payment_method,
            SetPaymentMethod(payment_method_id="pm_card_visa"),
        )
        assert card.card is not None
        assert card.card.last4 == "4242"
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.ACTIVE
        assert view.failed_payment_attempts == 0
        sub = await stripe_sdk.v1.subscriptions.retrieve_async(view.stripe_subscription_id or "")
        assert sub.status == "active"
        assert sub.default_payment_method == card.id
        invoice = await stripe_sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
        assert (invoice.status, invoice.attempt_count) == ("paid", 1)  # our retry is manual
        await eventually(lambda: len(inbox.of_kind("receipt")) == 1)
        [receipt] = inbox.of_kind("receipt")
        assert "29.00 USD" in receipt["Subject"]


async def test_three_declines_cancel_the_stripe_subscription(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
    smtp_sink: tuple[Inbox, int],
) -> None:
    inbox, _ = smtp_sink
    async with lifecycle(
        env, order(payment_method_id="pm_card_chargeCustomerFail"), real_activities
    ) as handle:
        subscription_id = (
            await handle.query(SubscriptionWorkflow.view)
        ).stripe_subscription_id or ""
        await env.sleep(sum(POLICY.retry_delays, timedelta()) + timedelta(hours=1))
        result = await handle.result()
        assert result.status == Status.CANCELED
        assert result.failed_payment_attempts == 3
        sub = await stripe_sdk.v1.subscriptions.retrieve_async(subscription_id)
        assert sub.status == "canceled"
        invoice = await stripe_sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
        # Stripe counted the first attempt only: the workflow counted its own two retries.
        assert invoice.attempt_count == 1
        assert [len(inbox.of_kind(k)) for k in ("payment_failed", "final_notice")] == [2, 1]
