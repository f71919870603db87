"""Reconciliation on the emulator with every activity real, on the dev server (real time).

Each test has an emulator of its own (reconciliation walks the whole account, so another
test's subscriptions would be in it), a fresh task queue and a migrated database. No webhook
endpoint is registered with the emulator: every event Stripe sends is lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    WorkflowExecutionStatus,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import activities_of
from activities.notify import NotifyActivities
from activities.reconcile import ReconcileActivities
from activities.store import StoreActivities
from activities.stripe import StripeActivities, stripe_client
from core.db import AsyncSession, Customer, Reconciliation, SubscriptionRecord
from core.payloads import Plan, ReconcileReport, ReconcileRun, Status, SubscriptionView
from core.settings import Settings
from core.state import StartSubscription
from core.temporal import ensure_search_attributes
from emulator.seed import seed
from tests.helpers import API_KEY, ROOT, Inbox, eventually, free_port, wait_for_http
from tests.workflows.helpers import order
from tests.workflows.test_invariants import a_dashboard_subscription
from workflows.reconcile import SCHEDULE_ID, ReconcileWorkflow, ensure_reconcile_schedule
from workflows.subscription import SubscriptionWorkflow, workflow_id
from workflows.visibility import SEARCH_ATTRIBUTES


@dataclass
class Stack:
    client: Client
    settings: Settings
    sdk: stripe.StripeClient
    sessions: async_sessionmaker[AsyncSession]

    async def reconcile(self, **run: Any) -> ReconcileReport:
        """One reconciliation, in pages of 2 and continue-as-new after every 2 pages."""
        handle = await self.client.start_workflow(
            ReconcileWorkflow.run,
            ReconcileRun(page_size=2, pages_per_run=2, **run),
            id=f"reconcile-{uuid.uuid4()}",
            task_queue=self.settings.temporal_task_queue,
        )
        report = await handle.result()
        # What the Temporal UI shows: the totals and a line per page of the last run.
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        details = metadata.current_details
        assert details.startswith(f"**Done**: {report.totals.checked} checked"), details
        assert details.count("- page ") == (report.totals.pages - 1) % 2 + 1, details
        return report

    async def subscribe(self, **overrides: Any) -> SubscriptionView:
        """A customer subscribed through its workflow, as the API does."""
        start: StartSubscription = order(**overrides)
        handle = await self.client.start_workflow(
            SubscriptionWorkflow.run,
            start,
            id=workflow_id(start.user_id),
            task_queue=self.settings.temporal_task_queue,
        )
        return await handle.execute_update(SubscriptionWorkflow.subscription_ready)

    async def view(self, user_id: str) -> SubscriptionView:
        handle = self.client.get_workflow_handle_for(SubscriptionWorkflow.run, workflow_id(user_id))
        return await handle.query(SubscriptionWorkflow.view)

    async def view_when(self, user_id: str, **expected: Any) -> SubscriptionView:
        async def matching() -> SubscriptionView:
            view = await self.view(user_id)
            assert {k: getattr(view, k) for k in expected} == expected, view
            return view

        return await eventually(matching, timeout=20)

    async def row(self, table: Any, user_id: str) -> Any:
        async with self.sessions() as session:
            return (await session.exec(select(table).where(table.user_id == user_id))).first()


@pytest.fixture
async def stack(
    dev_server: WorkflowEnvironment,
    db_sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    smtp_sink: tuple[Inbox, int],
) -> AsyncIterator[Stack]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "serve", "--port", str(port), "--api-key", API_KEY],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process)
        base = Settings(  # type: ignore[call-arg]
            _env_file=None,
            stripe_api_key=SecretStr(API_KEY),
            stripe_api_base=url,
            database_url=database_url,
            temporal_task_queue=f"billing-{uuid.uuid4()}",
            smtp_port=smtp_sink[1],
        )
        async with stripe_client(base) as sdk:
            prices = await seed(sdk)
            settings = base.model_copy(
                update={name.lower(): value for name, value in prices.items()}
            )
            client = dev_server.client
            await ensure_search_attributes(client, SEARCH_ATTRIBUTES)
            async with Worker(
                client,
                task_queue=settings.temporal_task_queue,
                workflows=[SubscriptionWorkflow, ReconcileWorkflow],
                activities=activities_of(
                    StripeActivities(sdk, settings),
                    NotifyActivities(settings, db_sessions),
                    StoreActivities(db_sessions),
                    ReconcileActivities(client, sdk, settings, db_sessions),
                ),
            ):
                yield Stack(client, settings, sdk, db_sessions)
    finally:
        process.terminate()
        process.wait(10)


def drift_of(report: ReconcileReport, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(d.action, d.fields) for d in report.drift if d.user_id == user_id]


async def test_a_subscription_made_in_stripe_is_adopted(stack: Stack) -> None:
    user = f"dash-{uuid.uuid4().hex[:6]}"
    sub = await a_dashboard_subscription(stack.sdk, stack.settings, user)
    report = await stack.reconcile()
    assert report.totals.checked == 1
    assert (report.totals.adopted, report.totals.resynced, report.totals.ended) == (1, 0, 0)
    assert report.totals.customers_repaired == 1  # the customer's metadata names the user
    assert drift_of(report, user) == [("adopted", {"status": [None, "active"]})]
    view = await stack.view_when(user, stripe_subscription_id=sub.id, status=Status.ACTIVE)
    assert view.plan == Plan.PRO
    # The customers table has the row (reconciliation writes it; the adopting run too).
    customer = await stack.row(Customer, user)
    assert customer.stripe_customer_id == sub.customer
    record = await eventually(lambda: stack.row(SubscriptionRecord, user), timeout=20)
    assert record.stripe_subscription_id == sub.id


async def test_a_plan_changed_in_stripe_is_resynced(stack: Stack) -> None:
    view = await stack.subscribe(plan=Plan.STARTER)
    sub = await stack.sdk.v1.subscriptions.retrieve_async(view.stripe_subscription_id or "")
    await stack.sdk.v1.subscriptions.update_async(
        sub.id,
        {
            "items": [
                {"id": sub["items"].data[0].id, "price": stack.settings.stripe_price_pro_monthly}
            ],
            "proration_behavior": "none",
        },
    )
    report = await stack.reconcile()
    assert (report.totals.adopted, report.totals.resynced, report.totals.ended) == (0, 1, 0)
    assert drift_of(report, view.user_id) == [("resynced", {"plan": ["starter", "pro"]})]
    await stack.view_when(view.user_id, plan=Plan.PRO, status=Status.ACTIVE)

    async def read_model_on_pro() -> bool:
        record = await stack.row(SubscriptionRecord, view.user_id)
        return bool(record and record.plan == "pro")

    await eventually(read_model_on_pro, timeout=20)


async def test_a_subscription_canceled_in_stripe_ends_the_workflow_and_the_read_model(
    stack: Stack,
) -> None:
    view = await stack.subscribe()
    await stack.sdk.v1.subscriptions.cancel_async(view.stripe_subscription_id or "")
    report = await stack.reconcile()
    assert (report.totals.adopted, report.totals.resynced, report.totals.ended) == (0, 0, 1)
    assert drift_of(report, view.user_id) == [("ended", {"status": ["active", "canceled"]})]
    handle = stack.client.get_workflow_handle_for(
        SubscriptionWorkflow.run, workflow_id(view.user_id)
    )
    result = await handle.result()
    assert result.status == Status.CANCELED

    async def read_model_canceled() -> bool:
        record = await stack.row(SubscriptionRecord, view.user_id)
        return bool(record and record.status == "canceled" and record.canceled_at)

    await eventually(read_model_canceled, timeout=20)


async def test_a_workflow_terminated_while_stripe_bills_is_adopted_again(stack: Stack) -> None:
    view = await stack.subscribe()
    handle = stack.client.get_workflow_handle(workflow_id(view.user_id))
    await handle.terminate("operator error")
    report = await stack.reconcile()
    assert (report.totals.adopted, report.totals.resynced, report.totals.ended) == (1, 0, 0)
    assert drift_of(report, view.user_id) == [("adopted", {"status": [None, "active"]})]
    again = await stack.view_when(
        view.user_id, stripe_subscription_id=view.stripe_subscription_id, status=Status.ACTIVE
    )
    assert again.stripe_customer_id == view.stripe_customer_id
    described = await stack.client.get_workflow_handle(workflow_id(view.user_id)).describe()
    assert described.status == WorkflowExecutionStatus.RUNNING


async def test_every_drift_repaired_and_the_second_run_finds_none(stack: Stack) -> None:
    in_sync = await stack.subscribe()
    dashboard = f"dash-{uuid.uuid4().hex[:6]}"
    await a_dashboard_subscription(stack.sdk, stack.settings, dashboard)
    changed = await stack.subscribe(plan=Plan.STARTER)
    sub = await stack.sdk.v1.subscriptions.retrieve_async(changed.stripe_subscription_id or "")
    await stack.sdk.v1.subscriptions.update_async(sub.id, {"cancel_at_period_end": True})
    canceled = await stack.subscribe()
    await stack.sdk.v1.subscriptions.cancel_async(canceled.stripe_subscription_id or "")
    terminated = await stack.subscribe()
    await stack.client.get_workflow_handle(workflow_id(terminated.user_id)).terminate("oops")
    # A subscription nobody can be found for: reported, not guessed.
    stranger = await stack.sdk.v1.customers.create_async({"email": "who@example.com"})
    card = await stack.sdk.v1.payment_methods.attach_async(
        "pm_card_visa", {"customer": stranger.id}
    )
    await stack.sdk.v1.subscriptions.create_async(
        {
            "customer": stranger.id,
            "items": [{"price": stack.settings.stripe_price_starter_monthly}],
            "default_payment_method": card.id,
        }
    )

    first = await stack.reconcile()
    assert first.totals.checked == 6
    assert first.totals.pages == 3  # pages of 2, continued as new after 2 pages
    assert (first.totals.adopted, first.totals.resynced, first.totals.ended) == (2, 1, 1)
    assert first.totals.unmatched == 1
    assert drift_of(first, in_sync.user_id) == []
    assert drift_of(first, changed.user_id) == [
        ("resynced", {"cancel_at_period_end": [False, True]})
    ]
    # The signalled workflows re-read Stripe; then nothing is left to do.
    await stack.view_when(changed.user_id, cancel_at_period_end=True)
    await stack.view_when(dashboard, status=Status.ACTIVE)
    await stack.view_when(terminated.user_id, status=Status.ACTIVE)
    await stack.client.get_workflow_handle(workflow_id(canceled.user_id)).result()

    second = await stack.reconcile()
    assert second.totals.checked == 6
    assert (second.totals.adopted, second.totals.resynced, second.totals.ended) == (0, 0, 0)
    assert [d.action for d in second.drift] == ["unmatched"]

    # Both reports are kept, newest last.
    async with stack.sessions() as session:
        rows = (await session.exec(select(Reconciliation))).all()
    assert sorted(r.run_id for r in rows) == sorted([first.run_id, second.run_id])


async def test_the_worker_creates_the_schedule_once(dev_server: WorkflowEnvironment) -> None:
    queue = f"billing-{uuid.uuid4()}"
    await ensure_reconcile_schedule(dev_server.client, queue, timedelta(hours=6))
    await ensure_reconcile_schedule(dev_server.client, queue, timedelta(hours=1))  # kept as is
    handle = dev_server.client.get_schedule_handle(SCHEDULE_ID)
    try:
        described = await handle.describe()
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(hours=6)]
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("ReconcileWorkflow", queue)
    finally:
        await handle.delete()


async def test_a_customer_without_metadata_is_found_by_the_stored_mapping(stack: Stack) -> None:
    user = f"mapped-{uuid.uuid4().hex[:6]}"
    customer = await stack.sdk.v1.customers.create_async({"email": f"{user}@example.com"})
    async with stack.sessions() as session:
        session.add(Customer(user_id=user, stripe_customer_id=customer.id))
        await session.commit()
    card = await stack.sdk.v1.payment_methods.attach_async(
        "pm_card_visa", {"customer": customer.id}
    )
    sub = await stack.sdk.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": stack.settings.stripe_price_starter_monthly}],
            "default_payment_method": card.id,
        }
    )
    report = await stack.reconcile()
    assert drift_of(report, user) == [("adopted", {"status": [None, "active"]})]
    assert report.totals.customers_repaired == 0
    await stack.view_when(user, stripe_subscription_id=sub.id, plan=Plan.STARTER)


async def test_a_read_model_row_lost_for_a_customer_in_step_is_written_again(
    stack: Stack,
) -> None:
    view = await stack.subscribe()
    await eventually(lambda: stack.row(SubscriptionRecord, view.user_id), timeout=20)
    async with stack.sessions() as session:  # the row is lost (a restore, a bad migration)
        await session.exec(
            delete(SubscriptionRecord).where(col(SubscriptionRecord.user_id) == view.user_id)
        )
        await session.commit()
    report = await stack.reconcile()
    assert (report.totals.adopted, report.totals.resynced, report.totals.ended) == (0, 0, 0)
    assert report.totals.read_model_repaired == 1
    record = await stack.row(SubscriptionRecord, view.user_id)
    assert record is not None
    assert (record.stripe_subscription_id, record.status, record.access) == (
        view.stripe_subscription_id,
        "active",
        "full",
    )
    again = await stack.reconcile()  # in step now: nothing to write
    assert again.totals.read_model_repaired == 0
