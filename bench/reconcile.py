"""Reconciliation of a large account against the emulator (DESIGN.md "Reconciliation").

`python -m bench.reconcile [count]` (5,000 by default): an emulator with `count` subscriptions
made directly in Stripe (each customer's metadata names its user, no workflow follows any),
Temporal's dev server, one worker as production runs it (sandboxed workflows, SQLite). Then:
the first reconciliation (every subscription adopted: a workflow started for each), the wait
until every adopted workflow has re-read Stripe, and a second reconciliation (nothing to do:
one describe and one query per customer). Printed, not asserted: it is not a timed test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr
from sqlmodel import func, select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import activities_of
from activities.notify import NotifyActivities
from activities.reconcile import ReconcileActivities
from activities.store import StoreActivities
from activities.stripe import StripeActivities, stripe_client
from bench.common import BIN, load
from core.db import SubscriptionRecord, make_engine, sessions
from core.migrate import upgrade_async
from core.payloads import ReconcileReport, ReconcileRun
from core.settings import EMULATOR_API_KEY, Settings
from core.temporal import ensure_search_attributes
from emulator.seed import seed
from tests.helpers import ROOT, free_port, wait_for_http
from worker import SANDBOX
from workflows.reconcile import ReconcileWorkflow
from workflows.subscription import SubscriptionWorkflow
from workflows.visibility import SEARCH_ATTRIBUTES


async def fill(settings: Settings, count: int, concurrency: int = 16) -> float:
    """`count` subscriptions made directly in Stripe (customer, card, subscription each)."""
    run = uuid.uuid4().hex[:6]
    sem = asyncio.Semaphore(concurrency)
    began = time.perf_counter()
    async with stripe_client(settings) as sdk:
        v1 = sdk.v1

        async def one(n: int) -> None:
            user = f"r{run}-{n}"
            async with sem:
                customer = await v1.customers.create_async(
                    {"email": f"{user}@example.com", "metadata": {"user_id": user}}
                )
                card = await v1.payment_methods.attach_async(
                    "pm_card_visa", {"customer": customer.id}
                )
                await v1.subscriptions.create_async(
                    {
                        "customer": customer.id,
                        "items": [{"price": settings.stripe_price_starter_monthly}],
                        "default_payment_method": card.id,
                        "metadata": {"user_id": user},
                    }
                )

        await asyncio.gather(*(one(n) for n in range(count)))
    return time.perf_counter() - began


async def reconcile(client: Client, settings: Settings) -> tuple[float, ReconcileReport]:
    began = time.perf_counter()
    report = await client.execute_workflow(
        ReconcileWorkflow.run,
        ReconcileRun(concurrency=settings.reconcile_concurrency),
        id=f"reconcile-{uuid.uuid4()}",
        task_queue=settings.temporal_task_queue,
    )
    return time.perf_counter() - began, report


async def settled(database_url: str, count: int, timeout: float = 3600) -> float:
    """Seconds until the read model has `count` subscriptions (each adopted workflow writes its
    row once it has read Stripe)."""
    engine = make_engine(database_url)
    began = time.perf_counter()
    try:
        while time.perf_counter() - began < timeout:
            async with sessions(engine)() as session:
                rows = await session.exec(select(func.count()).select_from(SubscriptionRecord))
                if rows.one() >= count:
                    break
            await asyncio.sleep(1)
    finally:
        await engine.dispose()
    return time.perf_counter() - began


async def main(count: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    port = free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "emulator", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    url = f"http://127.0.0.1:{port}"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    try:
        wait_for_http(f"{url}/healthz", emulator)
        database_url = f"sqlite+aiosqlite:///{data / 'billing.sqlite3'}"
        await upgrade_async(database_url)
        base = Settings(  # type: ignore[call-arg]
            _env_file=None,
            stripe_api_key=SecretStr(EMULATOR_API_KEY),
            stripe_api_base=url,
            database_url=database_url,
            temporal_task_queue="billing",
            smtp_port=free_port(),  # nothing listens: adoption sends no email
            dunning_retry_delays=[timedelta(days=7)],
        )
        async with stripe_client(base) as sdk:
            prices = await seed(sdk)
        settings = base.model_copy(update={k.lower(): v for k, v in prices.items()})
        made = await fill(settings, count)
        print(f"{count} subscriptions made in the emulator in {made:.1f} s ({load()})", flush=True)
        client = env.client
        await ensure_search_attributes(client, SEARCH_ATTRIBUTES)
        engine = make_engine(database_url)
        async with stripe_client(settings) as sdk:
            worker = Worker(
                client,
                task_queue=settings.temporal_task_queue,
                workflows=[SubscriptionWorkflow, ReconcileWorkflow],
                workflow_runner=SANDBOX,
                activities=activities_of(
                    StripeActivities(sdk, settings),
                    NotifyActivities(settings, sessions(engine)),
                    StoreActivities(sessions(engine)),
                    ReconcileActivities(client, sdk, settings, sessions(engine)),
                ),
            )
            async with worker:
                took, first = await reconcile(client, settings)
                t = first.totals
                print(
                    f"first run: {took:.1f} s: {t.checked} checked, {t.adopted} adopted, "
                    f"{t.resynced} re-synced, {t.pages} pages ({load()})",
                    flush=True,
                )
                waited = await settled(database_url, t.adopted)
                print(f"every adopted workflow in the read model {waited:.1f} s later", flush=True)
                took, second = await reconcile(client, settings)
                t = second.totals
                drift = t.adopted + t.resynced + t.ended
                print(
                    f"second run: {took:.1f} s: {t.checked} checked, {drift} drift, "
                    f"{t.pages} pages ({load()})",
                    flush=True,
                )
        await engine.dispose()
    finally:
        await env.shutdown()
        emulator.terminate()
        emulator.wait(10)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000))
