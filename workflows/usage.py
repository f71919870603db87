"""Usage reporting: a Temporal Schedule runs this every few minutes. It sends unreported usage
to Stripe as billing meter events in batches and marks it reported. Each event carries its
row's identifier, so a batch retried after a crash is counted once by Stripe."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
)
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.store import StoreActivities
    from activities.stripe import StripeActivities
    from core.payloads import MeterEvent, ReportUsage, UsageRun
    from core.temporal import ensure_schedule

SCHEDULE_ID = "usage-reporting"
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))


@workflow.defn
class UsageReportingWorkflow:
    @workflow.run
    async def run(self, run: UsageRun) -> int:
        sent = 0
        for _ in range(run.max_batches):
            batch = await workflow.execute_activity_method(
                StoreActivities.unreported_usage,
                run.batch_size,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RETRY,
                summary="read unreported usage",
            )
            if not batch:
                break
            events = [
                MeterEvent(
                    event_name=item.event_name,
                    customer_id=item.stripe_customer_id,
                    value=item.quantity,
                    timestamp=item.occurred_at,
                    identifier=item.identifier,
                )
                for item in batch
            ]
            await workflow.execute_activity_method(
                StripeActivities.report_usage,
                ReportUsage(events=events),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=RETRY,
                summary=f"report {len(events)} meter events",
            )
            await workflow.execute_activity_method(
                StoreActivities.mark_usage_reported,
                [item.id for item in batch],
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RETRY,
                summary=f"mark {len(batch)} usage rows reported",
            )
            sent += len(batch)
        return sent


async def ensure_usage_schedule(client: Client, task_queue: str, every: timedelta) -> None:
    """Create the reporting schedule if it does not exist (every worker may call this)."""
    action = ScheduleActionStartWorkflow(
        UsageReportingWorkflow.run, UsageRun(), id=SCHEDULE_ID, task_queue=task_queue
    )
    await ensure_schedule(client, SCHEDULE_ID, action, every)
