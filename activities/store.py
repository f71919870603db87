"""The database: the ledger, the subscriptions read model, customers and usage. Every write is
idempotent, so a retried activity never adds a second row."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from temporalio import activity

from core.db import AsyncSession, Customer, Payment, SubscriptionRecord, UsageRecord, insert_for
from core.metrics import (
    NO_DECLINE_CODE,
    PAYMENT_ATTEMPTS_FAILED,
    PAYMENTS_RECOVERED,
    Counter,
    activity_meter,
)
from core.payloads import LedgerEntry, PaymentKind, Record, UsageItem


class StoreActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @activity.defn(name="store.record")
    async def record(self, record: Record) -> None:
        """Write what the workflow queued: a customer, a read-model snapshot or a payment."""
        async with self._sessions() as session:
            if record.customer:
                values = record.customer.model_dump()
                stmt = insert_for(session, Customer).values(**values, created_at=datetime.now(UTC))
                await session.exec(
                    stmt.on_conflict_do_update(index_elements=["user_id"], set_=values)
                )
            if record.subscription:
                values = {**record.subscription.model_dump(), "updated_at": datetime.now(UTC)}
                stmt = insert_for(session, SubscriptionRecord).values(**values)
                await session.exec(
                    stmt.on_conflict_do_update(
                        index_elements=["stripe_subscription_id"], set_=values
                    )
                )
            counted = None
            if record.payment:
                stmt = insert_for(session, Payment).values(**record.payment.model_dump())
                # The same invoice attempt and outcome is one row, however often it is written.
                inserted = (await session.exec(stmt.on_conflict_do_nothing())).rowcount
                counted = await _payment_counter(session, record.payment) if inserted else None
            await session.commit()
        if counted:
            counter, decline_code = counted
            counter.add(activity_meter(), decline_code=decline_code)

    @activity.defn(name="store.unreported_usage")
    async def unreported_usage(self, limit: int) -> list[UsageItem]:
        """The oldest usage not yet sent to Stripe."""
        async with self._sessions() as session:
            rows = await session.exec(
                select(UsageRecord)
                .where(col(UsageRecord.reported_at).is_(None))
                .order_by(col(UsageRecord.id))
                .limit(limit)
            )
            return [
                UsageItem(
                    id=row.id or 0,
                    identifier="usage-"
                    + hashlib.sha256(row.idempotency_key.encode()).hexdigest()[:40],
                    event_name=row.event_name,
                    stripe_customer_id=row.stripe_customer_id,
                    quantity=row.quantity,
                    occurred_at=row.occurred_at,
                )
                for row in rows
            ]

    @activity.defn(name="store.mark_usage_reported")
    async def mark_usage_reported(self, ids: list[int]) -> None:
        async with self._sessions() as session:
            await session.exec(
                update(UsageRecord)
                .where(col(UsageRecord.id).in_(ids), col(UsageRecord.reported_at).is_(None))
                .values(reported_at=datetime.now(UTC))
            )
            await session.commit()


async def _payment_counter(session: AsyncSession, entry: LedgerEntry) -> tuple[Counter, str] | None:
    """What a new ledger row counts: a failed attempt by its decline code, or a recovery by the
    decline code of the invoice's last failure."""
    if entry.kind == PaymentKind.FAILED:
        return PAYMENT_ATTEMPTS_FAILED, entry.decline_code or NO_DECLINE_CODE
    if entry.kind != PaymentKind.SUCCEEDED or not entry.recovered:
        return None
    last = await session.exec(
        select(Payment.decline_code)
        .where(Payment.invoice_id == entry.invoice_id, Payment.kind == PaymentKind.FAILED)
        .order_by(col(Payment.attempt).desc())
        .limit(1)
    )
    return PAYMENTS_RECOVERED, last.first() or NO_DECLINE_CODE
