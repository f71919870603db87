"""DESIGN.md "What must never happen", on the real SDK against the emulator: no outside input
ends, wedges or forks a customer; adoption takes over what Stripe has, ledger included."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.db import AsyncSession, Customer, Payment, SubscriptionRecord
from core.payloads import Cancel, Failure, Plan, Status
from core.settings import Settings
from core.state import StartSubscription
from tests.helpers import eventually
from tests.workflows.helpers import POLICY, lifecycle, order, ref, view_when
from workflows.subscription import SubscriptionWorkflow, workflow_id


async def rows(sessions: async_sessionmaker[AsyncSession], table: Any, user_id: str) -> list[Any]:
    async with sessions() as session:
        return list((await session.exec(select(table).where(table.user_id == user_id))).all())


async def a_dashboard_subscription(
    sdk: stripe.StripeClient, settings: Settings, user_id: str
) -> stripe.Subscription:
    """What an operator makes by hand in Stripe: a customer for the user, a card, a plan."""
    customer = await sdk.v1.customers.create_async(
        {"email": f"{user_id}@example.com", "metadata": {"user_id": user_id}}
    )
    card = await sdk.v1.payment_methods.attach_async("pm_card_visa", {"customer": customer.id})
    return await sdk.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": settings.stripe_price_pro_monthly}],
            "default_payment_method": card.id,
        }
    )


async def test_a_subscription_made_in_stripe_is_adopted_with_its_ledger(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
    settings: Settings,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = f"dash-{uuid.uuid4().hex[:6]}"
    sub = await a_dashboard_subscription(stripe_sdk, settings, user)
    customer_id = str(sub.customer)
    invoice = await stripe_sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert (sub.status, invoice.status) == ("active", "paid")  # Stripe charged the card

    queue = f"adopt-{uuid.uuid4()}"
    async with Worker(
        env.client, task_queue=queue, workflows=[SubscriptionWorkflow], activities=real_activities
    ):
        # What the webhook route does for a user with no running workflow: signal-with-start.
        handle = await env.client.start_workflow(
            SubscriptionWorkflow.run,
            StartSubscription(user_id=user, adopt_customer_id=customer_id, policy=POLICY),
            id=workflow_id(user),
            task_queue=queue,
            start_signal="stripe_event",
            start_signal_args=[
                ref("customer.subscription.created", sub.id, customer_id=customer_id)
            ],
        )
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert view.plan == Plan.PRO
        assert (view.stripe_subscription_id, view.stripe_customer_id) == (sub.id, customer_id)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

        [mapping] = await eventually(lambda: rows(db_sessions, Customer, user))
        assert mapping.stripe_customer_id == customer_id
        [record] = await eventually(lambda: rows(db_sessions, SubscriptionRecord, user))
        assert (record.stripe_subscription_id, record.status, record.plan) == (
            sub.id,
            "active",
            "pro",
        )
        [payment] = await eventually(lambda: rows(db_sessions, Payment, user))
        assert (payment.invoice_id, payment.kind, payment.amount_minor) == (
            invoice.id,
            "succeeded",
            invoice.amount_paid,
        )
        # Operators can steer it like any other customer.
        canceled = await handle.execute_update(
            SubscriptionWorkflow.cancel, Cancel(at_period_end=False)
        )
        assert canceled.status == Status.CANCELED
        assert (await handle.result()).status == Status.CANCELED


async def test_an_order_for_a_customer_stripe_already_bills_follows_it_never_a_second(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
    settings: Settings,
) -> None:
    user = f"twice-{uuid.uuid4().hex[:6]}"
    sub = await a_dashboard_subscription(stripe_sdk, settings, user)
    queue = f"twice-{uuid.uuid4()}"
    async with Worker(
        env.client, task_queue=queue, workflows=[SubscriptionWorkflow], activities=real_activities
    ):
        handle = await env.client.start_workflow(
            SubscriptionWorkflow.run, order(user_id=user), id=workflow_id(user), task_queue=queue
        )
        view = await view_when(handle, lambda v: v.stripe_subscription_id is not None)
        assert (view.stripe_subscription_id, view.status, view.plan) == (sub.id, "active", "pro")
        subs = await stripe_sdk.v1.subscriptions.list_async(
            {"customer": str(sub.customer), "status": "all"}
        )
        assert [s.id for s in subs.data] == [sub.id]


async def test_an_event_for_an_invoice_stripe_does_not_have_changes_nothing(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
) -> None:
    async with lifecycle(env, order(trial_days=14), real_activities) as handle:
        before = await handle.query(SubscriptionWorkflow.view)
        for type_ in ("invoice.payment_failed", "invoice.paid", "customer.subscription.updated"):
            await handle.signal(SubscriptionWorkflow.stripe_event, ref(type_, "in_gone_forever"))
        # A marker event after them: once it is handled, so were they.
        await handle.signal(
            SubscriptionWorkflow.stripe_event,
            ref("customer.subscription.updated", before.stripe_subscription_id or ""),
        )
        await env.sleep(timedelta(seconds=1))
        assert await handle.query(SubscriptionWorkflow.view) == before
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        # The customer is still steerable, and Stripe still has exactly one subscription.
        canceled = await handle.execute_update(
            SubscriptionWorkflow.cancel, Cancel(at_period_end=False)
        )
        assert canceled.status == Status.CANCELED
        subs = await stripe_sdk.v1.subscriptions.list_async(
            {"customer": before.stripe_customer_id or "", "status": "all"}
        )
        assert len(subs.data) == 1


async def test_a_non_ascii_user_id_cannot_wedge_an_activity(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
) -> None:
    # The HTTP API refuses such ids; a workflow started any other way must still work,
    # because idempotency keys (HTTP headers) are made ASCII whatever the ids.
    user = f"zoë-{uuid.uuid4().hex[:4]}"
    async with lifecycle(env, order(user_id=user), real_activities) as handle:
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.ACTIVE
        customer = await stripe_sdk.v1.customers.retrieve_async(view.stripe_customer_id or "")
        assert customer.metadata is not None
        assert customer.metadata["user_id"] == user


async def test_an_order_stripe_refuses_ends_the_run_as_canceled_not_failed(
    env: WorkflowEnvironment, real_activities: list[Callable[..., Any]]
) -> None:
    queue = f"refused-{uuid.uuid4()}"
    start = order(payment_method_id="pm_no_such_card")
    async with Worker(
        env.client, task_queue=queue, workflows=[SubscriptionWorkflow], activities=real_activities
    ):
        handle = await env.client.start_workflow(
            SubscriptionWorkflow.run, start, id=workflow_id(start.user_id), task_queue=queue
        )
        try:
            await handle.execute_update(SubscriptionWorkflow.subscription_ready)
        except WorkflowUpdateFailedError as err:
            assert isinstance(err.cause, ApplicationError)
            assert err.cause.type == Failure.INVALID_REQUEST
        else:
            raise AssertionError("Stripe refused the card: the order must fail")
        result = await handle.result()
        assert (result.status, result.stripe_subscription_id) == (Status.CANCELED, None)
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
