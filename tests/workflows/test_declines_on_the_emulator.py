"""Decline-aware dunning with the real activities: Stripe's SDK over HTTP to the emulator (its
test cards, its forced declines, its hosted invoice page), real SMTP and the real database.

Stripe's webhooks are not delivered here: the test signals what the route would hand over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import stripe
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from core.db import AsyncSession, Payment, SubscriptionRecord
from core.payloads import (
    Access,
    ActionReason,
    SetPaymentMethod,
    Status,
    StripeEventRef,
)
from core.state import StartSubscription
from tests.helpers import Inbox, eventually
from tests.workflows.helpers import POLICY, Handle, lifecycle, order, view_when
from workflows.subscription import SubscriptionWorkflow

HOUR = timedelta(hours=1)


async def signal(handle: Handle, env: WorkflowEnvironment, type_: str, object_id: str) -> None:
    """What the webhook route hands over for a Stripe event."""
    await handle.signal(
        SubscriptionWorkflow.stripe_event,
        StripeEventRef(
            id=f"evt_{uuid.uuid4().hex[:12]}",
            type=type_,
            created=await env.get_current_time(),
            object_id=object_id,
        ),
    )


async def customer_declining(
    stripe_sdk: stripe.StripeClient,
    emulator: httpx.AsyncClient,
    start: StartSubscription,
    **decline: Any,
) -> str:
    """The user's Stripe customer, made before the order (the workflow finds it by its user id),
    whose next charges fail as `decline` says (the emulator's forced declines)."""
    customer = await stripe_sdk.v1.customers.create_async(
        {"email": start.email, "metadata": {"user_id": start.user_id}}
    )
    answer = await emulator.post(f"/_emulator/customers/{customer.id}/declines", json=decline)
    assert answer.status_code == 200, answer.text
    return customer.id


async def pay_calls(emulator: httpx.AsyncClient) -> int:
    entries = (await emulator.get("/_emulator/requests")).json()
    return sum(1 for e in entries if e["method"] == "POST" and e["path"].endswith("/pay"))


async def test_a_soft_decline_recovers_at_retry_2(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
    emulator: httpx.AsyncClient,
    smtp_sink: tuple[Inbox, int],
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    inbox, _ = smtp_sink
    start = order()
    await customer_declining(
        stripe_sdk, emulator, start, decline_code="insufficient_funds", count=2
    )
    async with lifecycle(env, start, real_activities) as handle:
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        assert view.access == Access.NONE  # the first invoice: nothing paid yet, no access
        assert view.action_required is None
        assert view.last_payment_error is not None
        assert view.last_payment_error.decline_code == "insufficient_funds"
        await env.sleep(POLICY.retry_delays[0] + HOUR)  # retry 1: declined (forced decline 2)
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 2)
        assert view.access == Access.NONE
        await env.sleep(POLICY.retry_delays[1] + HOUR)  # retry 2: paid
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert (view.access, view.last_payment_error) == (Access.FULL, None)
        await eventually(lambda: len(inbox.of_kind("receipt")) == 1)
        assert len(inbox.of_kind("payment_failed")) == 2

        async def ledger() -> list[tuple[int, str, str | None]]:
            async with db_sessions() as session:
                rows = (await session.exec(select(Payment))).all()
            found = [(r.attempt, r.kind, r.decline_code) for r in rows]
            assert len(found) == 3
            return found

        # Stripe's attempt_count stays 1: the workflow numbers its own retries on.
        assert await eventually(ledger) == [
            (1, "failed", "insufficient_funds"),
            (2, "failed", "insufficient_funds"),
            (1, "succeeded", None),
        ]


async def test_a_hard_decline_asks_for_a_card_and_recovers_when_one_is_added(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
    emulator: httpx.AsyncClient,
    smtp_sink: tuple[Inbox, int],
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    inbox, _ = smtp_sink
    start = order()
    customer = await customer_declining(stripe_sdk, emulator, start, decline_code="lost_card")
    async with lifecycle(env, start, real_activities) as handle:
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        assert view.action_required is not None
        assert view.action_required.reason == ActionReason.NEW_PAYMENT_METHOD
        assert view.action_required.url == POLICY.update_payment_method_url
        await eventually(lambda: len(inbox.of_kind("new_card_needed")) == 1)
        [email] = inbox.of_kind("new_card_needed")
        html = email.get_body(("html",))
        assert html is not None
        assert POLICY.update_payment_method_url in html.get_content()
        paid_before = await pay_calls(emulator)
        await env.sleep(POLICY.retry_delays[0] + HOUR)  # the window runs out: no charge
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 2)
        assert await pay_calls(emulator) == paid_before  # the lost card was not charged again

        await emulator.delete(f"/_emulator/customers/{customer}/declines")  # a new bank card
        await handle.execute_update(
            SubscriptionWorkflow.set_payment_method,
            SetPaymentMethod(payment_method_id="pm_card_visa"),
        )
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert (view.access, view.action_required) == (Access.FULL, None)

        async def row() -> SubscriptionRecord | None:
            async with db_sessions() as session:
                found = await session.exec(select(SubscriptionRecord))
                record = found.first()
            return record if record and record.access == "full" else None

        assert await eventually(row)


async def test_3d_secure_the_customer_authenticates_on_stripes_page(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    smtp_sink: tuple[Inbox, int],
) -> None:
    inbox, _ = smtp_sink
    start = order(payment_method_id="pm_card_authenticationRequired")
    async with lifecycle(env, start, real_activities) as handle:
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        assert view.action_required is not None
        assert view.action_required.reason == ActionReason.AUTHENTICATION_REQUIRED
        hosted = view.action_required.url
        assert "/_emulator/hosted_invoices/in_" in hosted  # Stripe's hosted_invoice_url
        await eventually(lambda: len(inbox.of_kind("authentication_required")) == 1)
        [email] = inbox.of_kind("authentication_required")
        text = email.get_body(("plain",))
        assert text is not None
        assert hosted in text.get_content()

        async with httpx.AsyncClient() as http:  # the customer, on the page
            assert (await http.post(hosted, json={})).json()["status"] == "paid"
        invoice_id = hosted.rsplit("/", 1)[1]
        await signal(handle, env, "invoice.paid", invoice_id)
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert (view.access, view.action_required, view.failed_payment_attempts) == (
            Access.FULL,
            None,
            0,
        )


async def test_3d_secure_never_done_cancels_at_the_end_of_the_window(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
    emulator: httpx.AsyncClient,
    smtp_sink: tuple[Inbox, int],
) -> None:
    inbox, _ = smtp_sink
    start = order(payment_method_id="pm_card_authenticationRequired")
    async with lifecycle(env, start, real_activities) as handle:
        view = await view_when(handle, lambda v: v.action_required is not None)
        paid_before = await pay_calls(emulator)
        await env.sleep(sum(POLICY.retry_delays, timedelta()) + 2 * HOUR)
        result = await handle.result()
        assert (result.status, result.failed_payment_attempts, result.access) == (
            Status.CANCELED,
            3,
            Access.NONE,
        )
        assert await pay_calls(emulator) == paid_before  # never charged off-session again
        sub = await stripe_sdk.v1.subscriptions.retrieve_async(view.stripe_subscription_id or "")
        assert sub.status == "canceled"
        await eventually(lambda: len(inbox.of_kind("final_notice")) == 1)
        assert len(inbox.of_kind("authentication_required")) == 2


async def test_a_refund_lands_in_the_ledger(
    env: WorkflowEnvironment,
    real_activities: list[Callable[..., Any]],
    stripe_sdk: stripe.StripeClient,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with lifecycle(env, order(), real_activities) as handle:
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        charges = await stripe_sdk.v1.charges.list_async(
            {"customer": view.stripe_customer_id or ""}
        )
        [charge] = charges.data
        await stripe_sdk.v1.refunds.create_async({"charge": charge.id, "amount": 900})
        await stripe_sdk.v1.refunds.create_async({"charge": charge.id, "amount": 500})
        await signal(handle, env, "charge.refunded", charge.id)
        sub = await stripe_sdk.v1.subscriptions.retrieve_async(view.stripe_subscription_id or "")

        async def refunds() -> list[tuple[str, int, int]]:
            async with db_sessions() as session:
                rows = (await session.exec(select(Payment).where(Payment.kind == "refunded"))).all()
            found = sorted((r.invoice_id, r.attempt, r.amount_minor) for r in rows)
            assert len(found) == 2
            return found

        assert await eventually(refunds) == [
            (str(sub.latest_invoice), 1, 900),
            (str(sub.latest_invoice), 2, 500),
        ]
