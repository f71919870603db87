"""The Temporal worker: the lifecycle workflow and every activity, on task queue `billing`.

Run it with `python worker.py`. SIGTERM or SIGINT stops polling, lets running activities
finish (up to the graceful timeout) and exits; workflows carry on on the other workers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import activities_of
from activities.notify import NotifyActivities
from activities.reconcile import ReconcileActivities
from activities.store import StoreActivities
from activities.stripe import StripeActivities, stripe_client
from core.db import make_engine, sessions
from core.logging import configure_logging
from core.metrics import CountRetries, prometheus_runtime
from core.settings import Settings, settings_or_exit
from core.temporal import connect, ensure_search_attributes
from workflows.reconcile import ReconcileWorkflow, ensure_reconcile_schedule
from workflows.subscription import SubscriptionWorkflow
from workflows.usage import UsageReportingWorkflow, ensure_usage_schedule
from workflows.visibility import SEARCH_ATTRIBUTES

log = logging.getLogger("worker")

# The project's own modules are loaded once per process, not once per cached workflow: the
# workflow modules hold no state of their own (constants, classes, functions), so sharing
# them is safe, and it is most of what a cached workflow cost (375 KB each with the default
# sandbox). The sandbox still guards everything else the workflows import.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "workflows", "core", "activities"
    )
)
# What the worker runs; `python3 dev.py replay` replays running histories against the same.
WORKFLOWS = [SubscriptionWorkflow, UsageReportingWorkflow, ReconcileWorkflow]


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the task queue until `stop` is set."""
    runtime = (
        prometheus_runtime(settings.worker_metrics_address)
        if settings.worker_metrics_address
        else None
    )
    client = await connect(settings, runtime=runtime)
    await ensure_search_attributes(client, SEARCH_ATTRIBUTES)
    await ensure_usage_schedule(client, settings.temporal_task_queue, settings.usage_report_every)
    await ensure_reconcile_schedule(client, settings.temporal_task_queue, settings.reconcile_every)
    engine = make_engine(settings.database_url)
    async with stripe_client(settings) as stripe:
        worker = Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=WORKFLOWS,
            workflow_runner=SANDBOX,
            activities=activities_of(
                StripeActivities(stripe, settings),
                NotifyActivities(settings, sessions(engine)),
                StoreActivities(sessions(engine)),
                ReconcileActivities(client, stripe, settings, sessions(engine)),
            ),
            interceptors=[CountRetries()],
            graceful_shutdown_timeout=timedelta(seconds=30),
        )
        async with worker:
            log.info(
                "worker polling %s on %s; metrics %s",
                settings.temporal_task_queue,
                settings.temporal_address,
                f"at http://{settings.worker_metrics_address}/metrics"
                if settings.worker_metrics_address
                else "off (WORKER_METRICS_ADDRESS)",
            )
            await stop.wait()
            log.info("shutting down: finishing running activities")
    await engine.dispose()


def main() -> None:
    settings = settings_or_exit()
    configure_logging(settings)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
