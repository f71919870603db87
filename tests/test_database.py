"""The schema: migrations and models agree; writes are idempotent. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel, func, select
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from core.db import (
    AsyncSession,
    Customer,
    Payment,
    SubscriptionRecord,
    UsageRecord,
    make_engine,
)
from core.migrate import upgrade_async
from core.payloads import CustomerEntry, LedgerEntry, PaymentKind, Record, SubscriptionSnapshot


async def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
        )
    await engine.dispose()
    assert diff == []
    await upgrade_async(database_url)  # applying again changes nothing


async def test_store_writes_are_idempotent(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    store = StoreActivities(db_sessions)
    run = ActivityEnvironment().run
    now = datetime.now(UTC)
    payment = LedgerEntry(
        invoice_id="in_1",
        attempt=1,
        kind=PaymentKind.FAILED,
        amount_minor=2900,
        currency="usd",
        user_id="u1",
        occurred_at=now,
    )
    snapshot = SubscriptionSnapshot(
        stripe_subscription_id="sub_1",
        user_id="u1",
        status="past_due",
        plan="starter",
        interval="monthly",
        amount_minor=2900,
        currency="usd",
        current_period_end=now,
        cancel_at_period_end=False,
        dunning_attempt=1,
        started_at=now,
    )
    for _ in range(2):  # a retried activity writes everything again
        await run(
            store.record,
            Record(
                customer=CustomerEntry(user_id="u1", stripe_customer_id="cus_1", email="a@b.co")
            ),
        )
        await run(store.record, Record(payment=payment))
        await run(store.record, Record(subscription=snapshot))
    await run(
        store.record,
        Record(subscription=snapshot.model_copy(update={"status": "active", "dunning_attempt": 0})),
    )
    await run(
        store.record,
        Record(customer=CustomerEntry(user_id="u1", stripe_customer_id="cus_1", email="new@b.co")),
    )
    async with db_sessions() as session:
        assert (await session.exec(select(func.count()).select_from(Payment))).one() == 1
        [row] = (await session.exec(select(SubscriptionRecord))).all()
        assert (row.status, row.dunning_attempt) == ("active", 0)
        [customer] = (await session.exec(select(Customer))).all()
        assert (customer.stripe_customer_id, customer.email) == ("cus_1", "new@b.co")


async def test_unreported_usage_is_read_oldest_first_and_marked_once(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = StoreActivities(db_sessions)
    run = ActivityEnvironment().run
    now = datetime.now(UTC)
    async with db_sessions() as session:
        for n in range(3):
            session.add(
                UsageRecord(
                    idempotency_key=f"usage-key-{n}",
                    user_id="u-usage",
                    stripe_customer_id="cus_usage",
                    metric="api_calls",
                    event_name="api_calls",
                    quantity=n + 1,
                    occurred_at=now,
                )
            )
        await session.commit()
    first = await run(store.unreported_usage, 2)
    assert [item.quantity for item in first] == [1, 2]
    # Stable identifiers derived from the idempotency key: a retried batch counts once.
    again = await run(store.unreported_usage, 2)
    assert [i.identifier for i in again] == [i.identifier for i in first]
    assert all(i.identifier.startswith("usage-") for i in first)
    await run(store.mark_usage_reported, [i.id for i in first])
    await run(store.mark_usage_reported, [i.id for i in first])  # a retry changes nothing
    rest = await run(store.unreported_usage, 10)
    assert [item.quantity for item in rest] == [3]
