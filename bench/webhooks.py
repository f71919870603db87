"""The webhook route against a bare Temporal signal-with-start on the same dev server.

A: wrk replays pre-signed `customer.subscription.updated` events (each a new event id) for
customers with running workflows to `POST /stripe/webhooks` of the real stack.
B: the Temporal SDK signals-with-start the same workflows directly, as fast as it can.
A and B alternate; the medians give the ratio.
The worker keeps up: after each run of A, the drain: the time until every workflow has
handled what it was sent (no workflow task pending on any of them). Events processed per
second are the events acknowledged over a longer run of A over that run and its drain; the
backlog does not grow if the drain after the long run is no longer than after the short ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import stripe
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.common import Figure, load
from core.payloads import Interval, Plan, Status, StripeEventRef
from core.policy import DunningPolicy
from core.settings import EMULATOR_API_KEY
from core.state import BillingState, StartSubscription
from devtools.stack import WEBHOOK_SECRET, Ports, Stack
from tests.helpers import free_ports, fresh_postgres_database
from workflows.subscription import SubscriptionWorkflow, workflow_id

LUA = """
local bodies, signatures, n = {}, {}, 0
function setup(thread)
  thread:set("offset", THREADS_SEEN or 0)
  THREADS_SEEN = (THREADS_SEEN or 0) + 1
end
function init(args)
  for line in io.lines(args[1]) do
    local sig, body = line:match("^(.-)\\t(.*)$")
    n = n + 1; signatures[n] = sig; bodies[n] = body
  end
  i = offset
  stride = tonumber(args[2])
end
function request()
  i = i + stride
  local k = (i % n) + 1
  return wrk.format("POST", "/stripe/webhooks",
    {["Content-Type"] = "application/json", ["Stripe-Signature"] = signatures[k]}, bodies[k])
end
"""


@dataclass
class Customer:
    user_id: str
    customer_id: str
    subscription_id: str


async def customers_with_running_workflows(
    stack: Stack, client: Client, count: int
) -> list[Customer]:
    """Customers and subscriptions made in the emulator, followed by running workflows."""
    sdk = stripe.StripeClient(
        EMULATOR_API_KEY,
        base_addresses={"api": stack.stripe_url},
        http_client=stripe.HTTPXClient(),
    )
    price = stack.env["STRIPE_PRICE_STARTER_MONTHLY"]
    made: list[Customer] = []
    run = uuid.uuid4().hex[:6]
    for n in range(count):
        user = f"bench-{run}-{n}"
        # No user metadata yet: the emulator's customer.created must not start a workflow
        # before ours (with its state) does.
        customer = await sdk.v1.customers.create_async({"email": f"{user}@example.com"})
        made.append(Customer(user, customer.id, ""))
    for c in made:
        await client.start_workflow(
            SubscriptionWorkflow.run,
            StartSubscription(
                user_id=c.user_id,
                policy=DunningPolicy(),
                state=BillingState(
                    user_id=c.user_id,
                    email=f"{c.user_id}@example.com",
                    plan=Plan.STARTER,
                    interval=Interval.MONTHLY,
                    status=Status.ACTIVE,
                    customer_id=c.customer_id,
                    current_period_end=datetime.now(UTC) + timedelta(days=30),
                ),
            ),
            id=workflow_id(c.user_id),
            task_queue="billing",
        )
    for c in made:
        card = await sdk.v1.payment_methods.attach_async(
            "pm_card_visa", {"customer": c.customer_id}
        )
        sub = await sdk.v1.subscriptions.create_async(
            {
                "customer": c.customer_id,
                "items": [{"price": price}],
                "default_payment_method": card.id,
                "metadata": {"user_id": c.user_id},
            }
        )
        c.subscription_id = sub.id
    return made


def signed_events(customers: list[Customer], count: int, secret: str, path: Path) -> None:
    now = int(time.time())
    with path.open("w") as out:
        for n in range(count):
            c = customers[n % len(customers)]
            body = json.dumps(
                {
                    "id": f"evt_bench_{uuid.uuid4().hex}",
                    "object": "event",
                    "type": "customer.subscription.updated",
                    "created": now,
                    "api_version": stripe.api_version,
                    "data": {
                        "object": {
                            "id": c.subscription_id,
                            "object": "subscription",
                            "customer": c.customer_id,
                            "status": "active",
                            "metadata": {"user_id": c.user_id},
                        }
                    },
                },
                separators=(",", ":"),
            )
            mac = hmac.new(secret.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
            out.write(f"t={now},v1={mac}\t{body}\n")


def wrk(url: str, events: Path, script: Path, seconds: int, threads: int = 2) -> tuple[float, int]:
    """Requests per second and non-2xx answers."""
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            "-c16",
            f"-d{seconds}s",
            "-s",
            str(script),
            url,
            "--",
            str(events),
            str(threads),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    return rate, int(bad[1]) if bad else 0


async def bare_signal_with_start(
    client: Client, customers: list[Customer], seconds: float, concurrency: int = 16
) -> float:
    """Signals-with-start per second, straight from the SDK, on the same workflows."""
    sent = 0
    deadline = time.monotonic() + seconds

    async def sender(k: int) -> None:
        nonlocal sent
        n = k
        while time.monotonic() < deadline:
            c = customers[n % len(customers)]
            n += concurrency
            ref = StripeEventRef(
                id=f"evt_bare_{uuid.uuid4().hex}",
                type="customer.subscription.updated",
                created=datetime.now(UTC),
                object_id=c.subscription_id,
                customer_id=c.customer_id,
            )
            await client.start_workflow(
                SubscriptionWorkflow.run,
                StartSubscription(user_id=c.user_id, adopt_customer_id=c.customer_id),
                id=workflow_id(c.user_id),
                task_queue="billing",
                start_signal="stripe_event",
                start_signal_args=[ref],
            )
            sent += 1

    began = time.monotonic()
    await asyncio.gather(*(sender(k) for k in range(concurrency)))
    return sent / (time.monotonic() - began)


async def drain(client: Client, customers: list[Customer], concurrency: int = 16) -> None:
    """Until no customer's workflow has a workflow task pending: every event handled."""
    waiting = [workflow_id(c.user_id) for c in customers]
    sem = asyncio.Semaphore(concurrency)

    async def busy(wid: str) -> bool:
        async with sem:
            described = await client.get_workflow_handle(wid).describe()
            return described.raw_description.HasField("pending_workflow_task")

    while waiting:
        flags = await asyncio.gather(*(busy(wid) for wid in waiting))
        waiting = [wid for wid, flag in zip(waiting, flags, strict=True) if flag]
        if waiting:
            await asyncio.sleep(0.05)


