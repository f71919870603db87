"""Database engine and tables (SQLModel). SQLite file by default, PostgreSQL in production."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Column, DateTime
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


def utcnow() -> datetime:
    return datetime.now(UTC)


def _when(**kwargs: object) -> Column:
    return Column(DateTime(timezone=True), **kwargs)  # type: ignore[arg-type]


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


def make_engine(url: str) -> AsyncEngine:
    """An async engine; the SQLite file's folder is created if missing."""
    if url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return create_async_engine(url, pool_pre_ping=True)


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def create_tables(engine: AsyncEngine) -> None:
    """Create missing tables (development and tests)."""
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
