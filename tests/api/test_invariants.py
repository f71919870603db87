"""DESIGN.md "What must never happen", through the HTTP API: late events, events for objects
Stripe does not have, creates that outlast the wait, and never a second live subscription."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import WorkflowExecutionStatus

from api.errors import describe_raw
from core.payloads import Interval, Plan
from tests.api.helpers import Api, event, invoice, subscription, view, view_when
from tests.helpers import eventually
from tests.workflows.fakes import Call


async def describe_status(api: Api, user_id: str) -> tuple[str, WorkflowExecutionStatus]:
    info = await describe_raw(api.env.client, f"subscription-{user_id}")
    return info.execution.run_id, WorkflowExecutionStatus(info.status)


async def test_late_events_after_dunning_canceled_a_customer_change_nothing(api: Api) -> None:
    created = await api.subscribe("lena", payment_method_id="pm_card_chargeCustomerFail")
    assert created.status_code == 201
    assert created.json()["status"] == "past_due"
    first_invoice = api.stripe.sub["latest_invoice"]
    await api.env.sleep(timedelta(days=6))  # retries after 2 and 3 more days: canceled
    ended = await view_when(api, "lena", status="canceled", failed_payment_attempts=3)
    run_id, status = await describe_status(api, "lena")
    assert status == WorkflowExecutionStatus.COMPLETED

    # Shuffled redelivery and fresh events about what ended: 200, ignored, no new run.
    late = [
        event("customer.subscription.updated", {**subscription("lena"), "status": "active"}),
        event("invoice.payment_failed", invoice("lena", first_invoice)),
        event("invoice.paid", invoice("lena", first_invoice)),
        event("customer.subscription.deleted", subscription("lena")),
    ]
    for payload in late:
        answer = await api.webhook(payload)
        assert answer.status_code == 200
        assert answer.json()["status"] == "ignored"
    assert await describe_status(api, "lena") == (run_id, status)
    assert await view(api, "lena") == ended

    # An event about another subscription Stripe no longer bills: a run looks, adopts
    # nothing and ends at once, showing the customer's last view.
    other = {**subscription("lena"), "id": "sub_lena_old_dashboard_one"}
    answer = await api.webhook(event("customer.subscription.created", other))
    assert answer.json()["status"] == "processed"
    handle = api.env.client.get_workflow_handle("subscription-lena")
    assert (await handle.result())["stripe_subscription_id"] == ended["stripe_subscription_id"]
    assert await view(api, "lena") == ended

    # And the customer may subscribe again: a new run, a new Stripe subscription.
    api.stripe.sub = {}
    again = await api.subscribe("lena", plan="pro")
    assert again.status_code == 201, again.text
    assert (again.json()["status"], again.json()["plan"]) == ("active", "pro")
    assert api.stripe.names().count("create_subscription") == 2


async def test_an_event_for_an_invoice_stripe_does_not_have_neither_ends_nor_forks(
    api: Api,
) -> None:
    assert (await api.subscribe("ivan", trial_days=14)).status_code == 201
    answer = await api.webhook(event("invoice.payment_failed", invoice("ivan", "in_not_here")))
    assert answer.json() == {"status": "processed", "event_type": "invoice.payment_failed"}
    await eventually(lambda: Call("get_invoice", "in_not_here") in api.stripe.calls)
    assert (await describe_status(api, "ivan"))[1] == WorkflowExecutionStatus.RUNNING
    assert (await view(api, "ivan"))["status"] == "trialing"
    # Still steerable, and never a second subscription.
    assert (await api.subscribe("ivan")).status_code == 409
    canceled = await api.http.delete("/stripe/subscriptions/ivan", headers=api.auth("ivan"))
    assert canceled.status_code == 200
    assert canceled.json()["cancel_at_period_end"] is True
    assert api.stripe.names().count("create_subscription") == 1


async def test_a_create_slower_than_the_wait_is_202_then_201_on_retry(api: Api) -> None:
    api.settings.api_wait_seconds = 0.5
    api.stripe.slow_create_seconds = 2
    key = {"Idempotency-Key": "order-42"}
    body = {"plan": "pro", "email": "kim@example.com", "trial_days": 0}
    first = await api.http.post(
        "/stripe/subscriptions", json=body, headers={**api.auth("kim"), **key}
    )
    assert first.status_code == 202, first.text
    assert first.headers["Location"] == "/stripe/subscriptions/kim"
    assert (first.json()["status"], first.json()["plan"]) == ("incomplete", "pro")
    # Nothing is paid yet: the app grants nothing (API.md: `none` while incomplete).
    assert first.json()["access"] == "none"

    api.settings.api_wait_seconds = 10
    # The client retries as told: the same key and body answer the first request's outcome.
    retried = await api.http.post(
        "/stripe/subscriptions", json=body, headers={**api.auth("kim"), **key}
    )
    assert retried.status_code == 201, retried.text
    assert retried.json()["stripe_subscription_id"] == "sub_kim"
    # Another key, another body or none: the user already has a live subscription.
    for headers, other in (
        ({"Idempotency-Key": "order-43"}, body),
        (key, {**body, "plan": "starter"}),
        ({}, body),
    ):
        answer = await api.http.post(
            "/stripe/subscriptions", json=other, headers={**api.auth("kim"), **headers}
        )
        assert answer.status_code == 409, answer.text
    assert api.stripe.names().count("create_subscription") == 1


async def test_a_live_stripe_subscription_is_adopted_on_create_never_doubled(api: Api) -> None:
    api.stripe.live_elsewhere(
        "sub_nina_dashboard", "cus_nina", api.stripe_now(), Plan.ENTERPRISE, Interval.YEARLY
    )
    answer = await api.subscribe("nina")
    assert answer.status_code == 409, answer.text
    followed = await view_when(api, "nina", status="active")
    assert (followed["stripe_subscription_id"], followed["plan"]) == (
        "sub_nina_dashboard",
        "enterprise",
    )
    assert "create_subscription" not in api.stripe.names()