async def run(
    database: str, rounds: int = 3, seconds: int = 10, customers: int = 200, long_seconds: int = 30
) -> list[Figure]:
    """The acknowledgement ratio on one database (`sqlite` or a PostgreSQL URL)."""
    data = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    ports = free_ports()
    with fresh_database(database) as url:
        return await _run(data, ports, url, rounds, seconds, customers, long_seconds)


@contextmanager
def fresh_database(database: str) -> Iterator[str | None]:
    """None for the stack's own SQLite file; else a new database on that PostgreSQL server,
    dropped afterwards (the server's own databases are left as they were)."""
    if database == "sqlite":
        yield None
        return
    with fresh_postgres_database(database) as url:
        yield url


async def _run(
    data: Path,
    ports: Ports,
    database_url: str | None,
    rounds: int,
    seconds: int,
    customers: int,
    long_seconds: int,
) -> list[Figure]:
    stack = Stack(Path(sys.executable), data, ports, quiet=True, database_url=database_url)
    stack.start()
    try:
        client = await Client.connect(
            f"127.0.0.1:{ports.temporal}", data_converter=pydantic_data_converter
        )
        made = await customers_with_running_workflows(stack, client, customers)
        script = data / "replay.lua"
        script.write_text(LUA)

        async def replay(length: int) -> tuple[float, int, float]:
            """wrk for `length` seconds: acks per second, non-2xx answers, the drain after."""
            events = data / "events.tsv"
            signed_events(made, 40_000, WEBHOOK_SECRET, events)  # signed just now
            rate, bad = await asyncio.to_thread(wrk, stack.api_url, events, script, length)
            ended = time.monotonic()
            await drain(client, made)
            return rate, bad, time.monotonic() - ended

        acked, drains, bare, errors = [], [], [], 0
        for _ in range(rounds):
            rate, bad, drained = await replay(seconds)
            acked.append(rate)
            drains.append(drained)
            errors += bad
            bare.append(await bare_signal_with_start(client, made, seconds))
            await drain(client, made)  # the next run starts with nothing pending
        long_rate, bad, long_drain = await replay(long_seconds)
        errors += bad
        processed = long_rate * long_seconds / (long_seconds + long_drain)
        kind = "PostgreSQL" if database_url else "SQLite"
        return [
            Figure(
                f"webhook acks vs bare signal-with-start, {kind}",
                median(acked) / median(bare),
                "x",
                goal=0.85,
                below=False,
                baseline=f"{median(acked):.1f}/s vs {median(bare):.1f}/s, {errors} non-2xx, "
                f"medians of {rounds}, {load()}",
            ),
            Figure(
                f"events processed by the worker vs acknowledged, {kind}",
                processed / long_rate,
                "x",
                goal=0.85,
                below=False,
                baseline=f"{processed:.1f}/s vs {long_rate:.1f}/s over {long_seconds} s; every "
                f"event handled {long_drain:.2f} s after the last ack, after {seconds} s runs "
                f"{', '.join(f'{d:.2f}' for d in drains)} s: "
                + ("the backlog does not grow" if long_drain < max(drains) + 1 else "GROWING"),
            ),
        ]
    finally:
        stack.stop()
