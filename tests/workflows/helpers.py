"""Builders for the workflow tests (and the year benchmark): an order, a running lifecycle."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.payloads import Interval, Plan, StripeEventRef, SubscriptionView
from core.policy import DunningPolicy
from core.state import StartSubscription
from tests.helpers import eventually
from tests.workflows.fakes import FakeMailbox, FakeStore, FakeStripe
from workflows.subscription import SubscriptionWorkflow, workflow_id

POLICY = DunningPolicy(
    retry_delays=[timedelta(days=2), timedelta(days=3)],
    max_failures=3,
    trial_reminder_before=timedelta(days=3),
    update_payment_method_url="https://app.salesflow.test/billing/card",
)
# The recorded histories `test_replay.py` replays and `record_histories.py` writes.
HISTORIES = Path(__file__).resolve().parent.parent / "histories"

Handle = WorkflowHandle[SubscriptionWorkflow, SubscriptionView]


def order(**overrides: Any) -> StartSubscription:
    user = overrides.pop("user_id", f"user-{uuid.uuid4().hex[:8]}")
    return StartSubscription(
        user_id=user,
        email=f"{user}@example.com",
        name="Ada Lovelace",
        plan=overrides.pop("plan", Plan.STARTER),
        interval=overrides.pop("interval", Interval.MONTHLY),
        trial_days=overrides.pop("trial_days", 0),
        payment_method_id=overrides.pop("payment_method_id", "pm_card_visa"),
        policy=overrides.pop("policy", POLICY),
        **overrides,
    )


def ref(
    type_: str, object_id: str, event_id: str | None = None, *, customer_id: str | None = None
) -> StripeEventRef:
    """A Stripe event as the webhook route signals it."""
    return StripeEventRef(
        id=event_id or f"evt_{uuid.uuid4().hex[:12]}",
        type=type_,
        created=datetime.now(UTC),
        object_id=object_id,
        customer_id=customer_id,
    )


@asynccontextmanager
async def lifecycle(
    env: WorkflowEnvironment,
    start: StartSubscription,
    activities: list[Callable[..., Any]],
) -> AsyncIterator[Handle]:
    """Run a worker with the given activities and start the customer's workflow."""
    queue = f"billing-{uuid.uuid4()}"
    async with Worker(
        env.client, task_queue=queue, workflows=[SubscriptionWorkflow], activities=activities
    ):
        handle = await env.client.start_workflow(
            SubscriptionWorkflow.run, start, id=workflow_id(start.user_id), task_queue=queue
        )
        await handle.execute_update(SubscriptionWorkflow.subscription_ready)
        yield handle


@asynccontextmanager
async def on_fakes(
    env: WorkflowEnvironment, start: StartSubscription
) -> AsyncIterator[tuple[Handle, FakeStripe, FakeMailbox]]:
    """The lifecycle on the fake Stripe, mailbox and store."""
    stripe, mail, store = FakeStripe(clock=env.get_current_time), FakeMailbox(), FakeStore()
    async with lifecycle(
        env, start, [*stripe.activities(), mail.send_email, store.record]
    ) as handle:
        yield handle, stripe, mail


async def view_when(handle: Handle, check: Callable[[SubscriptionView], bool]) -> SubscriptionView:
    """The workflow's view once `check` holds (signals are handled asynchronously)."""

    async def matching() -> SubscriptionView:
        view = await handle.query(SubscriptionWorkflow.view)
        assert check(view), view
        return view

    return await eventually(matching)
