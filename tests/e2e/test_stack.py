"""End to end: the real processes (dev server, emulator, SMTP sink, worker, API) on free ports,
driven through the scenario with a dunning policy in seconds."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest
import stripe
from temporalio.client import Client

from devtools import scenario
from devtools.stack import Ports, Stack
from tests.helpers import free_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = Ports(*(free_port() for _ in range(5)))
    running = Stack(
        Path(sys.executable), tmp_path_factory.mktemp("stack"), ports, demo=True, quiet=True
    )
    running.start()
    yield running
    running.stop()
    assert running.processes == []


@pytest.mark.timeout(420)
async def test_the_story_end_to_end(stack: Stack) -> None:
    views = await asyncio.to_thread(scenario.run, stack.api_url, stack.token, "-e2e", 200)
    assert stack.check() is None  # every process is still up

    # Through the API.
    assert (views["tina"]["status"], views["tina"]["plan"]) == ("trialing", "starter")
    assert (views["paul"]["status"], views["paul"]["interval"]) == ("active", "yearly")
    assert (views["rita"]["status"], views["rita"]["failed_payment_attempts"]) == ("active", 0)
    assert (views["carl"]["status"], views["carl"]["failed_payment_attempts"]) == ("canceled", 3)

    # The Stripe objects, through the emulator.
    sdk = stripe.StripeClient(
        "sk_test_salesflow_local",
        base_addresses={"api": stack.stripe_url},
        http_client=stripe.HTTPXClient(),
    )
    for name, status in (
        ("tina", "trialing"),
        ("paul", "active"),
        ("rita", "active"),
        ("carl", "canceled"),
    ):
        sub = await sdk.v1.subscriptions.retrieve_async(views[name]["stripe_subscription_id"])
        assert sub.status == status, name
        customer = await sdk.v1.customers.retrieve_async(views[name]["stripe_customer_id"])
        assert customer.metadata is not None
        assert customer.metadata["user_id"] == f"{name}-e2e"

    # The emails, through the SMTP sink.
    mail = [message_from_bytes(p.read_bytes()) for p in sorted((stack.data / "mail").glob("*.eml"))]
    kinds = Counter((m["To"].split("-")[0], m["X-SalesFlow-Kind"]) for m in mail)
    assert kinds[("rita", "payment_failed")] == 2
    assert kinds[("rita", "receipt")] == 1
    assert kinds[("carl", "payment_failed")] == 2
    assert kinds[("carl", "final_notice")] == 1
    assert kinds[("paul", "receipt")] == 1
    assert kinds[("tina", "receipt")] == 0

    # The workflows' search attributes, through Temporal's visibility.
    client = await Client.connect(f"127.0.0.1:{stack.ports.temporal}")

    async def ids(query: str) -> set[str]:
        return {wf.id async for wf in client.list_workflows(query)}

    for _ in range(60):
        canceled = await ids("BillingStatus = 'canceled' AND BillingDunningAttempt = 3")
        active = await ids("BillingStatus = 'active' AND BillingPlan = 'enterprise'")
        if "subscription-carl-e2e" in canceled and "subscription-paul-e2e" in active:
            break
        await asyncio.sleep(0.5)
    assert "subscription-carl-e2e" in canceled
    assert "subscription-paul-e2e" in active
    assert await ids("BillingUserId = 'tina-e2e' AND BillingStatus = 'trialing'") == {
        "subscription-tina-e2e"
    }
