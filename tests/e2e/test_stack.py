"""End to end: the real processes (dev server, emulator, SMTP sink, worker, API) on free ports,
driven through the scenario with a dunning policy in seconds; the API's and the worker's
metrics scraped before and after it."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import stripe
from temporalio.client import Client

from devtools import scenario
from devtools.stack import Stack
from tests.deploy.monitoring import Sample, scrape, total
from tests.helpers import free_ports


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = free_ports()
    running = Stack(
        Path(sys.executable), tmp_path_factory.mktemp("stack"), ports, demo=True, quiet=True
    )
    running.start()
    yield running
    running.stop()
    assert running.processes == []


@dataclass(frozen=True)
class Story:
    views: dict[str, dict[str, Any]]
    # The API's and the worker's metrics, before and after the story.
    api: tuple[list[Sample], list[Sample]]
    worker: tuple[list[Sample], list[Sample]]


@pytest.fixture(scope="module")
def story(stack: Stack) -> Story:
    worker_metrics = f"http://127.0.0.1:{stack.ports.metrics}/metrics"
    api_before, worker_before = scrape(f"{stack.api_url}/metrics"), scrape(worker_metrics)
    views = scenario.run(stack.api_url, stack.token, "-e2e", 200)
    return Story(
        views,
        (api_before, scrape(f"{stack.api_url}/metrics")),
        (worker_before, scrape(worker_metrics)),
    )


@pytest.mark.timeout(420)
async def test_the_story_end_to_end(stack: Stack, story: Story) -> None:
    views = story.views
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


def test_the_billing_counters_moved_with_the_story(story: Story) -> None:
    """Rita failed twice and recovered; Carl failed three times and was cancelled (both with
    the emulator's generic decline); eight dunning emails and three receipts went out."""
    before, after = story.worker

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    generic = {"decline_code": "generic_decline"}
    assert moved("billing_payment_attempts_failed_total", **generic) == 5
    assert moved("billing_payments_recovered_total", **generic) == 1
    assert moved("billing_dunning_cancellations_total", plan="pro") == 1
    assert moved("billing_emails_sent_total", kind="payment_failed") == 4
    assert moved("billing_emails_sent_total", kind="final_notice") == 1
    assert moved("billing_emails_sent_total", kind="receipt") >= 2
    # The SDK's own, from the same exporter.
    assert moved("temporal_workflow_task_execution_latency_count") > 0
    assert (
        moved(
            "temporal_local_activity_execution_latency_count",
            activity_type="stripe.create_subscription",
        )
        == 4
    )


def test_the_api_counted_webhooks_and_requests(story: Story) -> None:
    before, after = story.api

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert (
        moved("billing_webhooks_total", outcome="processed", event_type="invoice.payment_failed")
        >= 5
    )
    assert moved("billing_webhooks_total", outcome="refused") == 0
    assert (
        moved(
            "billing_api_request_duration_seconds_count",
            method="POST",
            route="/stripe/subscriptions",
            status="201",
        )
        == 4
    )
