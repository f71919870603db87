"""Builders for the HTTP tests: Stripe's signature and events, the app's settings, `Api`."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel, select
from temporalio.testing import WorkflowEnvironment

from api.auth import mint
from core.db import WebhookEvent, make_engine, sessions
from core.settings import Settings
from tests.helpers import eventually
from tests.workflows.fakes import FakeMailbox, FakeStripe

SECRET = "whsec_test_primary"
ROLLED = "whsec_test_rolled"


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme, written here independently of the code under test."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(type_: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": type_,
            "created": int(time.time()),
            "api_version": "2026-10-28.endive",
            "data": {"object": obj},
        }
    ).encode()


def invoice(user_id: str, invoice_id: str) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": f"cus_{user_id}",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {
                "subscription": f"sub_{user_id}",
                "metadata": {"user_id": user_id},
            },
        },
    }


def subscription(user_id: str) -> dict[str, Any]:
    return {
        "id": f"sub_{user_id}",
        "object": "subscription",
        "customer": f"cus_{user_id}",
        "metadata": {"user_id": user_id},
    }


def app_settings(database_url: str, queue: str) -> Settings:
    # _env_file is BaseSettings.__init__'s own argument; pydantic's dataclass_transform hides it.
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        temporal_task_queue=queue,
        database_url=database_url,
        stripe_webhook_secrets=[SecretStr(SECRET), SecretStr(ROLLED)],
        dunning_retry_delays=[timedelta(days=2), timedelta(days=3)],
        api_wait_seconds=10,
        temporal_rpc_timeout_seconds=2,
    )


@dataclass
class Api:
    """The app over HTTP, with the fakes its worker runs on and the Temporal server."""

    http: httpx.AsyncClient
    stripe: FakeStripe
    mail: FakeMailbox
    settings: Settings
    env: WorkflowEnvironment
    app: FastAPI

    def stripe_now(self) -> datetime:
        return datetime.now(UTC) + timedelta(days=30)

    def auth(self, user_id: str, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(user_id, self.settings, admin=admin)}"}

    async def webhook(
        self, payload: bytes, secret: str = SECRET, timestamp: int | None = None
    ) -> httpx.Response:
        return await self.http.post(
            "/stripe/webhooks",
            content=payload,
            headers={
                "Stripe-Signature": sign(payload, secret, timestamp),
                "Content-Type": "application/json",
            },
        )

    async def subscribe(self, user_id: str, **body: Any) -> httpx.Response:
        payload = {
            "plan": "starter",
            "email": f"{user_id}@example.com",
            "trial_days": 0,
            "payment_method_id": "pm_card_visa",
            **body,
        }
        return await self.http.post(
            "/stripe/subscriptions", json=payload, headers=self.auth(user_id)
        )


async def view(api: Api, user_id: str) -> dict[str, Any]:
    response = await api.http.get(f"/stripe/subscriptions/{user_id}", headers=api.auth(user_id))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def view_when(api: Api, user_id: str, **expected: Any) -> dict[str, Any]:
    """The user's view once it shows the `expected` fields (signals are handled asynchronously)."""

    async def matching() -> dict[str, Any]:
        current = await view(api, user_id)
        assert all(current[k] == v for k, v in expected.items()), (expected, current)
        return current

    return await eventually(matching)


async def recorded(database_url: str) -> list[WebhookEvent]:
    engine = make_engine(database_url)
    async with sessions(engine)() as session:
        rows = list((await session.exec(select(WebhookEvent))).all())
    await engine.dispose()
    return rows


async def insert(database_url: str, *rows: SQLModel) -> None:
    """Write rows straight into the database, as the workflow's store activity would; each row
    has its key afterwards, in the order given."""
    engine = make_engine(database_url)
    try:
        async with sessions(engine)() as session:
            session.add_all(rows)
            await session.commit()
    finally:
        await engine.dispose()


@asynccontextmanager
async def database_down(api: Api, folder: Path) -> AsyncIterator[None]:
    """The app's database sessions fail to connect, as when the database is down."""
    # A folder is no SQLite file: every connection fails (OperationalError).
    broken = create_async_engine(f"sqlite+aiosqlite:///{folder}")
    working, api.app.state.sessions = api.app.state.sessions, sessions(broken)
    try:
        yield
    finally:
        api.app.state.sessions = working
        await broken.dispose()
