"""Usage: posted over HTTP, reported to the emulator's meter by the reporting workflow, once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import stripe
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import ScheduleIntervalSpec
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import activities_of
from activities.store import StoreActivities
from activities.stripe import StripeActivities
from api.auth import mint
from api.main import create_app
from core.db import AsyncSession, Customer
from core.payloads import UsageRun
from core.settings import Settings
from workflows.usage import SCHEDULE_ID, UsageReportingWorkflow, ensure_usage_schedule


async def test_usage_posted_twice_with_one_key_reaches_the_meter_once(
    env: WorkflowEnvironment,
    settings: Settings,
    stripe_sdk: stripe.StripeClient,
    database_url: str,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = f"uma-{uuid.uuid4().hex[:8]}"
    customer = await stripe_sdk.v1.customers.create_async({"email": "usage@example.com"})
    async with db_sessions() as session:
        session.add(Customer(user_id=user, stripe_customer_id=customer.id))
        await session.commit()
    app_settings = settings.model_copy(update={"database_url": database_url})
    app = create_app(app_settings, temporal=env.client)
    auth = {"Authorization": f"Bearer {mint(user, app_settings)}"}
    url = f"/stripe/subscriptions/{user}/usage"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://billing.test"
        ) as http,
    ):
        body = {"metric": "api_calls", "quantity": 40, "idempotency_key": "batch-7"}
        first, again = (
            await http.post(url, json=body, headers=auth),
            await http.post(url, json=body, headers=auth),
        )
        assert (first.status_code, first.json()["status"]) == (202, "accepted")
        assert (again.status_code, again.json()["status"]) == (202, "duplicate")
        other = await http.post(url, json={"metric": "api_calls", "quantity": 2}, headers=auth)
        assert other.status_code == 202
        assert (
            await http.post(url, json={"metric": "coffee", "quantity": 1}, headers=auth)
        ).status_code == 422
        assert (
            await http.post(url, json={"metric": "api_calls", "quantity": 0}, headers=auth)
        ).status_code == 422
        old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
        assert (
            await http.post(
                url, json={"metric": "api_calls", "quantity": 1, "timestamp": old}, headers=auth
            )
        ).status_code == 422
        nobody = {"Authorization": f"Bearer {mint('nobody', app_settings)}"}
        assert (
            await http.post("/stripe/subscriptions/nobody/usage", json=body, headers=nobody)
        ).status_code == 404

    queue = f"usage-{uuid.uuid4()}"
    acts = activities_of(StripeActivities(stripe_sdk, settings), StoreActivities(db_sessions))
    async with Worker(
        env.client, task_queue=queue, workflows=[UsageReportingWorkflow], activities=acts
    ):
        sent = await env.client.execute_workflow(
            UsageReportingWorkflow.run,
            UsageRun(batch_size=1),
            id=f"u-{uuid.uuid4()}",
            task_queue=queue,
        )
        again_sent = await env.client.execute_workflow(
            UsageReportingWorkflow.run, UsageRun(), id=f"u-{uuid.uuid4()}", task_queue=queue
        )
    assert (sent, again_sent) == (2, 0)
    meter = next(
        m
        for m in (await stripe_sdk.v1.billing.meters.list_async()).data
        if m.event_name == "api_calls"
    )
    now = int(datetime.now(UTC).timestamp())
    summary = await stripe_sdk.v1.billing.meters.event_summaries.list_async(
        meter.id, {"customer": customer.id, "start_time": now - 3600, "end_time": now + 3600}
    )
    assert summary.data[0].aggregated_value == 42


async def test_the_reporting_schedule_is_created_once(dev_server: WorkflowEnvironment) -> None:
    queue = f"usage-{uuid.uuid4()}"
    for _ in range(2):  # every worker start calls it
        await ensure_usage_schedule(dev_server.client, queue, timedelta(minutes=5))
    described = await dev_server.client.get_schedule_handle(SCHEDULE_ID).describe()
    assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(minutes=5))]
    await dev_server.client.get_schedule_handle(SCHEDULE_ID).delete()
