"""The ledger a customer's life leaves behind, with every activity forced to run twice."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from activities.store import StoreActivities
from core.db import AsyncSession, Customer, Payment, SubscriptionRecord
from core.payloads import Status
from tests.helpers import eventually
from tests.workflows.fakes import FakeMailbox, FakeStripe
from tests.workflows.helpers import POLICY, order, ref, view_when
from workflows.subscription import SubscriptionWorkflow, workflow_id


class RetryEveryActivityOnce(Interceptor):
    """Each activity does its work, then its first attempt fails: Temporal runs it again."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _FailFirstAttempt(next)


class _FailFirstAttempt(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        if activity.info().attempt == 1:
            raise RuntimeError("forced retry: the work was done, the answer was lost")
        return result


async def test_trial_renewal_three_failures_and_cancellation_leave_one_row_each(
    env: WorkflowEnvironment, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    stripe, mail = FakeStripe(clock=env.get_current_time), FakeMailbox()
    start = order(trial_days=14)
    queue = f"ledger-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[SubscriptionWorkflow],
        activities=[*stripe.activities(), mail.send_email, StoreActivities(db_sessions).record],
        interceptors=[RetryEveryActivityOnce()],
    ):
        handle = await env.client.start_workflow(
            SubscriptionWorkflow.run, start, id=workflow_id(start.user_id), task_queue=queue
        )
        await handle.execute_update(SubscriptionWorkflow.subscription_ready)
        await env.sleep(timedelta(days=14, hours=2))
        paid_trial = stripe.end_trial(paid=True)
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("invoice.paid", paid_trial))
        await view_when(handle, lambda v: v.status == Status.ACTIVE)
        renewal = stripe.renew(paid=True)
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("invoice.paid", renewal))
        await eventually(lambda: mail.kinds().count("receipt") == 2)
        failing = stripe.renew(paid=False)
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.payment_failed", failing)
        )
        await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        await env.sleep(sum(POLICY.retry_delays, timedelta()) + timedelta(hours=1))
        result = await handle.result()
    assert result.status == Status.CANCELED

    async with db_sessions() as session:
        payments = (await session.exec(select(Payment).order_by(Payment.id))).all()  # type: ignore[arg-type]  # SQLModel types Payment.id as int | None
        [subscription] = (await session.exec(select(SubscriptionRecord))).all()
        customers = (await session.exec(select(Customer))).all()
    assert [(p.kind, p.invoice_id, p.attempt, p.amount_minor) for p in payments] == [
        ("succeeded", paid_trial, 1, 2_900),
        ("succeeded", renewal, 1, 2_900),
        ("failed", failing, 1, 2_900),
        ("failed", failing, 2, 2_900),
        ("failed", failing, 3, 2_900),
    ]
    assert not any(p.recovered for p in payments)
    assert (subscription.status, subscription.dunning_attempt, subscription.plan) == (
        "canceled",
        3,
        "starter",
    )
    assert subscription.canceled_at is not None
    assert subscription.user_id == start.user_id
    assert [(c.user_id, c.stripe_customer_id) for c in customers] == [
        (start.user_id, f"cus_{start.user_id}")
    ]
    assert mail.kinds() == [
        "trial_ending",
        "receipt",
        "receipt",
        "payment_failed",
        "payment_failed",
        "final_notice",
    ]
    # The retried Stripe writes were answered from their idempotency keys: one subscription,
    # one charge per attempt.
    assert stripe.names().count("create_subscription") == 1
    assert stripe.names().count("ensure_customer") == 2  # a read: it simply ran again
    assert [inv["attempts"] for inv in stripe.invoices.values()] == [1, 1, 3]
