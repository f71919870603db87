"""Database engine and tables (SQLModel). SQLite file by default, PostgreSQL in production."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


def utcnow() -> datetime:
    return datetime.now(UTC)


def _when(**kwargs: object) -> Column:
    return Column(DateTime(timezone=True), **kwargs)  # type: ignore[arg-type]


class Customer(SQLModel, table=True):
    """SalesFlow user <-> Stripe customer."""

    __tablename__ = "customers"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=255, unique=True, index=True)
    stripe_customer_id: str = Field(max_length=255, unique=True, index=True)
    email: str | None = Field(default=None, max_length=320)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_when(nullable=False))


class SubscriptionRecord(SQLModel, table=True):
    """The subscriptions read model, kept current by the customer's workflow."""

    __tablename__ = "subscriptions"

    id: int | None = Field(default=None, primary_key=True)
    stripe_subscription_id: str = Field(max_length=255, unique=True, index=True)
    user_id: str = Field(max_length=255, index=True)
    status: str = Field(max_length=20, index=True)
    plan: str | None = Field(default=None, max_length=20)
    interval: str = Field(max_length=10)
    # The recurring price, in minor units per interval (MRR counts yearly as 1/12).
    amount_minor: int = 0
    currency: str = Field(default="usd", max_length=3)
    current_period_end: datetime | None = Field(default=None, sa_column=_when(nullable=True))
    cancel_at_period_end: bool = False
    dunning_attempt: int = 0
    # What the SalesFlow app should grant (full, grace, restricted, none), set by the policy.
    access: str = Field(
        default="full", max_length=20, index=True, sa_column_kwargs={"server_default": "full"}
    )
    # The decline code of the latest failed payment of the current dunning, if any.
    last_decline_code: str | None = Field(default=None, max_length=60, index=True)
    # Stripe's `cancellation_details.reason` words: payment_failed (dunning gave up) or
    # cancellation_requested; null while live.
    cancellation_reason: str | None = Field(default=None, max_length=40)
    started_at: datetime = Field(sa_column=_when(nullable=False, index=True))
    canceled_at: datetime | None = Field(default=None, sa_column=_when(nullable=True, index=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_when(nullable=False))


class Payment(SQLModel, table=True):
    """The payments ledger: every invoice payment success, failure and refund."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("invoice_id", "attempt", "kind", name="uq_payment_attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(max_length=255, index=True)
    attempt: int
    # succeeded, failed or refunded
    kind: str = Field(max_length=10, index=True)
    amount_minor: int
    currency: str = Field(max_length=3)
    user_id: str = Field(max_length=255, index=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    # A success that ended dunning (the invoice had failed before).
    recovered: bool = False
    # A failed attempt's Stripe error code (card_declined, authentication_required, ...) and the
    # issuer's decline code (insufficient_funds, lost_card, ...).
    failure_code: str | None = Field(default=None, max_length=60)
    decline_code: str | None = Field(default=None, max_length=60, index=True)
    # Where the customer can pay or authenticate the invoice (Stripe's hosted invoice page).
    hosted_invoice_url: str | None = Field(default=None, max_length=2048)
    occurred_at: datetime = Field(sa_column=_when(nullable=False, index=True))


class UsageRecord(SQLModel, table=True):
    """Metered usage as posted to the API; reported to Stripe in batches by a schedule."""

    __tablename__ = "usage_records"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=255, unique=True, index=True)
    user_id: str = Field(max_length=255, index=True)
    stripe_customer_id: str = Field(max_length=255)
    metric: str = Field(max_length=100)
    # The billing meter's event name the metric maps to (settings.stripe_meter_events).
    event_name: str = Field(max_length=100)
    quantity: int
    occurred_at: datetime = Field(sa_column=_when(nullable=False))
    reported_at: datetime | None = Field(default=None, sa_column=_when(nullable=True, index=True))


class NotificationSent(SQLModel, table=True):
    """One row per email sent; the idempotency key keeps a retried activity from mailing twice."""

    __tablename__ = "notifications_sent"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=255, unique=True, index=True)
    kind: str = Field(max_length=40)
    recipient: str = Field(max_length=320)
    sent_at: datetime = Field(default_factory=utcnow, sa_column=_when(nullable=False))


class WebhookEvent(SQLModel, table=True):
    """Every Stripe event received, once (audit and replay); the id makes a redelivery a no-op."""

    __tablename__ = "webhook_events"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=255, unique=True, index=True)
    type: str = Field(max_length=100)
    user_id: str | None = Field(default=None, max_length=255, index=True)
    object_id: str | None = Field(default=None, max_length=255)
    # processed (signalled to the customer's workflow) or ignored (a type we do not handle).
    outcome: str = Field(max_length=20)
    received_at: datetime = Field(default_factory=utcnow, sa_column=_when(nullable=False))


class Reconciliation(SQLModel, table=True):
    """One reconciliation of Stripe with the workflows: its report, once it finished."""

    __tablename__ = "reconciliations"

    id: int | None = Field(default=None, primary_key=True)
    # The reconciliation workflow's first run id: a retried save writes the same row.
    run_id: str = Field(max_length=255, unique=True, index=True)
    started_at: datetime = Field(sa_column=_when(nullable=False))
    finished_at: datetime = Field(sa_column=_when(nullable=False, index=True))
    # `core.payloads.ReconcileReport` as JSON.
    report: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


# Connections kept open per process: as many as requests in flight, so none is opened and
# closed per request (a pool of 5 closed every connection past the fifth when it came back).
POOL_SIZE = 20


def make_engine(url: str) -> AsyncEngine:
    """An async engine; the SQLite file's folder is created if missing."""
    if not url.startswith("sqlite"):
        # No pre-ping (a query per checkout): a connection a server restart broke fails once
        # and is replaced (pool_recycle bounds how old one gets); its request answers 503.
        return create_async_engine(url, pool_size=POOL_SIZE, pool_recycle=1800)
    if ":///" in url:
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    # SQLite has one writer: wait for the lock rather than fail ("database is locked"), and
    # let readers go on beside the writer (write-ahead log). With the log, `synchronous=NORMAL`
    # survives a crash of the process; a power cut may lose the last commits, and nothing here
    # depends on them: Temporal holds every customer's state, a lost webhook row only means a
    # redelivery is handed over again (the workflow dedupes), every write is idempotent.
    # No pre-ping: a file cannot go away under a connection; the ping was a query per request.
    engine = create_async_engine(url, pool_size=POOL_SIZE, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _write_ahead_log(connection: Any, _: object) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def insert_for(session: AsyncSession, table: type[SQLModel]) -> Any:
    """INSERT with ON CONFLICT for the session's dialect (SQLite and PostgreSQL alike)."""
    bind = session.bind
    assert bind is not None, "sessions are made bound to the engine"
    return dialect_insert(bind.dialect.name)(table)


def dialect_insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
