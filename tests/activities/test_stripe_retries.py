"""Stripe activities under Temporal's retries (on the dev server): a timeout, a rate limit and a
decline, each against the emulator."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
import stripe
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.stripe import StripeActivities
from core.payloads import (
    CreateSubscription,
    Failure,
    Plan,
)
from tests.activities.helpers import Run, customer_with_card, key


class ActivityCall(BaseModel):
    name: str
    arg: Any
    timeout_seconds: float = 1.0


@workflow.defn(sandboxed=False)
class CallActivity:
    """Runs one activity with a short timeout and quick retries, as the lifecycle would."""

    @workflow.run
    async def run(self, call: ActivityCall) -> Any:
        return await workflow.execute_activity(
            call.name,
            call.arg,
            start_to_close_timeout=timedelta(seconds=call.timeout_seconds),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=100), maximum_attempts=4
            ),
        )


async def run_in_worker(
    env: WorkflowEnvironment, acts: StripeActivities, call: ActivityCall
) -> Any:
    queue = f"stripe-test-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[CallActivity],
        activities=[acts.create_subscription, acts.get_subscription],
    ):
        return await env.client.execute_workflow(
            CallActivity.run, call, id=f"wf-{uuid.uuid4()}", task_queue=queue
        )


async def test_activity_retried_after_a_timeout_creates_one_subscription(
    dev_server: WorkflowEnvironment,
    acts: StripeActivities,
    run: Run,
    emulator: httpx.AsyncClient,
    stripe_sdk: stripe.StripeClient,
) -> None:
    customer, _ = await customer_with_card(acts, run)
    # Stripe does the work but the answer arrives after the activity's timeout.
    await emulator.post(
        "/_emulator/faults",
        json={"method": "POST", "path": "/v1/subscriptions", "delay_seconds": 2.5},
    )
    req = CreateSubscription(
        customer_id=customer,
        user_id="u-timeout",
        plan=Plan.PRO,
        idempotency_key=f"subscription-u-timeout/{uuid.uuid4()}/create",
    )
    result = await run_in_worker(
        dev_server, acts, ActivityCall(name="stripe.create_subscription", arg=req)
    )
    assert result["status"] == "active"
    subs = await stripe_sdk.v1.subscriptions.list_async({"customer": customer, "status": "all"})
    assert [s.id for s in subs.data] == [result["id"]]
    log = (await emulator.get("/_emulator/requests")).json()
    attempts = [r for r in log if r["idempotency_key"] == req.idempotency_key]
    assert [r["replayed"] for r in attempts] == [False, True]


async def test_rate_limited_call_succeeds_on_temporals_retry(
    dev_server: WorkflowEnvironment, acts: StripeActivities, run: Run, emulator: httpx.AsyncClient
) -> None:
    customer, _ = await customer_with_card(acts, run)
    sub = await run(
        acts.create_subscription,
        CreateSubscription(
            customer_id=customer, user_id="u-429", plan=Plan.STARTER, idempotency_key=key()
        ),
    )
    await emulator.post(
        "/_emulator/faults",
        json={"method": "GET", "path": f"/v1/subscriptions/{sub.id}", "status": 429, "times": 2},
    )
    result = await run_in_worker(
        dev_server,
        acts,
        ActivityCall(name="stripe.get_subscription", arg=sub.id, timeout_seconds=5),
    )
    assert result["id"] == sub.id
    log = (await emulator.get("/_emulator/requests")).json()
    assert [r["status"] for r in log if r["path"] == f"/v1/subscriptions/{sub.id}"][-3:] == [
        429,
        429,
        200,
    ]


async def test_card_decline_is_not_retried_by_temporal(
    dev_server: WorkflowEnvironment, acts: StripeActivities, run: Run, emulator: httpx.AsyncClient
) -> None:
    customer, _ = await customer_with_card(acts, run)
    req = CreateSubscription(
        customer_id=customer,
        user_id="u-no-retry",
        plan=Plan.STARTER,
        payment_method_id="pm_doesnotexist",
        idempotency_key=key(),
    )
    with pytest.raises(WorkflowFailureError) as err:
        await run_in_worker(
            dev_server, acts, ActivityCall(name="stripe.create_subscription", arg=req)
        )
    cause = err.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == Failure.INVALID_REQUEST
    log = (await emulator.get("/_emulator/requests")).json()
    assert len([r for r in log if r["idempotency_key"] == req.idempotency_key]) == 1
