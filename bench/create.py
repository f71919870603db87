"""Creating customers through the API against bare Temporal clients on the same server.

The goal's baseline is the same order given by a bare Temporal client: the update-with-start
of the customer's workflow that the route makes, waiting for the same answer (the Stripe
subscription exists), with the same worker, emulator and webhooks behind it: what the API
costs on top of Temporal, as the webhook figure measures it. Bare starts of a workflow no
worker runs are printed beside it for scale: a created customer is also the four or more
signal-with-starts of the webhooks Stripe sends back for it, each as costly as a bare start,
so no design reaches half of that rate.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.routes.subscriptions import create_through_temporal
from bench.common import Figure, load
from core.payloads import Interval, Plan
from core.policy import DunningPolicy
from core.settings import Settings
from core.state import StartSubscription
from devtools.stack import Stack
from tests.helpers import free_ports


async def through_the_api(stack: Stack, token: str, count: int, concurrency: int) -> float:
    """Customers created per second, `concurrency` requests at a time (each a new user)."""
    run = uuid.uuid4().hex[:6]
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http:

        async def one(n: int) -> None:
            async with sem:
                answer = await http.post(
                    "/stripe/subscriptions",
                    json={
                        "plan": "starter",
                        "email": f"c{n}@example.com",
                        "user_id": f"create-{run}-{n}",
                        "trial_days": 0,
                        "payment_method_id": "pm_card_visa",
                    },
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.status_code in (201, 202), answer.text

        began = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return count / (time.perf_counter() - began)


async def bare_creates(client: Client, settings: Settings, count: int, concurrency: int) -> float:
    """The same orders given by a bare Temporal client: customers created per second."""
    run = uuid.uuid4().hex[:6]
    sem = asyncio.Semaphore(concurrency)
    policy = DunningPolicy.from_settings(settings)

    async def one(n: int) -> None:
        async with sem:
            start = StartSubscription(
                request_id=f"bare-{run}-{n}",
                user_id=f"bare-{run}-{n}",
                email=f"b{n}@example.com",
                plan=Plan.STARTER,
                interval=Interval.MONTHLY,
                trial_days=0,
                payment_method_id="pm_card_visa",
                policy=policy,
            )
            await create_through_temporal(client, settings, start)

    began = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return count / (time.perf_counter() - began)


async def bare_starts(client: Client, count: int, concurrency: int) -> float:
    """Workflow starts per second on the same server (a type no worker polls: the server only)."""
    run = uuid.uuid4().hex[:6]
    sem = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with sem:
            await client.start_workflow("bench-noop", id=f"noop-{run}-{n}", task_queue="bench-idle")

    began = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return count / (time.perf_counter() - began)


async def run(rounds: int = 3, count: int = 48, concurrency: int = 16) -> list[Figure]:
    data = Path(tempfile.mkdtemp(prefix="bench-create-"))
    ports = free_ports()
    stack = Stack(Path(sys.executable), data, ports, quiet=True)
    stack.start()
    try:
        client = await Client.connect(
            f"127.0.0.1:{ports.temporal}", data_converter=pydantic_data_converter
        )
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        token = stack.token("bench-admin", admin=True)
        api, bare, starts = [], [], []
        for _ in range(rounds):  # interleaved
            api.append(await through_the_api(stack, token, count, concurrency))
            bare.append(await bare_creates(client, settings, count, concurrency))
            starts.append(await bare_starts(client, count * 4, concurrency))
        mid_api, mid_bare, mid_starts = (sorted(xs)[len(xs) // 2] for xs in (api, bare, starts))
        return [
            Figure(
                f"customers created through the API ({concurrency} at a time) vs the same "
                "orders from a bare Temporal client",
                mid_api / mid_bare,
                "x",
                goal=0.5,
                below=False,
                baseline=f"{mid_api:.1f}/s vs {mid_bare:.1f}/s, medians of {rounds}; bare starts "
                f"of an idle workflow {mid_starts:.1f}/s ({mid_api / mid_starts:.3f}x); {load()}",
            )
        ]
    finally:
        stack.stop()
