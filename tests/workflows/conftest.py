"""A time-skipping Temporal server per test, and a helper to run the lifecycle on fakes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import stripe
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import activities_of
from activities.notify import NotifyActivities
from activities.store import StoreActivities
from activities.stripe import StripeActivities
from core.db import AsyncSession
from core.payloads import Interval, Plan, SubscriptionView
from core.policy import DunningPolicy
from core.settings import Settings
from core.state import StartSubscription
from tests.conftest import Inbox
from tests.workflows.fakes import FakeMailbox, FakeStore, FakeStripe
from workflows.subscription import SubscriptionWorkflow, workflow_id

POLICY = DunningPolicy(
    retry_delays=[timedelta(days=2), timedelta(days=3)],
    max_failures=3,
    trial_reminder_before=timedelta(days=3),
)


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


@pytest.fixture
def real_activities(
    settings: Settings,
    stripe_sdk: stripe.StripeClient,
    smtp_sink: tuple[Inbox, int],
    db_sessions: async_sessionmaker[AsyncSession],
) -> list[Any]:
    """Every activity for real: Stripe's SDK against the emulator, SMTP, the database."""
    notify = NotifyActivities(settings.model_copy(update={"smtp_port": smtp_sink[1]}), db_sessions)
    return activities_of(
        StripeActivities(stripe_sdk, settings), notify, StoreActivities(db_sessions)
    )


@asynccontextmanager
async def lifecycle(
    env: WorkflowEnvironment,
    start: StartSubscription,
    activities: list[Any],
) -> AsyncIterator[WorkflowHandle[SubscriptionWorkflow, SubscriptionView]]:
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
) -> AsyncIterator[
    tuple[WorkflowHandle[SubscriptionWorkflow, SubscriptionView], FakeStripe, FakeMailbox]
]:
    stripe, mail, store = FakeStripe(clock=env.get_current_time), FakeMailbox(), FakeStore()
    async with lifecycle(
        env, start, [*stripe.activities(), mail.send_email, store.record]
    ) as handle:
        yield handle, stripe, mail


async def until(
    handle: WorkflowHandle[SubscriptionWorkflow, SubscriptionView],
    check: Callable[[SubscriptionView], bool],
    timeout: float = 10.0,
) -> SubscriptionView:
    """Query the view until `check` holds (signals are handled asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await handle.query(SubscriptionWorkflow.view)
        if check(view):
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"view never matched: {view!r}")
        await asyncio.sleep(0.05)
