"""The subscription workflow's outbox: what it asks of the outside world without waiting.

Emails and database rows (the ledger, the read model, the customer mapping) are queued in the
workflow's state, so they survive continue-as-new, and sent in order, one at a time, in the
background: a mail or database outage delays them, never a payment step or an API call. What to
queue, and when, is decided in `workflows/subscription.py`; this module builds the items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.idempotency import idempotency_key
    from core.payloads import (
        Access,
        ChargeRefunds,
        CustomerEntry,
        Email,
        EmailKind,
        InvoiceState,
        LedgerEntry,
        PaymentError,
        PaymentKind,
        Record,
        Refund,
        SubscriptionSnapshot,
    )
    from core.state import BillingState
    from workflows import calls

T = TypeVar("T")


class Outbox:
    """The queues of one run, kept in its state (`outbox`: emails, `records`: rows)."""

    def __init__(self, state: BillingState) -> None:
        self.state = state
        # The read model's row as last queued: a row is queued only when it changes.
        self.shown: SubscriptionSnapshot | None = None

    def start(self) -> list[asyncio.Task[None]]:
        """The two senders, emails and rows, each in order; cancel them when the run ends."""
        return [
            asyncio.create_task(_drain(self.state.outbox, calls.send_email)),
            asyncio.create_task(_drain(self.state.records, calls.write_record)),
        ]

    def empty(self) -> bool:
        return not self.state.outbox and not self.state.records

    def email(
        self,
        kind: EmailKind,
        discriminator: str,
        context: dict[str, str],
        summary: str | None = None,
    ) -> None:
        """Queue an email; its key (workflow, kind, discriminator) makes a resend a no-op."""
        s = self.state
        info = workflow.info()
        s.outbox.append(
            Email(
                kind=kind,
                to=s.email,
                idempotency_key=idempotency_key(
                    info.workflow_id, info.first_execution_run_id, kind.value, discriminator
                ),
                context={
                    "name": s.name or s.email,
                    "plan": s.plan.value if s.plan else "",
                    "interval": s.interval.value,
                    "summary": summary or f"email: {kind.value}",
                    **context,
                },
            )
        )

    def customer(self) -> None:
        """Queue the user <-> Stripe customer mapping."""
        s = self.state
        if s.customer_id:
            entry = CustomerEntry(
                user_id=s.user_id, stripe_customer_id=s.customer_id, email=s.email or None
            )
            s.records.append(Record(customer=entry))

    def payment(
        self,
        inv: InvoiceState,
        kind: PaymentKind,
        amount: int,
        recovered: bool = False,
        at: datetime | None = None,
        error: PaymentError | None = None,
        attempt: int | None = None,
    ) -> None:
        """Queue a ledger row: one payment attempt of an invoice (succeeded or failed), by
        default the invoice's `attempt_count`."""
        s = self.state
        entry = LedgerEntry(
            invoice_id=inv.id,
            attempt=attempt or inv.attempt_count,
            kind=kind,
            amount_minor=amount,
            currency=inv.currency,
            user_id=s.user_id,
            stripe_customer_id=s.customer_id,
            recovered=recovered,
            failure_code=error.code if error else None,
            decline_code=error.decline_code if error else None,
            hosted_invoice_url=inv.hosted_invoice_url,
            occurred_at=at or workflow.now(),
        )
        s.records.append(Record(payment=entry))

    def refund(self, charge: ChargeRefunds, number: int, refund: Refund) -> None:
        """Queue a ledger row for the charge's refund `number` (its invoice's, if known)."""
        s = self.state
        entry = LedgerEntry(
            invoice_id=charge.invoice_id or charge.charge_id,
            attempt=number,
            kind=PaymentKind.REFUNDED,
            amount_minor=refund.amount,
            currency=charge.currency,
            user_id=s.user_id,
            stripe_customer_id=s.customer_id,
            occurred_at=refund.created,
        )
        s.records.append(Record(payment=entry))

    def subscription(self, access: Access) -> None:
        """Queue the read model's row, if what it shows has changed since the last one."""
        s = self.state
        if not s.subscription_id:
            return
        row = SubscriptionSnapshot(
            stripe_subscription_id=s.subscription_id,
            user_id=s.user_id,
            status=s.status.value,
            plan=s.plan.value if s.plan else None,
            interval=s.interval.value,
            amount_minor=s.amount_minor,
            currency=s.currency,
            current_period_end=s.current_period_end,
            cancel_at_period_end=s.cancel_at_period_end,
            dunning_attempt=s.failed_payment_attempts,
            started_at=s.started_at or workflow.now(),
            canceled_at=s.canceled_at,
            access=access,
            last_decline_code=s.last_payment_error.reason if s.last_payment_error else None,
            cancellation_reason=s.cancellation_reason,
        )
        if row != self.shown:
            self.shown = row
            s.records.append(Record(subscription=row))


async def _drain(queue: list[T], send: Callable[[T], Awaitable[None]]) -> None:
    """Send a queue's items one by one, in order. Each is retried without limit; only a
    non-retryable failure drops one, logged."""
    while True:
        await workflow.wait_condition(lambda: bool(queue))
        await calls.contained(send(queue[0]), "background write")
        queue.pop(0)


def money(minor: int, currency: str) -> str:
    units, cents = divmod(minor, 100)
    return f"{units}.{cents:02d} {currency.upper()}"


def day(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"
