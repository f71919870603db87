"""Worker memory with many customers: the real worker process, the SDK's default cache."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.common import Figure, load
from core.payloads import Interval, Plan, Status
from core.policy import DunningPolicy
from core.state import BillingState, StartSubscription
from devtools.stack import Stack
from tests.helpers import free_ports
from workflows.subscription import SubscriptionWorkflow, workflow_id


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def start_customers(client: Client, count: int, concurrency: int = 8) -> list[str]:
    """Customers already subscribed (their state given), each a running workflow."""
    run = uuid.uuid4().hex[:6]
    users = [f"mem-{run}-{n}" for n in range(count)]
    queue = asyncio.Queue[str]()
    for user in users:
        queue.put_nowait(user)

    async def starter() -> None:
        while not queue.empty():
            user = queue.get_nowait()
            await client.start_workflow(
                SubscriptionWorkflow.run,
                StartSubscription(
                    user_id=user,
                    policy=DunningPolicy(),
                    state=BillingState(
                        user_id=user,
                        email=f"{user}@example.com",
                        plan=Plan.PRO,
                        interval=Interval.MONTHLY,
                        status=Status.ACTIVE,
                        customer_id=f"cus_{user}",
                        subscription_id=f"sub_{user}",
                        current_period_end=datetime.now(UTC) + timedelta(days=30),
                    ),
                ),
                id=workflow_id(user),
                task_queue="billing",
            )

    await asyncio.gather(*(starter() for _ in range(concurrency)))
    return users


async def settled(database: Path, count: int, timeout: float = 1200) -> None:
    """Every workflow has run its first task: its read-model row is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(database) as db:
            (rows,) = db.execute("SELECT count(*) FROM subscriptions").fetchone()
        if rows >= count:
            return
        await asyncio.sleep(2)
    raise TimeoutError(f"{rows} of {count} workflows settled")


async def run(customers: int = 10_000, queries: int = 1_000) -> list[Figure]:
    data = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    ports = free_ports()
    stack = Stack(Path(sys.executable), data, ports, quiet=True)
    stack.start()
    try:
        worker = next(p for name, p in stack.processes if name == "worker")
        client = await Client.connect(
            f"127.0.0.1:{ports.temporal}", data_converter=pydantic_data_converter
        )
        idle = rss_mb(worker.pid)
        users = await start_customers(client, customers)
        await settled(data / "billing.sqlite3", customers)
        await asyncio.sleep(5)  # the read model's writes drain
        filled = rss_mb(worker.pid)
        for user in random.Random(7).sample(users, min(queries, len(users))):  # noqa: S311
            await client.get_workflow_handle(workflow_id(user)).query(
                SubscriptionWorkflow.view, rpc_timeout=timedelta(seconds=60)
            )
        queried = rss_mb(worker.pid)
        note = f"idle {idle:.0f} MB, {load()}"
        return [
            Figure(f"worker RSS, {customers:,} customers", filled, "MB", goal=250, baseline=note),
            Figure(
                f"worker RSS after {queries:,} random queries",
                queried,
                "MB",
                goal=250,
                baseline=note,
            ),
        ]
    finally:
        stack.stop()
