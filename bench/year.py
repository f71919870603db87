"""One customer's year on the time-skipping server: the real workflow, fake activities."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from statistics import median
from typing import Any

from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.common import BIN, Figure, load
from core.payloads import SubscriptionState
from core.temporal import ensure_search_attributes
from tests.workflows.fakes import FakeMailbox, FakeStore, FakeStripe
from tests.workflows.helpers import order
from workflows.subscription import SubscriptionWorkflow, workflow_id
from workflows.visibility import SEARCH_ATTRIBUTES


class RenewingStripe(FakeStripe):
    """Stripe having renewed the period (and been paid) whenever the workflow re-reads it after
    creation: the workflow re-reads only after a period has ended."""

    @activity.defn(name="stripe.get_subscription")
    async def get_subscription(self, subscription_id: str) -> SubscriptionState:
        if "get_subscription" in self.names():
            self.renew(paid=True)
        self._record("get_subscription", subscription_id)
        return self.state()

    def activities(self) -> list[Any]:
        return [
            self.get_subscription if a.__name__ == "get_subscription" else a
            for a in super().activities()
        ]


async def one_year(env: WorkflowEnvironment) -> float:
    stripe, mail, store = RenewingStripe(clock=env.get_current_time), FakeMailbox(), FakeStore()
    start = order(trial_days=0, user_id=f"year-{uuid.uuid4().hex[:8]}")
    queue = f"year-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[SubscriptionWorkflow],
        activities=[*stripe.activities(), mail.send_email, store.record],
    ):
        began = time.perf_counter()
        handle = await env.client.start_workflow(
            SubscriptionWorkflow.run, start, id=workflow_id(start.user_id), task_queue=queue
        )
        await handle.query(SubscriptionWorkflow.view)  # subscribed: the year starts
        await env.sleep(timedelta(days=365))
        view = await handle.query(SubscriptionWorkflow.view)
        elapsed = time.perf_counter() - began
        # Its timers would hold the server's clock once this worker is gone.
        await handle.terminate("benchmark round over")
    renewals = stripe.names().count("get_subscription")
    assert view.status == "active" and renewals >= 12, (view, renewals)
    return elapsed


async def run(rounds: int = 5) -> list[Figure]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await ensure_search_attributes(env.client, SEARCH_ATTRIBUTES)
        await one_year(env)  # warm-up: imports, the sandbox's first load
        times = [await one_year(env) for _ in range(rounds)]
    finally:
        await env.shutdown()
    return [
        Figure(
            "one customer's year, time-skipping server",
            median(times),
            "s",
            goal=0.25,
            baseline=f"median of {rounds}, {load()}",
        )
    ]
