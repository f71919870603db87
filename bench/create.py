"""Creating customers through the API against the bare start-workflow rate of the same server."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client

import devstack
from bench.common import Figure, load
from tests.conftest import free_port


async def through_the_api(stack: devstack.Stack, token: str, count: int, concurrency: int) -> float:
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
    ports = devstack.Ports(*(free_port() for _ in range(5)))
    stack = devstack.Stack(Path(devstack.sys.executable), data, ports, quiet=True)
    stack.start()
    try:
        client = await Client.connect(f"127.0.0.1:{ports.temporal}")
        token = stack.token("bench-admin", admin=True)
        api, bare = [], []
        for _ in range(rounds):
            api.append(await through_the_api(stack, token, count, concurrency))
            bare.append(await bare_starts(client, count * 4, concurrency))
        api.sort()
        bare.sort()
        mid_api, mid_bare = api[len(api) // 2], bare[len(bare) // 2]
        return [
            Figure(
                f"customers created through the API ({concurrency} at a time) vs bare starts",
                mid_api / mid_bare,
                "x",
                goal=0.5,
                below=False,
                baseline=f"{mid_api:.1f}/s vs {mid_bare:.1f}/s, medians of {rounds}, {load()}",
            )
        ]
    finally:
        stack.stop()
